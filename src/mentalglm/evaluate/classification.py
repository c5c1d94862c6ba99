"""Classification scores from gold and predicted label lists, driven by the task spec.

Invalid (unparseable) predictions stay in the denominator as wrong answers: they are
counted, reported as ``invalid_rate`` and never mapped to a default class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from ..tasks import TaskSpec

INVALID_LABEL = "<invalid>"


def _single(spec: TaskSpec, labels: Sequence[str]) -> str:
    return labels[0] if labels else INVALID_LABEL


def score(spec: TaskSpec, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
          valid: Sequence[bool] | None = None) -> dict[str, float]:
    """Headline scores for one task. ``valid[i]`` False marks an unparseable prediction."""
    n = len(gold)
    if n != len(pred):
        raise ValueError(f"{n} gold rows but {len(pred)} predictions")
    valid = list(valid) if valid is not None else [bool(p) or bool(spec.empty_sentence) for p in pred]
    out: dict[str, float] = {"n": n, "invalid_rate": 1 - sum(valid) / n if n else 0.0}
    if spec.multi_label:
        mlb = MultiLabelBinarizer(classes=spec.label_names)
        y_true, y_pred = mlb.fit_transform(gold), mlb.transform(pred)
        out["accuracy"] = float(np.mean([set(g) == set(p) for g, p in zip(gold, pred)]))  # exact set match
        for avg in ("micro", "macro", "weighted", "samples"):
            out[f"{avg}_f1"] = float(f1_score(y_true, y_pred, average=avg, zero_division=0))
        return out
    y_true = [_single(spec, g) for g in gold]
    y_pred = [_single(spec, p) for p in pred]
    labels = spec.label_names  # invalid predictions count as wrong for every class
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    out["weighted_f1"] = float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    out["macro_f1"] = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    if spec.high_risk:
        high_true = [t in spec.high_risk for t in y_true]
        high_pred = [p in spec.high_risk for p in y_pred]
        key = "high_risk_f1" if len(spec.labels) == 2 else "binary_high_f1"
        out[key] = float(f1_score(high_true, high_pred, zero_division=0))
    if spec.name == "suicide_risk_levels":
        out["within_one"] = float(np.mean([p != INVALID_LABEL and abs(int(p) - int(t)) <= 1
                                           for t, p in zip(y_true, y_pred)]))
    return out
