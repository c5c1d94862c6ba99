"""Each task's unsure threshold, chosen on a heads run's validation predictions (never on test posts).

Reads ``<run>/validation/<task>.jsonl`` (written by ``mentalglm heads train``: rows with ``labels`` and ``scores``)
and the gold labels of ``mentalglm.data.sources.task_splits(task)["validation"]`` (joined by id), and computes
each row's confidence as the product does (``mentalglm.heads.unsure.confidence``: the chosen label's probability;
multi-label, the distance of the closest per-label decision to its threshold). A row is right when its labels
are the gold labels (the exact set; the 0-10 scale: the exact level).

The rule: fit the accuracy as a non-decreasing function of the confidence (isotonic regression over the
validation rows); the threshold is the lowest confidence at which the fitted accuracy reaches ``--target``
(default 0.60). Rows under it are in the range where labels are right less than 60% of the time; they carry the
runner-up, and their explanation weighs the two labels. If the fitted accuracy never reaches the target, every
row is unsure (the threshold is above the highest confidence); if it always does, none is.

    python benchmarks/unsure_threshold.py runs/mini2                 # print the thresholds
    python benchmarks/unsure_threshold.py runs/mini2 --write         # and store them in runs/mini2/model
    python benchmarks/unsure_threshold.py runs/mini2 --write --heads src/mentalglm/resources/mentalglm-mini

``--write`` puts ``unsure.json`` into the heads folder and lists it (sha256) in its manifest, where
``mentalglm.heads.load_heads`` reads it; a heads folder without it uses the defaults of ``heads.unsure``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mentalglm.data.sources import task_splits
from mentalglm.heads import load_heads
from mentalglm.heads.unsure import confidence, write_thresholds


def threshold_for(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest confidence at which the isotonic fit of accuracy on confidence reaches ``target``."""
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(conf)
    conf, correct = conf[order], correct[order].astype(float)
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(conf, correct).predict(conf)
    reached = np.flatnonzero(fitted >= target)
    if not len(reached):
        return float(np.nextafter(conf[-1], np.inf))  # never reached: every row is unsure
    return float(conf[reached[0]])


def task_table(task: str, rows: list[dict], head, gold: dict[str, tuple], target: float) -> dict:
    rows = [r for r in rows if r["id"] in gold]
    if not rows:
        raise SystemExit(f"{task}: no validation row's id is in the task's validation split")
    conf = np.array([confidence(head, np.array([r["scores"][n] for n in head.labels]), r["labels"])[0]
                     for r in rows])
    correct = np.array([set(r["labels"]) == set(gold[r["id"]]) for r in rows])
    t = threshold_for(conf, correct, target)
    below = conf < t
    return {"threshold": round(t, 4), "kind": "margin" if head.multi_label else "top_probability",
            "validation_posts": len(rows), "unsure_share": round(float(below.mean()), 4),
            "accuracy": round(float(correct.mean()), 4),
            "accuracy_unsure": round(float(correct[below].mean()), 4) if below.any() else None,
            "accuracy_sure": round(float(correct[~below].mean()), 4) if (~below).any() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a heads run folder (mentalglm heads train --out): validation/<task>.jsonl")
    ap.add_argument("--heads", help="the heads folder (default: <run>/model)")
    ap.add_argument("--target", type=float, default=0.6, help="accuracy under which a row is unsure (default 0.6)")
    ap.add_argument("--data-root", help="corpora folder (default: ../shared/data or $MENTALGLM_DATA)")
    ap.add_argument("--write", action="store_true", help="store unsure.json in the heads folder")
    args = ap.parse_args()
    run = Path(args.run)
    heads_folder = Path(args.heads) if args.heads else run / "model"
    heads = load_heads(heads_folder)
    tasks = {}
    for path in sorted((run / "validation").glob("*.jsonl")):
        task = path.stem
        if task not in heads.heads:
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        gold = {e.id: e.labels for e in task_splits(task, args.data_root)["validation"]}
        tasks[task] = task_table(task, rows, heads.head(task), gold, args.target)
    if not tasks:
        raise SystemExit(f"no validation predictions of {heads.name}'s tasks in {run / 'validation'}")
    table = {"rule": f"lowest confidence at which the isotonic fit of validation accuracy reaches {args.target}",
             "target_accuracy": args.target, "source": str(run / "validation"), "heads": heads.name,
             "command": f"python benchmarks/unsure_threshold.py {args.run}" + (" --write" if args.write else ""),
             "made": time.strftime("%Y-%m-%d"), "tasks": tasks}
    print(json.dumps(table, ensure_ascii=False, indent=1))
    if args.write:
        print(f"wrote {write_thresholds(heads_folder, table)} (listed in {heads_folder / 'manifest.json'})")


if __name__ == "__main__":
    main()
