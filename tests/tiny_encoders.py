"""Tiny random encoders for evaluation tests: a BERT with a character WordPiece vocabulary, and a BART.

Built in code in well under a second (no files, no downloads). The weights are random, so outputs
mean nothing, but they are real outputs of the real architectures, loaded by the real code paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_vocab(texts: Iterable[str]) -> list[str]:
    """WordPiece vocabulary of single characters (BertTokenizer splits CJK characters apart anyway)."""
    chars = sorted({ch for t in texts for ch in t.lower() if not ch.isspace()})
    return BERT_SPECIAL + chars + [f"##{c}" for c in chars if c.isascii() and c.isalnum()]


def build_tiny_bert(folder: str | Path, texts: Iterable[str], seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT + a character WordPiece tokenizer over ``texts``' characters."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = char_vocab(texts)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True,
                                  tokenize_chinese_chars=True, model_max_length=128)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bart(folder: str | Path, seed: int = 0) -> Path:
    """A 1-layer random BART with the tiny byte-level BPE tokenizer of tiny_models."""
    import torch
    from tiny_models import build_tiny_hf_tokenizer
    from transformers import BartConfig, BartForConditionalGeneration

    folder = Path(folder)
    tokenizer = build_tiny_hf_tokenizer()
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    pad = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=256, pad_token_id=pad, eos_token_id=eos, bos_token_id=eos,
                        decoder_start_token_id=eos, forced_eos_token_id=None)
    torch.manual_seed(seed)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
