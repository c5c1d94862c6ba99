"""How to open any model: a backend registry keyed by the scheme of the model's name.

``open_backend`` picks the opener from the name: ``vllm:<name>`` (vLLM on GPUs), ``openai:<name>`` or any name with
a ``base_url`` (an OpenAI-compatible server), a llama.cpp catalog name or a ``.gguf`` path (llama.cpp; packaged
GGUFs are assembled into the cache on first use), anything else a transformers catalog name, folder or HF id.
Each opener owns the resolution of its names; the catalog of known models is ``catalog.py``.

Each scheme also declares what its backend needs: its options with their defaults (``--parallel``'s chosen from
the machine) and whether it can open a model here without loading anything. The command line (its flags),
the suite (its systems' fields) and the server (through the command line) ask for them here: ``options``,
``backend_options``, ``availability``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import machine
from .base import Backend, ModelUnavailable
from .catalog import DEFAULT_MODEL, REGISTRY, assemble_packaged
from .manifest import read_manifest

# opener(model, adapter=, base_url=, weights=, **backend options) -> Backend
Opener = Callable[..., Backend]
# availability(model, base_url, weights) -> None when the scheme can open the model here, else why not and how to
# get it; decided without loading anything or touching the network
Check = Callable[[str, "str | None", "str | None"], "str | None"]


@dataclass(frozen=True)
class Option:
    """One setting a scheme's opener takes. ``name`` is how callers give it: the command line's flag (``--n-ctx``
    for n_ctx), a suite system's field; ``keyword`` is the opener's argument when it is called otherwise. The
    default is ``default``, or, with ``choose``, chosen from the machine and the other settings (``chosen`` says
    how, for the command line's help). Every option is a whole number of at least 1."""

    name: str
    help: str
    default: int | None = None
    choose: Callable[[dict], int] | None = None  # settings so far (by name, and the adapter) -> the default
    chosen: str = ""
    keyword: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Scheme:
    """An opener with what its backend needs: its options and its availability check."""

    name: str
    open: Opener
    options: tuple[Option, ...]
    availability: Check

    def __call__(self, model: str, **kwargs) -> Backend:
        return self.open(model, **kwargs)


SCHEMES: dict[str, Scheme] = {}


def whole_number(text: str) -> int:
    """An option's value as the command line gives it (argparse's ``type``): a whole number of at least 1."""
    import argparse

    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def scheme(name: str, options: tuple[Option, ...], availability: Check) -> Callable[[Opener], Opener]:
    def register(opener: Opener) -> Opener:
        SCHEMES[name] = Scheme(name, opener, options, availability)
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


def options() -> list[Option]:
    """Every scheme's options, each once (by name), in the order the schemes declare them: the command line's
    model flags."""
    seen: dict[str, Option] = {}
    for entry in SCHEMES.values():
        for option in entry.options:
            seen.setdefault(option.name, option)
    return list(seen.values())


def backend_options(model: str, base_url: str | None = None, adapter: str | None = None, **given) -> dict:
    """The options the scheme of ``model`` takes, as its opener's keywords: each as ``given`` (by name), else its
    default (chosen from the machine where it is). Given options of other schemes do not apply and are left out."""
    declared, settings = SCHEMES[scheme_of(model, base_url)].options, {"adapter": adapter}
    for option in declared:
        value = given.get(option.name)
        if value is None:
            value = option.choose(settings) if option.choose else option.default
        settings[option.name] = value
    return {option.keyword or option.name: settings[option.name] for option in declared}


def availability(model: str, base_url: str | None = None, weights: str | None = None) -> str | None:
    """None when ``model`` can be opened here, else why not and how to get it: known without loading anything and
    without the network (a model that is neither a folder nor in the Hugging Face cache is not here)."""
    return SCHEMES[scheme_of(model, base_url)].availability(model, base_url, weights)


def in_hf_cache(model_id: str) -> bool:
    """Whether the Hugging Face cache holds ``model_id`` (its config.json)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # not a valid repo id
        return False


def _missing(modules: tuple[str, ...], extra: str, feature: str | None = None) -> str | None:
    """Why a backend cannot run without an optional extra (as ``errors.require`` would say), or None."""
    from ..errors import missing

    absent = missing(modules, extra, feature)
    return f"{absent}." if absent else None


def _vllm_available(model: str, base_url: str | None, weights: str | None) -> str | None:
    return _missing(("vllm",), "vllm")  # errors.EXTRAS says what it is


def _openai_available(model: str, base_url: str | None, weights: str | None) -> str | None:
    from .openai_client import BASE_URL_ENV

    if base_url or any(os.environ.get(k) for k in BASE_URL_ENV):
        return None
    return (f"{model} needs an OpenAI-compatible server: give its address as base_url (--base-url; "
            f"${' or $'.join(BASE_URL_ENV)}) and the key in $OPENAI_API_KEY.")


def _gguf_available(model: str, base_url: str | None, weights: str | None) -> str | None:
    if model in REGISTRY or Path(model).exists():
        return None  # packaged GGUFs assemble from installed parts; a missing part is reported when opening
    return f"GGUF file {model} not found."


def _hf_available(model: str, base_url: str | None, weights: str | None) -> str | None:
    if missing := _missing(("torch", "transformers"), "train",
                           "the Hugging Face backend (a model given as an HF id or folder)"):
        return missing
    entry = REGISTRY.get(model)
    if weights:
        return None if Path(weights).is_dir() else f"weights folder {weights} not found."
    hf_id = entry.hf_id if entry else model
    if Path(model).is_dir() or in_hf_cache(hf_id):
        return None
    if entry and entry.how_to_get:
        how = f"{entry.how_to_get} In a suite file: `weights: DIR` for this system."
    else:
        how = download_advice(hf_id, "weights" if entry else "model")
    return f"{model!r}: weights are not on this machine. {how}"


def download_advice(hf_id: str, field: str) -> str:
    """How to bring a Hugging Face model here: downloaded elsewhere, then given as ``field`` (flag, suite key)."""
    return (f"On a machine with internet run `hf download {hf_id} --local-dir DIR`, copy DIR here and give it as "
            f"the {field} (--{field} DIR; `{field}: DIR` for a system of a suite file).")


N_CTX = Option("n_ctx", "context length of a sequence, in tokens (llama.cpp)", default=4096)
THREADS = Option("threads", "CPU threads (llama.cpp)", choose=lambda settings: machine.cores(), chosen="all cores",
                 keyword="n_threads")
PARALLEL = Option(
    "parallel", "sequences decoded together (llama.cpp): posts, and the tasks of a post, share each step's read of "
                "the weights; 1 is one at a time; each costs a context of --n-ctx tokens of KV cache (see docs/scale.md)",
    choose=lambda settings: machine.parallel_for(settings["n_ctx"]),
    chosen="as many as a tenth of the free memory holds KV caches of --n-ctx tokens for, a power of two up to 32")
CONCURRENCY = Option("concurrency", "parallel requests (HTTP backends)", default=4)
TENSOR_PARALLEL_SIZE = Option("tensor_parallel_size", "GPUs per model (vllm:<model> only)", default=1)


@scheme("gguf", (N_CTX, THREADS, PARALLEL), _gguf_available)
def _open_gguf(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .llamacpp import LlamaCppBackend

    entry = REGISTRY.get(model)
    path = assemble_packaged(REGISTRY[entry.base] if entry.base else entry) if entry else Path(model)
    if not path.exists():
        raise ModelUnavailable(f"GGUF file {model} not found")
    return LlamaCppBackend(path, name=entry.name if entry else path.name, lora_path=adapter, **options)


@scheme("openai", (CONCURRENCY,), _openai_available)
def _open_openai(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .openai_client import OpenAIBackend

    return OpenAIBackend(model.removeprefix("openai:"), base_url=base_url, **options)


@scheme("vllm", (TENSOR_PARALLEL_SIZE,), _vllm_available)
def _open_vllm(model: str, adapter: str | None, base_url: str | None, weights: str | None, **options) -> Backend:
    from .vllm_backend import VLLMBackend, settings_for  # GPU offline batches; options are VLLMSettings fields

    return VLLMBackend(settings_for(model, weights, adapter=adapter, **options))


@scheme("hf", (), _hf_available)
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


_SHARED: dict[tuple, Backend] = {}


def open_shared(model: str, check: Callable[[Backend], None] | None = None, **kwargs) -> Backend:
    """``open_backend(model, **kwargs)``'s backend, opened once per process and setting (a service's analyzers
    share it) and closed at exit: the models an analyzer needs beside its own (the explainer, the heads' shallow
    copy). ``check(backend)`` runs once, after opening; it raises to refuse the model (which is then closed)."""
    key = (model, tuple(sorted(kwargs.items())))
    if key not in _SHARED:
        backend, _ = open_backend(model, **kwargs)
        try:
            if check:
                check(backend)
        except BaseException:
            backend.close()
            raise
        _SHARED[key] = backend
    return _SHARED[key]


@atexit.register
def close_shared() -> None:
    while _SHARED:
        _SHARED.popitem()[1].close()
