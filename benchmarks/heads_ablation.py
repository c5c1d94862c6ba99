"""Which change of the heads recipe bought what: each task's head refitted without one change at a time, from the
hidden states already cached, and scored on the recipe's validation samples.

    mentalglm heads train --out runs/mini2          # reads (and caches) the states
    python benchmarks/heads_ablation.py --states runs/mini2/states [--tasks emotion,suicide_risk_levels]

Rows (each is the recipe of ``mentalglm.heads.recipe.Recipe`` with one thing changed):
- ``recipe``: the shipped recipe;
- ``no balanced`` / ``no decision weights``: without the class-balanced state model / the decision weights fitted
  out of fold (only for tasks the recipe gives them);
- ``epidemic posts only`` (emotion): the n-gram and state parts trained on SMP2020's epidemic file alone, as before
  issue #21;
- ``400 state posts`` (levels): the state part on a 400-post sample, as before issue #21.
Fits take seconds to a minute a task; nothing is run through the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from datetime import date
from pathlib import Path

from mentalglm.evaluate.report import METRIC_NAMES
from mentalglm.heads.build import fit_task, prompt_fingerprint
from mentalglm.heads.features import StateCache
from mentalglm.heads.recipe import Recipe
from mentalglm.llm.catalog import REGISTRY
from mentalglm.tasks import get_task


def variants(recipe: Recipe, task: str):
    """(name, recipe, keep) of each ablation row for ``task``."""
    yield "recipe", recipe, None
    if task in recipe.balanced:
        yield "no balanced", dataclasses.replace(recipe, balanced=tuple(t for t in recipe.balanced if t != task)), None
    if task in recipe.decision_metric:
        yield "no decision weights", dataclasses.replace(
            recipe, decision_metric={k: v for k, v in recipe.decision_metric.items() if k != task}), None
    if task == "emotion":
        yield "epidemic posts only", recipe, lambda e: e.source.endswith("virus_train")
    if task == "suicide_risk_levels":
        yield "400 state posts", dataclasses.replace(recipe, state_posts={**recipe.state_posts, task: 400}), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--states", type=Path, default=Path("runs/mini2/states"))
    ap.add_argument("--tasks", default=",".join(Recipe().tasks))
    args = ap.parse_args()
    recipe = Recipe()
    base = REGISTRY[recipe.base]
    cache = StateCache(args.states, {"base": base.name, "base_sha256": base.packaged.sha256,
                                     "prompt": prompt_fingerprint()})
    print(f"{date.today()}, {platform.machine()}; validation samples of the recipe (never used for a choice); "
          "percent; [95% bootstrap interval]\n")
    print("| task | variant | state posts | metric | value | ECE |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        spec = get_task(task)
        for name, variant, keep in variants(recipe, task):
            _, report = fit_task(variant, cache, task, keep=keep)
            stack, ci = report["scores"]["stack"], report["intervals"]
            for i, key in enumerate(spec.metrics):
                first = i == 0
                cells = [task if first and name == "recipe" else "", name if first else "",
                         str(report["state_posts"]) if first else "", METRIC_NAMES.get(key, key),
                         f"{100 * stack[key]:.1f} [{100 * ci[key][0]:.1f}, {100 * ci[key][1]:.1f}]",
                         f"{100 * report['ece_validation']:.1f}" if first else ""]
                print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
