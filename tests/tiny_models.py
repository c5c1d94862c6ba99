"""Tiny random models for tests: a transformers Qwen2 folder and a llama.cpp GGUF, built in well under 2 s.

Both share one byte-level BPE tokenizer trained here, in code, on a few hundred generated lines of Chinese and
English (no files, no downloads, no cache). The weights are random: outputs are gibberish, but real model output
of a real architecture, deterministic under greedy decoding.

    from tiny_models import build_tiny_hf_model, build_tiny_gguf
    folder = build_tiny_hf_model(tmp_path / "tiny-qwen2")   # AutoModelForCausalLM / AutoTokenizer loadable
    gguf = build_tiny_gguf(tmp_path / "tiny.gguf")           # llama_cpp.Llama(model_path=str(gguf)) loadable
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# Qwen-style ChatML; the same text is stored in the HF tokenizer and in the GGUF metadata.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_ZH_WHO = ["我", "他", "她", "我们", "朋友", "同学", "家人", "老师", "同事", "妈妈"]
_ZH_FEEL = ["最近很难过", "感到焦虑", "心情很好", "睡不着觉", "压力很大", "觉得很孤独", "非常开心", "有点失落",
            "不想活了", "很生气", "害怕明天", "没有希望"]
_ZH_WHY = ["因为工作太忙", "因为考试失败了", "因为天气很好", "因为和家人吵架", "因为失恋了", "因为找不到工作",
           "因为生病了", "因为得到了表扬"]
_ZH_TAIL = ["。", "！", "？", "……", "，怎么办？", "，谢谢大家。", "（真的）", "：就这样吧。"]
_ZH_LABELS = ["抑郁", "焦虑", "自杀风险", "高风险", "低风险", "愤怒", "悲伤", "快乐", "恐惧", "惊讶", "中性",
              "认知扭曲", "是", "否", "解释", "推理", "这篇帖子体现了"]
_EN_WHO = ["I", "He", "She", "We", "My friend", "The student", "My family"]
_EN_FEEL = ["feel sad", "feel anxious", "am happy today", "cannot sleep", "am under pressure", "feel lonely",
            "am angry", "have no hope"]
_EN_WHY = ["because of work", "after the exam", "since the breakup", "because of the weather", "at home"]


def corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """A few hundred deterministic lines of mixed Chinese/English text with full-width punctuation."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 3 == 2:
            lines.append(f"{rng.choice(_EN_WHO)} {rng.choice(_EN_FEEL)} {rng.choice(_EN_WHY)}. "
                         f"Label: {rng.choice(['depression', 'anxiety', 'suicide risk', 'none'])}")
        else:
            lines.append(rng.choice(_ZH_WHO) + rng.choice(_ZH_FEEL) + rng.choice(_ZH_WHY) + rng.choice(_ZH_TAIL)
                         + f"“{rng.choice(_ZH_LABELS)}”")
    return lines + [" ".join(_ZH_LABELS), "0123456789 ,.;:!?()[]{}<>\"'-_/\\ \n\t"]


def train_tokenizer(vocab_size: int = 1000):
    """A byte-level BPE ``tokenizers.Tokenizer`` with the ChatML special tokens at ids 0..2.

    No normalizer on purpose: NFKC would turn full-width punctuation (，。！？) into ASCII.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def build_tiny_hf_tokenizer(vocab_size: int = 1000):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(vocab_size), bos_token=None, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=[BOS_TOKEN], chat_template=CHAT_TEMPLATE, model_max_length=2048,
        clean_up_tokenization_spaces=False)


def build_tiny_hf_model(folder: str | Path, *, vocab_size: int = 1000, seed: int = 0,
                        initializer_range: float = 0.2) -> Path:
    """Write a random-init tiny Qwen2 causal LM (about 0.6 M parameters) and its tokenizer into ``folder``.

    ``initializer_range`` is larger than Qwen's 0.02 so that logits have clear margins: greedy decoding then
    picks the same token whether a prompt is run alone or left-padded in a batch.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_hf_tokenizer(vocab_size)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048,
                         initializer_range=initializer_range, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_glm4_model(folder: str | Path, *, vocab_size: int = 1000, seed: int = 0) -> Path:
    """A random-init tiny model of the GLM-4 architecture (transformers' native ``Glm4ForCausalLM``: the layout of
    the ``THUDM/glm-4-9b(-chat)-hf`` checkpoints, with biased q/k/v, a fused gate_up_proj, partial rotary
    embeddings and the extra post-attention/post-MLP norms) and the shared tiny tokenizer."""
    import torch
    from transformers import Glm4Config, Glm4ForCausalLM, GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_hf_tokenizer(vocab_size)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Glm4Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                        initializer_range=0.2, attention_bias=True, tie_word_embeddings=False,
                        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id)
    torch.manual_seed(seed)
    model = Glm4ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def add_gguf_tokenizer(w, tok) -> None:
    """Embed a ``tokenizers.Tokenizer`` (byte-level BPE, ChatML specials) and the chat template in a GGUFWriter."""
    import json

    import gguf

    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for text, idx in vocab.items():
        tokens[idx] = text
    assert all(tokens), "token ids must be contiguous"
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as in the ByteLevel pre-tokenizer trained above
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab[BOS_TOKEN])
    w.add_eos_token_id(vocab[EOS_TOKEN])
    w.add_pad_token_id(vocab[PAD_TOKEN])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def build_tiny_gguf(path: str | Path, *, vocab_size: int = 400, seed: int = 0, n_embd: int = 64, n_layers: int = 2,
                    n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 4096) -> Path:
    """Write a random-weight llama-architecture GGUF (F32, about 0.5 MB) with an embedded GPT-2-style BPE
    tokenizer and a ChatML chat template, loadable by ``llama_cpp.Llama``."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    n_vocab = tok.get_vocab_size(with_added_tokens=True)

    w = gguf.GGUFWriter(str(path), "llama")  # writes general.architecture itself
    w.add_name("mentalglm-tiny-test")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    add_gguf_tokenizer(w, tok)

    # numpy shapes are (out_features, in_features), as torch stores them; GGUF reverses them into ggml order.
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    for b in range(n_layers):
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{b}.attn_q.weight", rand(n_embd, n_embd))
        w.add_tensor(f"blk.{b}.attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{b}.attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{b}.attn_output.weight", rand(n_embd, n_embd))
        w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{b}.ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(f"blk.{b}.ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(f"blk.{b}.ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", rand(n_vocab, n_embd, scale=1.0))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_tiny_lora_gguf(path: str | Path, *, n_embd: int = 64, n_layers: int = 2, rank: int = 4, seed: int = 1,
                         scale: float = 1.0) -> Path:
    """A random LoRA adapter for ``build_tiny_gguf``'s model in llama.cpp's adapter GGUF layout (what
    convert_lora_to_gguf.py writes: ``<tensor>.lora_a`` (rank, in) and ``<tensor>.lora_b`` (out, rank) in numpy
    order), on the attention query and output projections: it changes what the model writes."""
    import gguf

    path = Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(seed)
    for b in range(n_layers):
        for name in ("attn_q", "attn_output"):
            w.add_tensor(f"blk.{b}.{name}.weight.lora_a", (rng.standard_normal((rank, n_embd)) * scale).astype(np.float32))
            w.add_tensor(f"blk.{b}.{name}.weight.lora_b", (rng.standard_normal((n_embd, rank)) * scale).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
