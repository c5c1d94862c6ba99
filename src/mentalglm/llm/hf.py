"""The transformers backend: any causal LM from a local folder or an HF id, optionally with a PEFT adapter.

This is how the real MentalGLM checkpoints (GLM-4-9b + LoRA, ``trust_remote_code``, bf16) are run on a GPU
machine. On a CPU it works but is slow (4–9 tok/s for a 1.5B model): serve GGUFs with llama.cpp there.

Prompts are rendered with the tokenizer's chat template, ``answer_prefix`` is appended after the assistant
header (so the answer is prefilled), and requests are left-padded into batches of ``batch_size``.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence

from ..errors import require
from .base import Backend, GenConfig, Generation, ModelUnavailable, Request

log = logging.getLogger(__name__)

_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "auto": "auto",
}


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 / AMX on x86, BF16 on Arm Linux).

    Without it PyTorch emulates bf16 matmuls, which is many times slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read()
    except OSError:
        return False  # macOS/Windows: play safe, float32 always works
    flags = set(info.replace("\n", " ").replace("\t", " ").split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in model) or Path(model).exists() \
        or model.count("/") > 1


def _how_to_get(model: str, entry) -> str:
    if entry is not None and getattr(entry, "how_to_get", ""):
        return entry.how_to_get
    if _looks_like_path(model):
        return (f"No model folder at {model}. Pass a folder holding config.json, the tokenizer files and the "
                f"weights (*.safetensors), e.g. one made on a connected machine with "
                f"`hf download <hf-id> --local-dir DIR` (`huggingface-cli download` on older huggingface_hub).")
    return (f"On a machine with internet run `hf download {model} --local-dir DIR` "
            f"(`huggingface-cli download {model} --local-dir DIR` on older huggingface_hub), copy DIR here "
            f"and pass the folder instead of the id (--model DIR).")


def _context_length(config) -> int:
    for attr in ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


class HFBackend(Backend):
    """A transformers causal LM (+ optional PEFT adapter) behind the ``Backend`` protocol.

    ``entry`` (a registry ``ModelEntry``) supplies defaults: ``hf_kwargs`` (``trust_remote_code``, ``dtype``),
    ``generation`` (the model card's decoding settings) and ``how_to_get`` for the error message when the
    weights are absent. Explicit arguments win over the entry.
    """

    def __init__(self, model: str, adapter: str | None = None, entry=None, dtype: str | None = None,
                 batch_size: int = 8, trust_remote_code: bool | None = None, device: str | None = None,
                 max_new_tokens_cap: int | None = None):
        for module in ("torch", "transformers", *(("peft",) if adapter else ())):
            require(module, "train", "the Hugging Face backend (a model given as an HF id or folder)")
        import torch
        from huggingface_hub.errors import HFValidationError
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        model = str(model)
        hf_kwargs = dict(getattr(entry, "hf_kwargs", None) or {})
        self.name: str = getattr(entry, "name", None) or model
        self.model_id = model
        self.adapter = adapter
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens_cap = max_new_tokens_cap
        self.generation_defaults: dict = dict(getattr(entry, "generation", None) or {})
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._warned_max_length = False
        if trust_remote_code is None:
            trust_remote_code = bool(hf_kwargs.get("trust_remote_code", False))

        path = Path(model).expanduser()
        if _looks_like_path(model) and not path.is_dir():
            raise ModelUnavailable(f"model {self.name!r}: {_how_to_get(model, entry)}")
        source = str(path) if path.is_dir() else model

        # The config first: one small file, so an absent model fails fast with one clear message.
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, HFValidationError) as exc:  # not on disk, not in the HF cache, hub unreachable
            raise ModelUnavailable(f"model {self.name!r} cannot be loaded here ({_first_line(exc)}). "
                                   f"{_how_to_get(model, entry)}") from exc
        except ValueError as exc:
            if "trust_remote_code" not in str(exc):
                raise
            raise ModelUnavailable(
                f"model {self.name!r} ships its own modelling code (GLM-4 checkpoints do): load it with "
                f"trust_remote_code=True (--trust-remote-code) if you trust its source") from exc
        self.context_length: int = _context_length(config)

        if device in (None, ""):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        torch_dtype = self._resolve_dtype(dtype or hf_kwargs.get("dtype") or "auto", config, device,
                                          explicit=dtype is not None)

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            load_kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
            if device != "cpu":
                load_kwargs["device_map"] = device  # "auto" spreads a 9B model over the GPUs there are
            self.model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
        except OSError as exc:
            raise ModelUnavailable(f"model {self.name!r}: files missing ({_first_line(exc)}). "
                                   f"{_how_to_get(model, entry)}") from exc

        if adapter:
            self.model = self._load_adapter(adapter)
        self.model.eval()
        self.dtype = torch_dtype

        tok = self.tokenizer
        tok.padding_side = "left"  # decoder-only: new tokens must follow every prompt directly
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ModelUnavailable(f"model {self.name!r}: tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self._eos_ids = sorted(i for i in eos_ids if i is not None)
        self._has_template = bool(getattr(tok, "chat_template", None))

    # ------------------------------------------------------------------ loading helpers
    def _resolve_dtype(self, requested: str, config, device: str, explicit: bool = False):
        """The torch dtype to load in. Defaults (the registry entry's, or the checkpoint's own with "auto")
        fall back to float32 on a CPU that would only emulate bf16/fp16; an explicit ``dtype`` is obeyed."""
        import torch

        key = _DTYPE_ALIASES.get(str(requested).lower().replace("torch.", ""))
        if key is None:
            raise ValueError(f"unknown dtype {requested!r}; use one of {sorted(set(_DTYPE_ALIASES))}")
        if key == "auto":
            saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
            key = str(saved).replace("torch.", "") if saved else "float32"
            key = _DTYPE_ALIASES.get(key, "float32")
        if device == "cpu" and not explicit:
            if key == "bfloat16" and not _cpu_has_bf16():
                self._note("this CPU has no native bf16: loading in float32 (twice the memory, much faster "
                           "than emulated bf16); pass dtype='bfloat16' to force bf16")
                key = "float32"
            elif key == "float16":
                self._note("float16 is slow or unsupported on CPU: loading in float32")
                key = "float32"
        return getattr(torch, key)

    def _load_adapter(self, adapter: str):
        from peft import PeftModel

        folder = Path(adapter).expanduser()
        if _looks_like_path(adapter) or folder.exists():
            if not (folder / "adapter_config.json").is_file():
                raise ModelUnavailable(
                    f"adapter {adapter!r}: no PEFT adapter folder there (expected adapter_config.json and "
                    f"adapter_model.safetensors). Train one with `mentalglm train` or copy the folder here.")
            adapter = str(folder)
        try:
            return PeftModel.from_pretrained(self.model, adapter, is_trainable=False)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"adapter {adapter!r} cannot be loaded ({_first_line(exc)}). On a connected machine run "
                f"`hf download {adapter} --local-dir DIR` and pass --adapter DIR.") from exc

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.warning("%s: %s", self.name, message)

    # ------------------------------------------------------------------ prompts
    def render(self, request: Request) -> str:
        """The exact prompt text the model sees: chat template + assistant header + answer prefix."""
        messages = [dict(m) for m in request.messages]
        if self._has_template:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # base models without a template: a plain transcript ending in an open assistant turn
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return text + request.answer_prefix

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # ------------------------------------------------------------------ generation
    def _max_new_tokens(self, config: GenConfig, prompt_len: int) -> int:
        """New-token budget of one prompt: GenConfig.max_tokens, within ``max_new_tokens_cap`` and the model
        card's ``max_length`` (prompt + answer) when the prompt leaves room under it."""
        max_new = max(1, int(config.max_tokens))
        if self.max_new_tokens_cap:
            max_new = min(max_new, int(self.max_new_tokens_cap))
        max_length = self.generation_defaults.get("max_length")
        if max_length:
            room = int(max_length) - prompt_len
            if room >= 1:
                max_new = min(max_new, room)
            elif not self._warned_max_length:
                self._warned_max_length = True
                self._note(f"a prompt of {prompt_len} tokens exceeds the model card's max_length {max_length}; "
                           f"such prompts get up to {max_new} new tokens anyway")
        return max_new

    def _generate_kwargs(self, config: GenConfig, max_new: int) -> dict:
        defaults = dict(self.generation_defaults)
        defaults.pop("max_length", None)
        for key in ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty"):
            # GenConfig decides these (it cannot say "unset"). The MentalGLM card's do_sample=True, top_k=1 is
            # greedy in effect, which is what GenConfig's temperature 0 gives.
            defaults.pop(key, None)
        kwargs = dict(defaults, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self._eos_ids or None)
        if config.temperature and config.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(config.temperature), top_p=float(config.top_p),
                          top_k=int(config.top_k) if config.top_k else 0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # Always set: a checkpoint's generation_config.json (Qwen2.5: 1.05) must not sneak a penalty in.
        kwargs["repetition_penalty"] = float(config.repeat_penalty or 1.0)
        return kwargs

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        import torch

        if not requests:
            return []
        prompts = [self.render(r) for r in requests]
        encoded = [self.tokenizer(p, add_special_tokens=not self._has_template)["input_ids"] for p in prompts]
        # Similar lengths together: less padding. Results go back in request order.
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(requests)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                for i, gen in zip(idx, self._generate_batch([encoded[i] for i in idx], config)):
                    results[i] = Generation(text=requests[i].answer_prefix + gen.text,
                                            prompt_tokens=gen.prompt_tokens,
                                            completion_tokens=gen.completion_tokens, latency_ms=gen.latency_ms,
                                            finish_reason=gen.finish_reason, prefilled=True)
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch_ids: list[list[int]], config: GenConfig) -> list[Generation]:
        import torch
        from transformers import StoppingCriteriaList

        t0 = time.perf_counter()
        padded = self.tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt")
        device = self.model.device
        input_ids = padded["input_ids"].to(device)
        attention_mask = padded["attention_mask"].to(device)
        prompt_len = input_ids.shape[1]
        # Per-row budgets, so that a prompt gets the same answer alone or in any batch (greedy): generate up
        # to the largest budget, then cut each row to its own.
        limits = [self._max_new_tokens(config, len(ids)) for ids in batch_ids]
        kwargs = self._generate_kwargs(config, max(limits))
        stops = tuple(s for s in config.stop if s)
        if stops:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_stop_on_strings_class()(self.tokenizer, stops, prompt_len)])
        if kwargs.get("do_sample"):
            torch.manual_seed(config.seed)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        eos = set(self._eos_ids)
        pad = self.tokenizer.pad_token_id
        gens = []
        for row in range(out.shape[0]):
            ids = out[row, prompt_len:].tolist()[:limits[row]]
            finish = "length"
            for j, t in enumerate(ids):
                if t in eos:
                    ids, finish = ids[:j], "stop"
                    break
            if finish == "length":
                while ids and ids[-1] == pad:  # padding after a stop-string halt, or after a shorter row's end
                    ids.pop()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            cut = _first_stop(text, stops)
            if cut is not None:
                text, finish = text[:cut], "stop"
            elif finish == "length" and len(ids) < limits[row]:
                finish = "stop"
            gens.append(Generation(text=text, prompt_tokens=int(attention_mask[row].sum()),
                                   completion_tokens=len(ids), latency_ms=elapsed_ms / out.shape[0],
                                   finish_reason=finish, prefilled=True))
        return gens

    def close(self) -> None:
        import torch

        for attr in ("model", "tokenizer"):
            if hasattr(self, attr):
                delattr(self, attr)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> "HFBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HFBackend({self.name!r}, adapter={self.adapter!r}, device={self.device!r})"


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@functools.cache
def _stop_on_strings_class():
    """A transformers ``StoppingCriteria`` that halts each row once its new text holds a stop string.

    Defined on first use so that importing this module does not import transformers.
    """
    import torch
    from transformers import StoppingCriteria

    class StopOnStrings(StoppingCriteria):
        def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int):
            self.tokenizer = tokenizer
            self.stops = tuple(stops)
            self.prompt_len = prompt_len
            # Enough tokens to hold the longest stop string: a CJK character can take 3 byte-level tokens.
            self.window = 4 * max(len(s) for s in self.stops) + 4

        def __call__(self, input_ids, scores, **kwargs):
            tails = input_ids[:, self.prompt_len:][:, -self.window:]
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
            return torch.tensor([any(s in t for s in self.stops) for t in texts], dtype=torch.bool,
                                device=input_ids.device)

    return StopOnStrings
