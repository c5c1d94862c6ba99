"""Screening (`analyze --screen`) against the full stack: speed, the share of posts that reach the model, quality.

    python benchmarks/screen_speed.py --n 210 --predictions runs/mini2/validation
    python benchmarks/screen_speed.py --n 210 --new runs/heads/tuned/model --skip-quality   # heads against heads
    python benchmarks/screen_speed.py --n 90 --tasks emotion --skip-quality                 # one task's screening

1. **Speed**, labels only, the three default tasks (or --tasks), --n validation posts (a stratified sample, seed 13,
   of each task's validation split, mixed), the full stack and --screen interleaved in blocks of --block posts in
   one run: posts/s, their ratio, and per task the share of posts the screen decided. Peak memory of the process.
2. **Quality** on the heads' validation samples (the posts `mentalglm heads train` scores, n per task below):
   a screened row is the screen's own decision, any other row is the full stack's, exactly (tested), so the
   screened predictions are the full stack's validation predictions (--predictions, written by `heads train`)
   with the screen's decisions put in where it is sure. Headline metrics of both, the paired bootstrap interval of
   screen - full (1,000 resamples of the posts, seed 13), the recall of the high-risk flag, and the share screened.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.evaluate.classification import paired_difference_intervals, score
from mentalglm.heads import load_heads
from mentalglm.heads.features import head_text
from mentalglm.heads.recipe import Recipe
from mentalglm.llm.catalog import DEFAULT_MODEL
from mentalglm.llm.registry import open_backend
from mentalglm.tasks import DEFAULT_TASKS, get_task

from explainer_compare import default_task_posts, run_interleaved

TASKS = ("suicide_risk", "emotion", "cognitive_distortion", "suicide_risk_levels")


def quality(heads, predictions: Path) -> list[dict]:
    recipe = Recipe()
    out = []
    for task in TASKS:
        spec, head, screen = get_task(task), heads.head(task), heads.screens.get(task)
        examples = recipe.validation_examples(task)
        full = {r["id"]: r for r in map(json.loads, (predictions / f"{task}.jsonl").read_text().splitlines())}
        gold, pred_full, pred_screen, screened, flags = [], [], [], 0, {"full": [], "screen": []}
        for e in examples:
            probs = screen.probabilities(head, head_text(e.text)) if screen else None
            decided = screen.decide(head, probs) if screen else None
            screened += decided is not None
            gold.append(list(e.labels))
            pred_full.append(full[e.id]["labels"])
            pred_screen.append(decided or full[e.id]["labels"])
            flags["full"].append(full[e.id]["high_risk"])
            flags["screen"].append(head.flagged(probs) if decided else full[e.id]["high_risk"])
        a, b = score(spec, gold, pred_full), score(spec, gold, pred_screen)
        diff = paired_difference_intervals(spec, gold, pred_full, pred_screen)  # screen - full
        row = {"task": task, "posts": len(examples), "screened": screened / len(examples)}
        for metric in spec.metrics:
            row[metric] = (a[metric], b[metric], (b[metric] - a[metric], *diff[metric]))
        if spec.high_risk:  # recall of the high-risk flag (P(high) at the operating point), what a reader acts on
            high = np.array([bool(set(g) & set(spec.high_risk)) for g in gold])
            for name, flagged in flags.items():
                row[f"recall_{name}"] = float(np.array(flagged)[high].mean())
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=210)
    ap.add_argument("--block", type=int, default=15)
    ap.add_argument("--heads", help="heads folder with a screen.json (default: the packaged mentalglm-mini)")
    ap.add_argument("--predictions", default="runs/mini2/validation",
                    help="the full stack's validation predictions of these heads (`heads train` writes them)")
    ap.add_argument("--new", help="another heads folder (one with a classifier, say) timed in the same run, with and "
                                  "without --screen, against the same full stack")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                    help="speed: the tasks analysed, on posts of their own corpora (default: the three default tasks)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    heads = load_heads(args.heads)
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, llama.cpp on all cores"
    print(f"{stamp}\n")
    if not args.skip_speed:
        backend, style = open_backend(DEFAULT_MODEL)
        runs = [("full stack", args.heads, False), ("--screen", args.heads, True)]
        if args.new:
            runs += [(f"{args.new}", args.new, False), (f"{args.new} --screen", args.new, True)]
        tasks = tuple(args.tasks.split(","))
        analyzers = {name: Analyzer(backend, AnalyzeConfig(tasks=tasks, style=style, heads=h, explain=False, screen=s))
                     for name, h, s in runs}
        posts, _ = default_task_posts(args.n, tasks)
        rows, seconds = run_interleaved(analyzers, posts, args.block, "labels only")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        speed = {name: len(posts) / seconds[name] for name in analyzers}
        print(f"\nLabels only, {len(posts)} validation posts x {len(tasks)} tasks; peak memory {peak:,.0f} MiB\n")
        print("| run | posts/s | vs full stack | " + " | ".join(f"{t}: screened" for t in tasks) + " |")
        print("|---|---|---|" + "---|" * len(tasks))
        for name, rs in rows.items():
            shares = [np.mean([r.decided_by == "screen" for r in rs if r.task == t]) for t in tasks]
            print(f"| {name} | {speed[name]:.3f} | {speed[name] / speed['full stack']:.2f}x | "
                  + " | ".join(f"{100 * s:.0f}%" for s in shares) + " |")
        backend.close()
    if args.skip_quality:
        return
    print("\nValidation samples: full stack vs --screen, percent; [95% paired interval of screen - full]\n")
    print("| task | posts | screened | metric | full stack | --screen | difference | high-risk flag recall full / screen |")
    print("|---|---|---|---|---|---|---|---|")
    for row in quality(heads, Path(args.predictions)):
        spec = get_task(row["task"])
        for k, metric in enumerate(spec.metrics):
            a, b, d = row[metric]
            lead = f"| {row['task']} | {row['posts']} | {100 * row['screened']:.0f}%" if k == 0 else "| | |"
            recall = (f"{100 * row['recall_full']:.1f} / {100 * row['recall_screen']:.1f}"
                      if k == 0 and "recall_full" in row else "")
            print(f"{lead} | {metric} | {100 * a:.1f} | {100 * b:.1f} | {100 * d[0]:+.1f} [{100 * d[1]:+.1f}, "
                  f"{100 * d[2]:+.1f}] | {recall} |")


if __name__ == "__main__":
    main()
