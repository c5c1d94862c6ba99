"""`mentalglm train`: two-stage LoRA fine-tuning from a recipe, and GGUF export of a finished run."""

from __future__ import annotations

import sys

from ..errors import require

# What each verb imports (the `train` extra): checked before any model or data loads.
TRAINING = ("torch", "transformers", "peft", "accelerate")
EXPORT = ("torch", "transformers", "safetensors")  # llama.cpp's convert_lora_to_gguf.py runs on these

EXAMPLES = """examples:
  mentalglm train --config configs/cpu-0.5b.yaml                        # CPU recipe, run folder runs/train/cpu-0.5b
  mentalglm train --config configs/cpu-0.5b.yaml stage2.data.per_task=50 stage2.epochs=2 output_dir=runs/train/small
  mentalglm train --config configs/cpu-0.5b.yaml --resume               # continue an interrupted run
  mentalglm train --config configs/cpu-0.5b.yaml stage1.enabled=true stage2.init=merge
  mentalglm train --config configs/mentalglm-9b-chat.yaml stage2.data.path=data/c-imhi   # on a GPU node
  mentalglm train export-gguf runs/train/cpu-0.5b                       # PEFT adapter -> export/adapter.gguf
  mentalglm train --keys                                                # every recipe key with its help
  mentalglm analyze --model qwen2.5-coder-0.5b-instruct-q4 --adapter runs/train/cpu-0.5b "最近总觉得自己什么都做不好"

overrides are key=value with dotted keys (values read as YAML: 2, 5e-4, true, [q_proj,v_proj]).
multi-GPU: accelerate launch --config_file configs/accelerate/fsdp.yaml -m mentalglm.cli train --config ... (docs/training.md)
"""


def register(sub, fmt):
    p = sub.add_parser("train", help="LoRA fine-tuning (stage 1 English IMHI, stage 2 C-IMHI); export-gguf",
                       epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("items", nargs="*", metavar="key=value | export-gguf RUN_DIR",
                   help="recipe overrides, or `export-gguf RUN_DIR` to convert a finished run's adapter for llama.cpp")
    p.add_argument("--config", help="recipe YAML (configs/cpu-0.5b.yaml, configs/mentalglm-9b-chat.yaml, ...)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the recipe's output_dir from its last checkpoint")
    p.add_argument("--keys", action="store_true", help="list every recipe key with its default and help, then exit")
    p.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0"], help="export-gguf: tensor type")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.config import ConfigError, describe, load_config

    if args.keys:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="recipe keys (override any with key=value)")
        for col in ("key", "default", "help"):
            table.add_column(col, overflow="fold")
        for key, default, help_text in describe():
            table.add_row(key, default, help_text)
        Console().print(table)
        return 0
    if args.items and args.items[0] == "export-gguf":
        return _export_gguf(args)
    if not args.config and not args.items:
        print("error: pass --config RECIPE.yaml (see `mentalglm train --help`)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.items)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for module in TRAINING:
        require(module, "train", "training")
    from ..train import run_training
    from ..train.export import ExportError
    from ..train.trainer import TrainError

    try:
        run_dir = run_training(cfg, resume=args.resume)
    except (TrainError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; continue with: mentalglm train --config {args.config} "
              f"{' '.join(args.items)} --resume".replace("  ", " "), file=sys.stderr)
        return 130
    print(f"run folder: {run_dir}\nuse it: mentalglm analyze --model {cfg.model} --adapter {run_dir} \"<post>\"")
    return 0


def _export_gguf(args) -> int:
    from ..train.export import ExportError, export_run_gguf

    if len(args.items) != 2:
        print("error: usage: mentalglm train export-gguf RUN_DIR", file=sys.stderr)
        return 2
    for module in EXPORT:
        require(module, "train", "GGUF adapter export")
    try:
        print(export_run_gguf(args.items[1], args.outtype))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
