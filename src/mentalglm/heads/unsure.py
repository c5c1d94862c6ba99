"""Unsure rows: when a head's decision is close, the row names the runner-up label with its probability.

A decision's *confidence* is one number per row:

- single-label tasks: the probability of the chosen label; the runner-up is the most probable other label;
- multi-label tasks: the distance of the closest per-label decision to its threshold (``min`` over the chosen
  labels' ``p - threshold`` and the runner-up's ``threshold - p``; negative when no label reached its threshold
  and the nearest was taken); the runner-up is the unchosen label nearest to its threshold.

A row is unsure when its confidence is below the task's threshold. Thresholds are chosen on validation
predictions by ``benchmarks/unsure_threshold.py`` (the confidence below which labels are right less than 60% of
the time) and stored in the heads folder as ``unsure.json``, listed in its manifest; a folder without it uses
``DEFAULT_SINGLE`` / ``DEFAULT_MULTI``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import file_sha256
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
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"] = {**manifest["files"], FILE: file_sha256(path)}
    manifest["unsure"] = {task: row["threshold"] for task, row in table["tasks"].items()}
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
