"""Which change of the heads recipe bought what: each task's head refitted with one change at a time, from the
hidden states already cached, scored out of fold on its training posts (what recipe choices rest on) and on the
recipe's validation samples (reported, never used for a choice).

    mentalglm heads train                           # reads (and caches) the states
    python benchmarks/heads_ablation.py [--states runs/heads/mentalglm-mini/states] [--tasks emotion,suicide_risk]

Rows (each is the recipe of ``mentalglm.heads.recipe.Recipe`` with one thing changed), each task overall and,
where its validation sample has several sources (emotion), each source alone:
- ``recipe``: the shipped recipe;
- ``last token only`` / ``post mean only``: the state part reads one half of the state (``features.POOLS``);
- ``balanced + decision weights`` (single-label tasks) or ``balanced`` (cognitive distortion): the state model
  weighs classes by inverse frequency (and the decision is fitted out of fold for the task's headline metric);
- ``ordinal state part`` (the 0-10 scale): the state part fitted as a scale (``fit._Linear`` kind ordinal);
- ``400 state posts`` (the 0-10 scale) and ``300 epidemic state posts`` (emotion): the earlier, smaller samples;
- ``epidemic posts only`` (emotion): the n-gram and state parts trained on SMP2020's epidemic file alone.
Fits take seconds to a few minutes a task; nothing is run through the model. Other blocks of the base than the
recipe's: ``benchmarks/heads_layers.py``; the shipped heads against earlier ones: ``benchmarks/heads_compare.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from datetime import date
from pathlib import Path

from mentalglm.evaluate.classification import score
from mentalglm.evaluate.report import METRIC_NAMES
from mentalglm.heads.build import fit_task, state_settings
from mentalglm.heads.features import StateCache
from mentalglm.heads.recipe import Recipe
from mentalglm.tasks import get_task

HEADLINE = {"suicide_risk": "high_risk_f1", "suicide_risk_levels": "accuracy", "emotion": "macro_f1",
            "cognitive_distortion": "micro_f1"}
SHOWN = {"suicide_risk": ("high_risk_f1", "accuracy"), "suicide_risk_levels": ("accuracy", "within_one"),
         "emotion": ("macro_f1", "weighted_f1"), "cognitive_distortion": ("micro_f1", "macro_f1")}
VIRUS = "smp2020_ewect/virus_train"


def variants(recipe: Recipe, task: str):
    """(name, recipe, keep) of each ablation row for ``task``."""
    yield "recipe", recipe, None
    for pool, name in (("last", "last token only"), ("mean", "post mean only")):
        yield name, dataclasses.replace(recipe, state_pool={**recipe.state_pool, task: pool}), None
    if get_task(task).multi_label:
        yield "balanced", dataclasses.replace(recipe, balanced=(task,)), None
    else:
        yield "balanced + decision weights", dataclasses.replace(
            recipe, balanced=(task,), decision_metric={task: HEADLINE[task]}), None
    if task == "suicide_risk_levels":
        yield "ordinal state part", dataclasses.replace(recipe, ordinal=(task,)), None
        yield "400 state posts", dataclasses.replace(recipe, state_posts={**recipe.state_posts, task: 400}), None
    if task == "emotion":
        fewer = {**recipe.state_posts[task], VIRUS: 300}
        yield "300 epidemic state posts", dataclasses.replace(
            recipe, state_posts={**recipe.state_posts, task: fewer}), None
        yield "epidemic posts only", recipe, lambda e: e.source == VIRUS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--states", type=Path, default=Path("runs/heads/mentalglm-mini/states"))
    ap.add_argument("--tasks", default=",".join(Recipe().tasks))
    args = ap.parse_args()
    recipe = Recipe()
    cache = StateCache(args.states, state_settings(recipe))
    print(f"{date.today()}, {platform.machine()}; out of fold: the head's answers on its training posts (5 folds); "
          "validation: the recipe's samples (never used for a choice); percent\n")
    print("| task (validation posts) | variant | state posts | out of fold | validation | ECE |")
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
            metric = HEADLINE[task]
            first = [name, str(report["state_posts"]),
                     f"{METRIC_NAMES.get(metric, metric)} {100 * report['scores_out_of_fold'][metric]:.1f}"]
            ece = f"{100 * report['ece_validation']:.1f}"
            for i, (label, part) in enumerate(groups):
                scores = score(spec, [e.labels for e in part], [chosen[e.id] for e in part])
                shown = ", ".join(f"{METRIC_NAMES.get(k, k)} {100 * scores[k]:.1f}" for k in SHOWN[task])
                cells = [f"{label} ({len(part)})", *(first if i == 0 else ["", "", ""]), shown, ece if i == 0 else ""]
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
