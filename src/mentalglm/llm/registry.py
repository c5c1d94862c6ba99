"""How to open any model: a backend registry keyed by the scheme of the model's name.

``open_backend`` picks the opener from the name: ``vllm:<name>`` (vLLM on GPUs), ``openai:<name>`` or any name with
a ``base_url`` (an OpenAI-compatible server), a llama.cpp catalog name or a ``.gguf`` path (llama.cpp; packaged
GGUFs are assembled into the cache on first use), anything else a transformers catalog name, folder or HF id.
Each opener owns the resolution of its names; the catalog of known models is ``catalog.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import Backend, ModelUnavailable
from .catalog import DEFAULT_MODEL, REGISTRY, assemble_packaged
from .manifest import read_manifest

# scheme -> opener(model, adapter=, base_url=, weights=, **backend options) -> Backend
Opener = Callable[..., Backend]
SCHEMES: dict[str, Opener] = {}


def scheme(name: str) -> Callable[[Opener], Opener]:
    def register(opener: Opener) -> Opener:
        SCHEMES[name] = opener
        return opener
    return register


def scheme_of(model: str, base_url: str | None = None) -> str:
    """The scheme that opens ``model``: vllm, openai, gguf (llama.cpp) or hf (transformers)."""
    if model.startswith("vllm:"):
        return "vllm"
    if base_url or model.startswith("openai:"):
        return "openai"
    entry = REGISTRY.get(model)
    if (entry and entry.backend == "llamacpp") or model.endswith(".gguf"):
        return "gguf"
    return "hf"


@scheme("vllm")
def _open_vllm(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .vllm_backend import VLLMBackend, settings_for  # GPU offline batches; options are VLLMSettings fields

    return VLLMBackend(settings_for(model, weights, adapter=adapter, **options))


@scheme("openai")
def _open_openai(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .openai_client import OpenAIBackend

    return OpenAIBackend(model.removeprefix("openai:"), base_url=base_url, **options)


@scheme("gguf")
def _open_gguf(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .llamacpp import LlamaCppBackend

    entry = REGISTRY.get(model)
    path = assemble_packaged(REGISTRY[entry.base] if entry.base else entry) if entry else Path(model)
    if not path.exists():
        raise ModelUnavailable(f"GGUF file {model} not found")
    return LlamaCppBackend(path, name=entry.name if entry else path.name, lora_path=adapter, **options)


@scheme("hf")
def _open_hf(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .hf import HFBackend

    entry = REGISTRY.get(model)
    if entry:  # a local copy (weights) keeps the catalog's settings: trust_remote_code, dtype, generation
        return HFBackend(weights or entry.hf_id, adapter=adapter, entry=entry, **options)
    return HFBackend(model, adapter=adapter, **options)


def trained_prompt_style(adapter: str | None) -> str | None:
    """The prompt style an adapter made by ``mentalglm train`` learned (from its manifest), else None.

    A trained adapter must be asked the way it was trained; another prompt makes it answer off-format."""
    manifest = read_manifest(adapter) if adapter else None
    return manifest.prompt_style if manifest else None


def resolve_style(model: str, adapter: str | None = None, prompt_style: str | None = None) -> str:
    """The prompt style ``open_backend`` will use, known without loading the model: the one asked for, else
    instruction for a trained adapter, else the registry's, else zeroshot."""
    if prompt_style or (prompt_style := trained_prompt_style(adapter)):
        return prompt_style
    entry = REGISTRY.get(model.removeprefix("vllm:"))
    return entry.prompt_style if entry else "zeroshot"


def open_backend(model: str = DEFAULT_MODEL, *, adapter: str | None = None, base_url: str | None = None,
                 prompt_style: str | None = None, weights: str | None = None, **options) -> tuple[Backend, str]:
    """Open a model by registry name, GGUF path, HF folder or id, ``openai:<name>``, or ``vllm:<name>`` (GPU).

    ``weights`` is a local copy of a registry model (a downloaded folder for ``mentalglm``):
    the registry's settings (trust_remote_code, dtype, generation, prompt style) still apply.
    ``options`` go to the backend (n_ctx and n_threads for llama.cpp; dtype, batch_size for
    transformers; api_key_env, concurrency, timeout for HTTP). Returns (backend, prompt style).
    """
    style = resolve_style(model, adapter, prompt_style)
    opener = SCHEMES[scheme_of(model, base_url)]
    return opener(model, adapter=adapter, base_url=base_url, weights=weights, **options), style
