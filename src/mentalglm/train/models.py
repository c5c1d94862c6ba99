"""Base models for training: an HF folder or id as given, or a packaged GGUF converted once to an HF checkpoint.

transformers reads a GGUF with ``gguf_file=`` and dequantizes it (about 40 s for the 0.5B model, 80 s for
the 1.5B), so the CPU recipes convert once into ``<cache>/hf/<name>/`` and load that folder afterwards.
LoRA trained on the dequantized weights applies to the quantized GGUF in llama.cpp, whose weights are the
same numbers before dequantization.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..llm.base import ModelUnavailable
from ..llm.catalog import REGISTRY, assemble_packaged, cache_dir

log = logging.getLogger(__name__)


def hf_checkpoint(name: str) -> Path:
    """The cached HF folder of registry model ``name`` (a packaged GGUF), converting it on first use."""
    entry = REGISTRY.get(name)
    if entry is None or entry.packaged is None:
        raise ModelUnavailable(f"{name!r} is not a packaged GGUF of the registry; packaged models: "
                               f"{', '.join(n for n, e in REGISTRY.items() if e.packaged)}")
    target = cache_dir() / "hf" / name
    if (target / "config.json").is_file() and (target / ".complete").is_file():
        return target
    gguf = assemble_packaged(entry)
    return convert_gguf(gguf, target)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize ``gguf`` into an HF folder (float32 weights, tokenizer with the GGUF's chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF checkpoint in %s (once; about a minute per billion parameters)", gguf, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _gguf_chat_template(gguf)
    # The weights are dequantized already; the GGUF quantizer marker only blocks saving and training.
    model.hf_quantizer = None
    model.is_quantized = False
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # an interrupted conversion leaves only the .tmp folder, redone next time
    return target


def _gguf_chat_template(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    return bytes(field.parts[field.data[0]]).decode("utf-8") if field else None


def resolve_base(model: str) -> str:
    """An HF folder or id for ``model``: packaged registry GGUFs become their cached HF checkpoint."""
    entry = REGISTRY.get(model)
    if entry is not None and entry.packaged is not None:
        return str(hf_checkpoint(model))
    if entry is not None and entry.hf_id:
        return entry.hf_id
    return model
