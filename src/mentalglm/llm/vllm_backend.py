"""vLLM on GPU machines: offline batch analysis (``LLM.generate``) and the command for a ``vllm serve`` server.

vLLM is an optional extra (``pip install "mentalglm[vllm]"`` on a CUDA machine): it pins its own CUDA build of
torch, so it never enters the CPU install. Everything that turns settings into engine arguments, a server
command or sampling parameters is a pure function here, testable without vLLM or a GPU; only ``VLLMBackend``
imports vllm.

Offline batches (one process owns the GPUs):

    backend, style = open_backend("vllm:zwzzz/MentalGLM-chat", tensor_parallel_size=2)
    # or from the command line:  mentalglm analyze --model vllm:zwzzz/MentalGLM-chat --file posts.jsonl ...

A server (many clients): print the command with ``mentalglm serve --print-vllm-command``, run it, and point the
project's ``OpenAIBackend`` at it (``--model openai:<served name> --base-url http://gpu-box:8000/v1``).
With an adapter, clients ask for the adapter's name (``--lora-modules mentalglm=/path``) to get the fine-tuned
model and for the served base name to get the base model. See docs/scale.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .base import Backend, GenConfig, Generation, ModelUnavailable, Request
from .catalog import REGISTRY

INSTALL_HINT = 'pip install "mentalglm[vllm]" on a machine with an NVIDIA GPU and CUDA (vLLM does not run on this CPU install)'


@dataclass(frozen=True)
class VLLMSettings:
    model: str  # HF id or local folder (a registry name with an hf_id is resolved)
    adapter: str | None = None  # PEFT LoRA folder
    adapter_name: str = "mentalglm"  # the name clients use to get the adapter
    tensor_parallel_size: int = 1  # GPUs per replica (one node)
    pipeline_parallel_size: int = 1  # pipeline stages, usually the number of nodes
    distributed_executor_backend: str | None = None  # "ray" across nodes; "mp" (default) on one node
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.90
    enable_prefix_caching: bool = True  # every prompt of a task shares its instruction prefix
    max_lora_rank: int = 16  # must be >= the adapter's r (GLM-4 LoRA default r=8)
    max_num_seqs: int | None = None
    trust_remote_code: bool | None = None  # None: from the registry (GLM-4 remote code needs it)
    seed: int = 0
    batch_size: int = 1024  # prompts per LLM.generate call (analyze groups posts by it; vLLM schedules within)
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    extra: dict = field(default_factory=dict)  # further LLM(...) keyword arguments / --flags


def settings_for(model: str, weights: str | None = None, **fields) -> VLLMSettings:
    """Settings for ``vllm:<model>`` (the prefix is optional), used by ``open_backend`` and ``serve
    --print-vllm-command`` alike. ``weights`` is a local copy of a catalog model: vLLM loads the folder, and the
    catalog's trust_remote_code still applies (a folder name says nothing about remote code)."""
    name = model.removeprefix("vllm:")
    entry = REGISTRY.get(name)
    if weights and entry and fields.get("trust_remote_code") is None:
        fields["trust_remote_code"] = bool(entry.hf_kwargs.get("trust_remote_code"))
    return VLLMSettings(model=weights or name, **fields)


def resolve_model(settings: VLLMSettings) -> tuple[str, bool]:
    """(HF id or folder, trust_remote_code) for the settings' model, via the catalog where it names one."""
    entry = REGISTRY.get(settings.model)
    if entry is not None and entry.backend == "llamacpp":
        raise ValueError(f"{settings.model} is a GGUF for llama.cpp; give vLLM a Hugging Face checkpoint "
                         "(e.g. Qwen/Qwen2.5-Coder-1.5B-Instruct, zwzzz/MentalGLM-chat or a local folder)")
    model = entry.hf_id if entry is not None and entry.hf_id else settings.model
    trust = settings.trust_remote_code
    if trust is None:
        # GLM-4 checkpoints ship remote code; their native "-hf" conversions do not need it.
        name = model.lower().rstrip("/")
        trust = bool(entry.hf_kwargs.get("trust_remote_code")) if entry is not None else \
            ("glm" in name and not name.endswith("-hf"))
    return model, trust


def served_name(settings: VLLMSettings) -> str:
    model, _ = resolve_model(settings)
    return settings.served_model_name or Path(model.rstrip("/")).name


def _check(settings: VLLMSettings) -> None:
    if settings.tensor_parallel_size < 1 or settings.pipeline_parallel_size < 1:
        raise ValueError("tensor_parallel_size and pipeline_parallel_size must be >= 1")
    if settings.distributed_executor_backend not in (None, "ray", "mp"):
        raise ValueError(f"distributed_executor_backend must be 'ray' or 'mp', not "
                         f"{settings.distributed_executor_backend!r}")
    if settings.adapter is not None and not settings.adapter_name:
        raise ValueError("an adapter needs a name (adapter_name)")


def engine_args(settings: VLLMSettings) -> dict:
    """Keyword arguments for ``vllm.LLM(**engine_args(settings))``."""
    _check(settings)
    model, trust = resolve_model(settings)
    args: dict = {"model": model, "tensor_parallel_size": settings.tensor_parallel_size,
                  "pipeline_parallel_size": settings.pipeline_parallel_size, "dtype": settings.dtype,
                  "gpu_memory_utilization": settings.gpu_memory_utilization,
                  "enable_prefix_caching": settings.enable_prefix_caching, "seed": settings.seed,
                  "trust_remote_code": trust}
    if settings.distributed_executor_backend:
        args["distributed_executor_backend"] = settings.distributed_executor_backend
    if settings.max_model_len:
        args["max_model_len"] = settings.max_model_len
    if settings.max_num_seqs:
        args["max_num_seqs"] = settings.max_num_seqs
    if settings.adapter:
        args.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=1)
    args.update(settings.extra)
    return args


def serve_command(settings: VLLMSettings) -> list[str]:
    """The ``vllm serve`` command line for the same settings (an OpenAI-compatible server).

    A bearer token is not put on the command line (``ps`` would show it): vLLM reads ``VLLM_API_KEY``."""
    args = engine_args(settings)
    cmd = ["vllm", "serve", args.pop("model"), "--host", settings.host, "--port", str(settings.port),
           "--served-model-name", served_name(settings)]
    args.pop("max_loras", None)
    enable_lora = args.pop("enable_lora", False)
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                cmd.append(flag)
            elif key == "enable_prefix_caching":
                cmd.append("--no-enable-prefix-caching")
        else:
            cmd += [flag, str(value)]
    if enable_lora:
        cmd += ["--enable-lora", "--lora-modules", f"{settings.adapter_name}={settings.adapter}"]
    return cmd


def sampling_kwargs(config: GenConfig) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` from the project's GenConfig."""
    kw: dict = {"max_tokens": config.max_tokens, "temperature": config.temperature, "top_p": config.top_p,
                "top_k": config.top_k if config.top_k > 0 else -1,  # -1 = off in every vLLM version
                "seed": config.seed, "repetition_penalty": config.repeat_penalty}
    if config.stop:
        kw["stop"] = list(config.stop)
    return kw


class VLLMBackend(Backend):
    """Offline batches on vLLM: all prompts of a call go to the engine at once (continuous batching, prefix
    caching across prompts that share a task's instructions), with the LoRA adapter on every request."""

    def __init__(self, settings: VLLMSettings):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ModelUnavailable(f"vLLM is not installed ({e}): {INSTALL_HINT}") from e
        self.settings = settings
        self.llm = LLM(**engine_args(settings))
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if settings.adapter:
            from vllm.lora.request import LoRARequest

            if not Path(settings.adapter).is_dir():
                raise ModelUnavailable(f"adapter folder {settings.adapter} not found (vLLM loads PEFT adapters)")
            self.lora = LoRARequest(settings.adapter_name, 1, os.path.abspath(settings.adapter))
        self.batch_size = settings.batch_size
        self.name = settings.adapter_name if settings.adapter else served_name(settings)
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def render(self, request: Request) -> str:
        prompt = self.tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
        return prompt + request.answer_prefix

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        from vllm import SamplingParams

        if not requests:
            return []
        prompts = [self.render(r) for r in requests]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, SamplingParams(**sampling_kwargs(config)), lora_request=self.lora,
                                    use_tqdm=False)
        per_request_ms = (time.perf_counter() - start) * 1000 / len(requests)  # one batch: share its time
        return [Generation(text=r.answer_prefix + out.outputs[0].text, prompt_tokens=len(out.prompt_token_ids or ()),
                           completion_tokens=len(out.outputs[0].token_ids), latency_ms=per_request_ms,
                           finish_reason=out.outputs[0].finish_reason or "", prefilled=True)
                for r, out in zip(requests, outputs)]

    def close(self) -> None:
        del self.llm
