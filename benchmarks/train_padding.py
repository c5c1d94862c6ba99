"""Training throughput with length-grouped batches against naive (random-order) padding.

    python benchmarks/train_padding.py                                   # cpu-0.5b recipe, 6 steps each
    python benchmarks/train_padding.py --steps 4 --layers 6              # the base's first 6 layers only

Runs the same short LoRA stage twice from the cpu-0.5b recipe (same records, seed, batch size), once with
``group_by_length=true`` and once with ``false``, and prints real (non-padding) tokens per second, the share of
padding in the batches, and the ratio. ``--layers N`` trains a copy of the base model cut to its first N decoder
layers (real weights and tokenizer, less compute per token) to measure on a busy machine; padding then costs
relatively less (the output layer is unchanged), so the full model's ratio is at least as large.
Run folders go to a temporary directory and are deleted.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

from mentalglm.train import load_config, run_training


def truncated_base(model: str, layers: int, out: Path) -> Path:
    """The recipe's base model cut to its first ``layers`` decoder layers, saved to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mentalglm.train.models import resolve_base

    source = resolve_base(model)
    m = AutoModelForCausalLM.from_pretrained(source)
    m.model.layers = m.model.layers[:layers]
    m.config.num_hidden_layers = layers
    if getattr(m.config, "layer_types", None):
        m.config.layer_types = m.config.layer_types[:layers]
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def one_run(args, grouped: bool, root: Path) -> dict:
    out = root / ("grouped" if grouped else "naive")
    cfg = load_config(args.config, [f"output_dir={out}", f"group_by_length={str(grouped).lower()}",
                                    f"stage2.max_steps={args.steps}", f"stage2.batch_size={args.batch_size}",
                                    "stage2.grad_accum=1", "stage2.logging_steps=1", f"stage2.save_steps={args.steps}",
                                    "stage2.data.eval_per_task=0", f"stage2.data.per_task={args.per_task}",
                                    "export.gguf=false", *([f"model={args.model}"] if args.model else [])])
    run_training(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    # the first step includes warm-up (allocations): measure from the end of step 1 to the end
    first = [r for r in rows if "loss" in r][0]
    return {"tokens_per_s": last["tokens_per_s"], "real": last["real_tokens"], "padded": last["padded_tokens"],
            "first_step_tokens": first["real_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cpu-0.5b.yaml")
    ap.add_argument("--model", help="override the recipe's base model")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--layers", type=int, help="train the base cut to its first N decoder layers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.layers:
            recipe = load_config(args.config, [])
            args.model = str(truncated_base(args.model or recipe.model, args.layers, Path(tmp) / "base"))
        results = {name: one_run(args, grouped, Path(tmp)) for name, grouped in (("length-grouped", True),
                                                                                 ("naive padding", False))}
    cut = f", base cut to {args.layers} layers" if args.layers else ""
    print(f"\n{args.config}{cut}, {args.steps} steps of batch {args.batch_size}, {date.today()}, "
          f"{platform.machine()} ({platform.processor() or 'CPU'})\n")
    print("| batching | real tokens | padded tokens | padding share | real tokens/s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['real']} | {r['padded']} | {1 - r['real'] / r['padded']:.1%} | "
              f"{r['tokens_per_s']:.1f} |")
    g, n = results["length-grouped"], results["naive padding"]
    print(f"\nratio length-grouped / naive: {g['tokens_per_s'] / n['tokens_per_s']:.2f}x real tokens/s")


if __name__ == "__main__":
    main()
