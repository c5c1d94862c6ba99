"""Options shared by every verb that talks to a model."""

from __future__ import annotations

from ..llm.registry import DEFAULT_MODEL, open_backend, scheme_of


def add_model_args(p, default_model: str = DEFAULT_MODEL) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default_model,
                   help="registry name (see `mentalglm models`), a .gguf path, a local HF folder or id, openai:<name>, "
                        "or vllm:<HF id or folder> (GPU)")
    g.add_argument("--weights", help="local folder with a registry model's weights (e.g. a downloaded zwzzz/MentalGLM)")
    g.add_argument("--adapter", help="LoRA adapter: a GGUF adapter or run folder (llama.cpp), a PEFT folder (transformers)")
    g.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (key from $OPENAI_API_KEY)")
    g.add_argument("--prompt-style", choices=["zeroshot", "instruction", "heads"],
                   help="zeroshot: definitions + format (general models); instruction: the C-IMHI prompt "
                        "fine-tuned models learned; heads: labels from label heads over the closed label set "
                        "(default: heads for mentalglm-mini or --heads, instruction for a `mentalglm train` run, "
                        "else the registry's, else zeroshot)")
    g.add_argument("--heads", help="label-heads folder made by `mentalglm heads train` (implies --prompt-style heads; "
                                   "default for mentalglm-mini: the packaged heads)")
    g.add_argument("--risk-threshold", type=float,
                   help="P(high suicide risk) at which a post is flagged (label heads only; default: the heads' "
                        "operating point, chosen for high-risk recall of at least 0.90)")
    g.add_argument("--n-ctx", type=int, default=4096, help="context length (llama.cpp)")
    g.add_argument("--threads", type=int, help="CPU threads (llama.cpp; default: all cores)")
    g.add_argument("--parallel", type=int, help="sequences decoded together (llama.cpp): posts, and the tasks of a post, "
                                                 "share each step's read of the weights; 1 is one at a time; each costs "
                                                 "a context of --n-ctx tokens of KV cache (see docs/scale.md; default: "
                                                 "chosen from the machine)")
    g.add_argument("--concurrency", type=int, default=4, help="parallel requests (HTTP backends)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model (vllm:<model> only)")


def open_from_args(args):
    """(backend, prompt style) for the model options of ``args``."""
    options = backend_options(args.model, args.base_url, concurrency=args.concurrency, n_ctx=args.n_ctx,
                              threads=args.threads, tensor_parallel_size=args.tensor_parallel_size,
                              parallel=args.parallel)
    return open_backend(args.model, adapter=args.adapter, base_url=args.base_url, prompt_style=_asked_style(args),
                        weights=args.weights, **options)


def backend_options(model: str, base_url: str | None, *, concurrency: int, n_ctx: int, threads: int | None,
                    tensor_parallel_size: int = 1, parallel: int | None = None) -> dict:
    """The command-line backend options that the scheme of ``model`` takes (the others do not apply to it)."""
    from ..llm.llamacpp import default_parallel

    return {"openai": {"concurrency": concurrency},
            "vllm": {"tensor_parallel_size": tensor_parallel_size},
            "gguf": {"n_ctx": n_ctx, "n_threads": threads, "parallel": parallel or default_parallel(n_ctx)},
            }.get(scheme_of(model, base_url), {})


def _asked_style(args) -> str | None:
    return args.prompt_style or ("heads" if args.heads else None)


def model_settings(args) -> dict:
    """What identifies the model side of a run, known before the model loads (for ``--resume`` checks):
    the model and adapter as given (paths made absolute), the prompt style, and the heads folder."""
    from pathlib import Path

    from ..llm.registry import resolve_style

    def where(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    style = resolve_style(args.model, args.adapter, _asked_style(args))
    return {"model": where(args.model), "adapter": where(args.adapter), "prompt_style": style,
            "heads": (where(args.heads) or "packaged") if style == "heads" else None}


def heads_options(args) -> dict:
    """AnalyzeConfig fields of the label-heads options."""
    return {"heads": args.heads, "risk_threshold": args.risk_threshold}
