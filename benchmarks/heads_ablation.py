"""Which change of the heads recipe bought what: each task's head refitted without one change at a time, from the
hidden states already cached, and scored on the recipe's validation samples.

    mentalglm heads train --out runs/mini2          # reads (and caches) the states
    python benchmarks/heads_ablation.py --states runs/mini2/states [--tasks emotion,suicide_risk_levels]

Rows (each is the recipe of ``mentalglm.heads.recipe.Recipe`` with one thing changed), each task overall and,
where its validation sample has several sources (emotion), each source alone:
- ``recipe``: the shipped recipe;
- ``balanced + decision weights``: the state model weighs classes by inverse frequency and the decision is fitted
  out of fold for the task's headline metric (single-label tasks; rejected for the shipped recipe);
- ``epidemic posts only`` (emotion): the n-gram and state parts trained on SMP2020's epidemic file alone.
Fits take seconds to a few minutes a task; nothing is run through the model. The build before the ordinary posts
joined (500 epidemic states) is compared by ``benchmarks/heads_compare.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from datetime import date
from pathlib import Path

from mentalglm.evaluate.classification import score
from mentalglm.evaluate.report import METRIC_NAMES
from mentalglm.heads.build import fit_task, prompt_fingerprint
from mentalglm.heads.features import StateCache
from mentalglm.heads.recipe import Recipe
from mentalglm.llm.catalog import REGISTRY
from mentalglm.tasks import get_task


HEADLINE = {"suicide_risk": "high_risk_f1", "suicide_risk_levels": "accuracy", "emotion": "macro_f1"}


def variants(recipe: Recipe, task: str):
    """(name, recipe, keep) of each ablation row for ``task``."""
    yield "recipe", recipe, None
    if task in HEADLINE:
        yield "balanced + decision weights", dataclasses.replace(
            recipe, balanced=(task,), decision_metric={task: HEADLINE[task]}), None
    if task == "emotion":
        yield "epidemic posts only", recipe, lambda e: e.source.endswith("virus_train")


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
          "percent\n")
    print("| task (posts) | variant | state posts | metric | value | ECE |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        spec = get_task(task)
        val = recipe.validation_examples(task)
        sources = sorted({e.source for e in val})
        for name, variant, keep in variants(recipe, task):
            _, report = fit_task(variant, cache, task, keep=keep)
            chosen = {p["id"]: tuple(p["labels"]) for p in report["predictions"]}
            groups = [(task, val)] + ([(s.split("/")[-1], [e for e in val if e.source == s]) for s in sources]
                                      if len(sources) > 1 else [])
            for label, part in groups:
                scores = score(spec, [e.labels for e in part], [chosen[e.id] for e in part])
                for i, key in enumerate(spec.metrics):
                    first = i == 0
                    cells = [f"{label} ({len(part)})" if first else "", name if first else "",
                             str(report["state_posts"]) if first else "", METRIC_NAMES.get(key, key),
                             f"{100 * scores[key]:.1f}",
                             f"{100 * report['ece_validation']:.1f}" if first and label == task else ""]
                    print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
