"""A GGUF model cut after its first ``k`` transformer blocks, for reading middle-layer hidden states.

llama.cpp returns only the last layer's state; linear probes on language models usually read best from a middle
layer (measured for the heads in docs/model-card.md). A copy of the model that keeps the first ``k`` blocks (and
the final norm) returns exactly block ``k``'s output, normalised, and costs ``k / n`` of the full prompt pass.
The copy is derived from the packaged file, never shipped: it is written once into the cache.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def block_count(path: str | os.PathLike) -> int:
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    return int(reader.get_field(f"{arch}.block_count").contents())


def truncate_gguf(src: str | os.PathLike, dst: str | os.PathLike, layers: int) -> Path:
    """Write ``dst``: ``src`` with only blocks ``0 .. layers-1`` (atomically; an existing ``dst`` is kept)."""
    import gguf

    dst = Path(dst)
    if dst.exists():
        return dst
    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    count_key = f"{arch}.block_count"
    total = int(reader.get_field(count_key).contents())
    if not 1 <= layers <= total:
        raise ValueError(f"{src} has {total} blocks; cannot keep {layers}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    log.warning("writing %s: %s cut after block %d of %d (once; the label heads read its states)", dst, Path(src).name,
                layers, total)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer narrates every file at INFO
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    kept = [t for t in reader.tensors if not (m := _BLOCK.match(t.name)) or int(m.group(1)) < layers]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    os.replace(tmp, dst)
    return dst


def shallow_copy(base: str | os.PathLike, layers: int | None, sha256: str | None = None) -> Path:
    """The copy of ``base`` (a GGUF file) that keeps its first ``layers`` blocks, made once in the cache; ``base``
    itself where ``layers`` is None or all of them. Named by ``base``'s sha256 (``sha256``: already known, e.g.
    checked against a heads manifest; else read or hashed), so two bases never share a copy; once the copy exists
    nothing of ``base`` is read."""
    from .catalog import cache_dir, model_sha256

    base = Path(base)
    if layers is None:
        return base
    dst = cache_dir() / "models" / f"{(sha256 or model_sha256(base))[:16]}-L{layers}.gguf"
    if dst.exists():
        return dst
    return base if layers == block_count(base) else truncate_gguf(base, dst, layers)
