"""A tiny llama.cpp GGUF whose greedy answer to any chat prompt is a fixed text: a lookup table in its weights.

The random tiny models never say "高自杀风险", so the crisis path (high_risk, the resources message, the page's
banner) needs a model that does. This one is a real GGUF run by real llama.cpp: attention and MLP outputs are
zero, so the hidden state is the current token's embedding; each token of the scripted answer has its own
embedding dimension, and the output matrix maps that dimension to the next token of the answer (every other
token maps to end-of-turn). Whatever the post, the model continues the prompt's last token with the answer.

    path = build_scripted_gguf(tmp_path / "scripted.gguf", HIGH_RISK_ANSWER)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiny_models import EOS_TOKEN, add_gguf_tokenizer, train_tokenizer

# Every token of this text is distinct in the tiny tokenizer, so a token -> next-token table can spell it.
HIGH_RISK_ANSWER = "这篇帖子体现了高自杀风险。理由：我不想活了，没有希望"


def _write(path: Path, tok, n_embd: int, embedding: np.ndarray, output: np.ndarray, n_ctx: int) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("mentalglm-scripted-test")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(n_embd // 2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    add_gguf_tokenizer(w, tok)
    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", embedding)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v"):
        w.add_tensor(f"blk.0.{name}.weight", np.eye(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.attn_output.weight", zeros(n_embd, n_embd))  # attention adds nothing
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", zeros(32, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", zeros(32, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", zeros(n_embd, 32))  # nor does the MLP
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", output)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_scripted_gguf(path: str | Path, answer: str = HIGH_RISK_ANSWER, n_embd: int = 64,
                        n_ctx: int = 4096) -> Path:
    from llama_cpp import Llama

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(1000)
    n_vocab = tok.get_vocab_size(with_added_tokens=True)
    eos = tok.token_to_id(EOS_TOKEN)
    # First pass: a model with the right tokenizer, to tokenize exactly as llama.cpp will.
    _write(path, tok, n_embd, np.zeros((n_vocab, n_embd), np.float32), np.zeros((n_vocab, n_embd), np.float32), n_ctx)
    vocab_only = Llama(model_path=str(path), vocab_only=True, verbose=False)
    answer_ids = vocab_only.tokenize(answer.encode(), add_bos=False, special=False)
    newline = vocab_only.tokenize(b"<|im_start|>assistant\n", add_bos=False, special=True)[-1]
    vocab_only.close()
    chain = [newline, *answer_ids, eos]  # instruction-style prompts end with the assistant header's newline
    distinct = list(dict.fromkeys(chain[:-1]))
    if len(distinct) != len(chain) - 1 or len(distinct) >= n_embd:
        raise ValueError(f"answer {answer!r} repeats a token or is too long for a lookup table of {n_embd} dims")
    dim = {token: i + 1 for i, token in enumerate(distinct)}  # dim 0: every other token
    embedding = np.zeros((n_vocab, n_embd), np.float32)
    embedding[:, 0] = 1.0
    output = np.zeros((n_vocab, n_embd), np.float32)
    output[eos, 0] = 4.0  # any other token: end the turn
    for token, following in zip(chain[:-1], chain[1:]):
        embedding[token] = 0.0
        embedding[token, dim[token]] = 1.0
        output[following, dim[token]] = 4.0
    _write(path, tok, n_embd, embedding, output, n_ctx)
    return path
