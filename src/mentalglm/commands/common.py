"""Options shared by every verb that talks to a model."""

from __future__ import annotations

from ..llm import registry
from ..llm.registry import DEFAULT_MODEL, open_backend


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
    g.add_argument("--explainer", choices=["auto", "trained", "base"], default="auto",
                   help="who writes the explanation of a label chosen by heads: auto, the heads folder's trained "
                        "explainer (a LoRA adapter on the 0.5B model) for the tasks where it was measured to be "
                        "better (mentalglm-mini: suicide_risk_levels), the heads' own model for the rest; trained, "
                        "the explainer for every task; base, the heads' own model for every task (default: auto)")
    g.add_argument("--no-quote-first", dest="quote_first", action="store_false",
                   help="label heads: let the explanation start freely (default: it starts by quoting the post's "
                        "clause the head weighs most for the label, so its evidence is the post's own words)")
    g.add_argument("--brief", action="store_true",
                   help="label heads: end each explanation with its first sentence (the quote and one reason; "
                        "faster, docs/analyze.md)")
    g.add_argument("--screen", action="store_true",
                   help="label heads: the heads' character n-gram part decides the posts it is sure of, the model only "
                        "the rest (faster; rows say decided_by; operating point fitted out of fold, docs/scale.md)")
    g.add_argument("--screen-threshold", type=float, metavar="P",
                   help="with --screen: the confidence at which the screen decides, for every task (default: each "
                        "task's from the heads folder; higher sends more posts to the model)")
    add_backend_args(g)


def add_backend_args(group) -> None:
    """The flags of every backend option the registry declares (its help and default; a default chosen from the
    machine is said in the help and left unset here, so the registry chooses it when the model opens)."""
    for option in registry.options():
        text = f"{option.help} (default: {option.chosen})" if option.choose else option.help
        group.add_argument(option.flag, type=registry.whole_number, default=option.default, metavar="N", help=text)


def backend_options(args, model: str | None = None) -> dict:
    """The registry's options for the model of ``args`` (or ``model``), as the flags give them or by default."""
    given = {option.name: getattr(args, option.name) for option in registry.options()}
    return registry.backend_options(model or args.model, args.base_url, getattr(args, "adapter", None), **given)


def open_from_args(args):
    """(backend, prompt style) for the model options of ``args``."""
    return open_backend(args.model, adapter=args.adapter, base_url=args.base_url, prompt_style=_asked_style(args),
                        weights=args.weights, **backend_options(args))


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
            "heads": (where(args.heads) or "packaged") if style == "heads" else None,
            "explainer": args.explainer if style == "heads" else None,
            "brief": args.brief if style == "heads" else None,
            "screen": (args.screen_threshold or "fitted") if style == "heads" and args.screen else None}


def heads_options(args) -> dict:
    """AnalyzeConfig fields of the label-heads options."""
    return {"heads": args.heads, "risk_threshold": args.risk_threshold, "explainer": args.explainer,
            "quote_first": args.quote_first, "brief": args.brief, "screen": args.screen,
            "screen_threshold": args.screen_threshold}
