"""Screening: the heads' character n-gram part decides the posts it is sure of; only the rest reach the model.

The n-gram part of a head scores a post in well under a millisecond; the model's hidden state costs about a
second. ``screen.json`` in a heads folder holds, per task, a calibration of the n-gram scores into probabilities
and the confidence at or above which the n-gram's decision stands (the *operating point*). Both are fitted on the
training split out of fold (``fit_screen``): the n-gram model is refitted without each fold, its held-out scores
calibrated (a scale and a bias per label, as the heads' stacker does), and the operating point is the lowest
confidence at which the held-out decisions are right at least ``precision`` of the time.

A post's confidence is the calibrated probability of the chosen label (single-label), or, for multi-label tasks,
the smallest distance of any label's probability from the side it falls on (every label must be sure). For a
task that can flag a post (suicide risk), the screen never decides *against* high risk: a post it is sure is high
risk stands (and is flagged), any other goes on to the model, so screening never lowers the flag's recall. (An
earlier rule let a low-risk decision stand below a bound on the n-gram's P(high) that 1% of held-out high-risk
posts fell under; against the classifier's flag it let 2 of 95 validation posts the full stack flags through:
docs/scale.md.) Rows say which stage decided them (``decided_by``: ``screen`` or ``model``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .manifest import list_files
from .model import TaskHead, to_probabilities

FILE = "screen.json"
GRID = np.round(np.arange(0.50, 0.995, 0.01), 2)


@dataclass
class TaskScreen:
    scale: np.ndarray  # per label: calibrated logit = scale * n-gram score + bias
    bias: np.ndarray
    threshold: float  # confidence at or above which the screen decides
    info: dict | None = None

    def probabilities(self, head: TaskHead, text: str) -> np.ndarray:
        return to_probabilities((self.scale * head.ngram.scores(text) + self.bias)[None], head.multi_label)[0]

    def decide(self, head: TaskHead, probs: np.ndarray, threshold: float | None = None) -> list[str] | None:
        """The screen's labels for a post, or None when the model must decide."""
        labels, conf = _decision(head.multi_label, probs, head.labels)
        if labels is None or conf < (self.threshold if threshold is None else threshold):
            return None
        if head.high_labels and not set(labels) & set(head.high_labels):
            return None  # never against high risk: the model decides (and flags) every other risk post
        return labels

    def to_json(self) -> dict:
        return {"scale": self.scale.tolist(), "bias": self.bias.tolist(), "threshold": self.threshold,
                "info": self.info or {}}

    @classmethod
    def from_json(cls, d: dict) -> "TaskScreen":
        return cls(np.array(d["scale"]), np.array(d["bias"]), float(d["threshold"]), d.get("info"))


def _decision(multi_label: bool, probs: np.ndarray, names: Sequence[str]) -> tuple[list[str] | None, float]:
    if not multi_label:
        k = int(np.argmax(probs))
        return [names[k]], float(probs[k])
    chosen = [n for n, p in zip(names, probs) if p >= 0.5]
    if not chosen:  # the heads always name a label; the screen cannot, so the model decides
        return None, 0.0
    return chosen, float(np.min(np.abs(probs - 0.5)) * 2)  # 1: every label sure; 0: one label on the fence


def read_screen(folder: Path) -> dict[str, TaskScreen]:
    path = Path(folder) / FILE
    if not path.exists():
        return {}
    return {task: TaskScreen.from_json(d) for task, d in json.loads(path.read_text(encoding="utf-8")).items()}


# ---------------------------------------------------------------------------------------------- fitting
def _calibrate(scores: np.ndarray, y: np.ndarray, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import minimize

    n = y.shape[1]

    def loss(theta):
        logits = theta[:n] * scores + theta[n:]
        if multi_label:
            p = np.clip(1 / (1 + np.exp(-logits)), 1e-7, 1 - 1e-7)
            return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
        logits = logits - logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -(y * logp).sum() / len(y) + 1e-4 * (theta[n:] ** 2).sum()

    if not multi_label:  # one scale shared by every label (as the stacker): rare labels cannot overfit it
        def shared(theta):
            return loss(np.r_[np.full(n, theta[0]), theta[1:]])

        theta = minimize(shared, np.r_[1.0, np.zeros(n)], method="L-BFGS-B").x
        return np.full(n, theta[0]), theta[1:]
    theta = minimize(loss, np.r_[np.ones(n), np.zeros(n)], method="L-BFGS-B").x
    return theta[:n], theta[n:]


def out_of_fold_scores(head: TaskHead, texts: Sequence[str], y: np.ndarray, folds: int = 5, seed: int = 13,
                       max_features: int = 60_000) -> np.ndarray:
    """The head's n-gram model (its settings) refitted without each fold: scores of the held-out posts."""
    from .fit import _folds, _Linear, ngram_vectorizer

    C = float(head.info.get("ngram_C", 10.0))
    kind = head.info.get("ngram_model", "logistic")
    oof = np.zeros(y.shape)
    texts = list(texts)
    for test in _folds(y, folds, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        vectorizer = ngram_vectorizer(max_features)
        x = vectorizer.fit_transform([texts[i] for i in train])
        model = _Linear(head.multi_label, C, seed, kind).fit(x, y[train])
        oof[test] = model.scores(vectorizer.transform([texts[i] for i in test]))
    return oof


def fit_screen(head: TaskHead, texts: Sequence[str], gold: Sequence[Sequence[str]], precision: float = 0.95,
               min_share: float = 0.02, folds: int = 5, seed: int = 13) -> TaskScreen:
    """The task's screen from its training posts, every choice out of fold (see the module's doc)."""
    from .fit import label_matrix
    from ..tasks import get_task

    y = label_matrix(get_task(head.task), gold)
    oof = out_of_fold_scores(head, texts, y, folds, seed)
    scale, bias = _calibrate(oof, y, head.multi_label)
    probs = to_probabilities(scale * oof + bias, head.multi_label)
    decisions = [_decision(head.multi_label, p, head.labels) for p in probs]
    right = np.array([labels is not None and set(labels) == set(g) for (labels, _), g in zip(decisions, gold)])
    screen = TaskScreen(scale, bias, 1.0)
    # The lowest confidence whose decided posts are right at least `precision` of the time (out of fold),
    # among those that decide at least `min_share` of the posts; none: the screen never decides (threshold 1).
    for t in GRID:
        decided = np.array([screen.decide(head, p, t) is not None for p in probs])
        if decided.mean() >= min_share and right[decided].mean() >= precision:
            screen.threshold = float(t)
            break
    decided = np.array([screen.decide(head, p) is not None for p in probs])
    screen.info = {"training_posts": len(y), "folds": folds, "seed": seed, "precision_target": precision,
                   "decided_share_out_of_fold": round(float(decided.mean()), 4),
                   "precision_out_of_fold": round(float(right[decided].mean()), 4) if decided.any() else None}
    return screen


def fit_screens(heads: dict[str, TaskHead], root=None, progress=print) -> dict[str, TaskScreen]:
    """Every head's screen, from its task's training split (``data.sources.task_splits``)."""
    from ..data.sources import task_splits

    out = {}
    for task, head in heads.items():
        train = task_splits(task, root)["train"]
        out[task] = fit_screen(head, [e.text for e in train], [e.labels for e in train])
        progress(f"screen {task}: decides {100 * out[task].info['decided_share_out_of_fold']:.0f}% of the training "
                 f"posts out of fold at confidence {out[task].threshold:.2f}")
    return out


def write_screen(folder: Path, screens: dict[str, TaskScreen]) -> Path:
    """``screen.json`` in a heads folder, listed with its sha256 in the folder's manifest."""
    path = Path(folder) / FILE
    path.write_text(json.dumps({t: s.to_json() for t, s in screens.items()}, ensure_ascii=False, indent=1),
                    encoding="utf-8")
    list_files(folder, [FILE])
    return path
