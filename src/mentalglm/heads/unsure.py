"""Unsure rows: when a head's decision is close, the row names the runner-up label with its probability.

A decision's *confidence* is one number per row:

- single-label tasks: the probability of the chosen label; the runner-up is the most probable other label;
- multi-label tasks: the distance of the closest per-label decision to its threshold (``min`` over the chosen
  labels' ``p - threshold`` and the runner-up's ``threshold - p``; negative when no label reached its threshold
  and the nearest was taken); the runner-up is the unchosen label nearest to its threshold.

A row is unsure when its confidence is below the task's threshold. Thresholds are chosen on validation
predictions (``fit_thresholds``: the confidence below which labels are right less than 60% of the time) by
``mentalglm heads train`` (or ``benchmarks/unsure_threshold.py`` for an earlier run) and stored in the heads
folder as ``unsure.json``, listed in its manifest; a folder without it uses ``DEFAULT_SINGLE`` / ``DEFAULT_MULTI``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .manifest import list_files
from .model import TaskHead

FILE = "unsure.json"
# A calibrated probability under 0.6 is a label right less than 60% of the time (the rule the benchmark
# applies); the multi-label margin is a plain default, not measured.
DEFAULT_SINGLE = 0.6
DEFAULT_MULTI = 0.1


def default_threshold(multi_label: bool) -> float:
    return DEFAULT_MULTI if multi_label else DEFAULT_SINGLE


def confidence(head: TaskHead, probs: np.ndarray, labels: list[str]) -> tuple[float, str | None]:
    """(the decision's confidence, the runner-up label) for a row whose chosen labels are ``labels``."""
    others = [i for i, name in enumerate(head.labels) if name not in labels]
    if not head.multi_label:
        chosen = head.labels.index(labels[0])
        runner = max(others, key=lambda i: probs[i]) if others else None
        return float(probs[chosen]), (head.labels[runner] if runner is not None else None)
    margin = np.asarray(probs) - head.thresholds
    closest = [float(margin[head.labels.index(name)]) for name in labels]
    runner = max(others, key=lambda i: margin[i]) if others else None
    if runner is not None:
        closest.append(float(-margin[runner]))
    return min(closest), (head.labels[runner] if runner is not None else None)


def runner_up(head: TaskHead, probs: np.ndarray, labels: list[str], threshold: float) -> dict | None:
    """``{"label": ..., "p": ...}`` when the row is unsure (confidence under ``threshold``), else None."""
    if not labels:
        return None
    value, runner = confidence(head, probs, labels)
    if runner is None or value >= threshold:
        return None
    return {"label": runner, "p": round(float(probs[head.labels.index(runner)]), 4)}


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


def task_threshold(head: TaskHead, rows: list[dict], gold: dict[str, tuple], target: float) -> dict:
    """A task's threshold from its validation predictions (rows with ``id``, ``labels``, ``scores``) and the gold
    labels by id, with the share of unsure rows and the accuracy on either side. A row is right when its labels are
    the gold labels (the exact set; the 0-10 scale: the exact level)."""
    rows = [r for r in rows if r["id"] in gold]
    if not rows:
        raise ValueError(f"{head.task}: no validation row's id is in the task's validation split")
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


def fit_thresholds(heads: dict[str, TaskHead], predictions: dict[str, list[dict]], gold: dict[str, dict],
                   target: float = 0.6, source: str = "", command: str = "") -> dict:
    """The ``unsure.json`` table: each task's ``task_threshold`` on its validation predictions."""
    import time

    return {"rule": f"lowest confidence at which the isotonic fit of validation accuracy reaches {target}",
            "target_accuracy": target, "source": source, "command": command, "made": time.strftime("%Y-%m-%d"),
            "tasks": {t: task_threshold(heads[t], predictions[t], gold[t], target) for t in predictions}}


def read_thresholds(folder: Path, manifest: dict) -> dict[str, float]:
    """task -> threshold from the folder's ``unsure.json``, if the manifest lists it (its sha256 already checked)."""
    if FILE not in manifest.get("files", {}):
        return {}
    table = json.loads((folder / FILE).read_text(encoding="utf-8"))
    return {task: float(row["threshold"]) for task, row in table["tasks"].items()}


def write_thresholds(folder: Path, table: dict) -> Path:
    """``unsure.json`` into a heads folder, listed with its sha256 in the folder's manifest."""
    path = folder / FILE
    path.write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8")
    list_files(folder, [FILE], unsure={task: row["threshold"] for task, row in table["tasks"].items()})
    return path
