"""Which block of the base should the heads read, and how: each task's head fitted on the states of several depths
(the GGUF cut after block k, llm/truncate.py) and pooled three ways, scored on the recipe's validation sample.

    python benchmarks/heads_layers.py --layers 12,16,20,28 --tasks suicide_risk:all,cognitive_distortion:500

``task:N`` reads N training posts (a stratified sample; ``all``: the whole training split). States are read once
(last token + mean over the post's tokens) and cached under ``--out/L<k>/states`` (resumable); every row refits the
head (``fit_task``, choices out of fold) with the last token's state, the mean, or both. The n-gram part is the same
in every row; ``state`` is the state part alone. Reading costs about k/28 of a full prompt pass a post.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from datetime import date
from pathlib import Path

from mentalglm.heads.build import fit_task, read_states, state_settings
from mentalglm.heads.features import StateCache
from mentalglm.heads.recipe import Recipe

HEADLINE = {"suicide_risk": "high_risk_f1", "cognitive_distortion": "micro_f1", "suicide_risk_levels": "accuracy",
            "emotion": "macro_f1"}
MORE = ("macro_f1", "within_one")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="12,16,20,28", help="blocks kept, comma-separated (28: the whole 1.5B)")
    ap.add_argument("--tasks", default="suicide_risk:all", help="task:N (N training posts, or all), comma-separated")
    ap.add_argument("--out", type=Path, default=Path("runs/layers"))
    ap.add_argument("--pools", default="last,mean,last+mean")
    ap.add_argument("--read-only", action="store_true", help="read (and cache) the states, fit nothing")
    args = ap.parse_args()
    jobs = [(t, None if n == "all" else int(n)) for t, n in (x.split(":") for x in args.tasks.split(","))]
    layers = [int(k) for k in args.layers.split(",")]
    base = Recipe()

    def recipe_for(task, n, k):
        return dataclasses.replace(base, tasks=(task,), layers=k, state_posts={**base.state_posts, task: n},
                                   state_pool={task: "last+mean"})

    for task, n in jobs:  # every depth of a task before the next task: its rows come early
        for k in layers:
            started = time.time()
            read_states(recipe_for(task, n, k), args.out / f"L{k}")
            print(f"states {task} L{k}: {time.time() - started:.0f} s", flush=True)
    if args.read_only:
        return
    print(f"\n{date.today()}, {platform.machine()}, {platform.processor() or 'cpu'}; validation samples of the recipe "
          "(never used for a choice); percent\n")
    print("| task (train posts with a state, validation posts) | block | pool | head, out of fold (train) | "
          "head | state part | n-gram part | other |")
    print("|---|---|---|---|---|---|---|---|")
    for task, n in jobs:
        for k in layers:
            recipe = recipe_for(task, n, k)
            cache = StateCache(args.out / f"L{k}" / "states", state_settings(recipe))
            for part in args.pools.split(","):  # the cache serves each half of the last+mean states it holds
                head, report = fit_task(dataclasses.replace(recipe, state_pool={task: part}), cache, task)
                scores, metric = report["scores"], HEADLINE[task]
                other = ", ".join(f"{m} {100 * scores['stack'][m]:.1f}" for m in MORE
                                  if m in scores["stack"] and m != metric)
                print(f"| {task} ({report['state_posts']}, {report['validation_posts']}) | {k} | {part} | "
                      f"{100 * report['scores_out_of_fold'][metric]:.1f} | "
                      f"{metric} {100 * scores['stack'][metric]:.1f} | {100 * scores['state'][metric]:.1f} | "
                      f"{100 * scores['ngram'][metric]:.1f} | {other} |", flush=True)


if __name__ == "__main__":
    main()
