"""Classification scores from gold and predicted label lists, driven by the task spec.

Invalid (unparseable) predictions stay in the denominator as wrong answers: they are
counted, reported as ``invalid_rate`` and never mapped to a default class. An invalid row
is a false negative for its gold class(es) and a false positive for none.

Every metric is computed from label-indicator matrices weighted per post, so the point
estimate (all weights 1) and each bootstrap resample (weights = how often a post was
drawn) go through the same code, and 1000 resamples cost one matrix product. Averages
follow scikit-learn with ``zero_division=0`` (tests check that they agree).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..tasks import TaskSpec

INVALID_LABEL = "<invalid>"
BOOTSTRAP_SEED = 13
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class _Encoded:
    gold: np.ndarray  # (n, L) bool
    pred: np.ndarray  # (n, L) bool; all False for invalid rows
    valid: np.ndarray  # (n,) bool


def _encode(spec: TaskSpec, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
            valid: Sequence[bool] | None) -> _Encoded:
    n = len(gold)
    if n != len(pred):
        raise ValueError(f"{n} gold rows but {len(pred)} predictions")
    if valid is None:  # no parse status given: an empty answer is invalid unless "no label" is a valid answer
        valid = [bool(p) or bool(spec.empty_sentence) for p in pred]
    valid = np.asarray(list(valid), dtype=bool)
    if len(valid) != n:
        raise ValueError(f"{n} gold rows but {len(valid)} validity flags")
    index = {name: i for i, name in enumerate(spec.label_names)}
    g = np.zeros((n, len(index)), dtype=bool)
    p = np.zeros((n, len(index)), dtype=bool)
    for row, (gl, pl) in enumerate(zip(gold, pred)):
        for name in gl:
            if name not in index:
                raise ValueError(f"gold row {row}: task {spec.name!r} has no label {name!r}")
            g[row, index[name]] = True
        if not valid[row]:
            continue
        if not spec.multi_label:
            if not pl:  # a single-label answer without a label is not an answer
                valid[row] = False
                continue
            pl = pl[:1]
        for name in pl:
            if name not in index:
                raise ValueError(f"prediction row {row}: task {spec.name!r} has no label {name!r}")
            p[row, index[name]] = True
    return _Encoded(g, p, valid)


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def _micro(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    gf, pf = g.astype(float), p.astype(float)
    tp = (w @ (gf * pf)).sum(1)
    fp = (w @ ((1 - gf) * pf)).sum(1)
    fn = (w @ (gf * (1 - pf))).sum(1)
    return _f1(tp, fp, fn)


def _metrics(spec: TaskSpec, enc: _Encoded, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every headline metric for each row of weights ``w`` (shape (B, n)) -> arrays of shape (B,)."""
    g, p, valid = enc.gold, enc.pred, enc.valid
    gf, pf = g.astype(float), p.astype(float)
    total = w.sum(1)
    out = {"invalid_rate": (w @ (~valid)) / total}
    tp, fp, fn = w @ (gf * pf), w @ ((1 - gf) * pf), w @ (gf * (1 - pf))
    f1 = _f1(tp, fp, fn)
    support = tp + fn
    out["macro_f1"] = f1.mean(1)
    out["weighted_f1"] = np.divide((f1 * support).sum(1), support.sum(1), out=np.zeros(len(w)),
                                   where=support.sum(1) > 0)
    if spec.multi_label:
        out["accuracy"] = (w @ ((g == p).all(1) & valid)) / total  # exact set match
        out["micro_f1"] = _f1(tp.sum(1), fp.sum(1), fn.sum(1))
        inter, sizes = (g & p).sum(1), g.sum(1) + p.sum(1)
        per_post = np.divide(2 * inter, sizes, out=np.zeros(len(g)), where=sizes > 0)
        out["samples_f1"] = (w @ per_post) / total
    else:
        out["accuracy"] = (w @ (g & p).any(1)) / total
    if spec.high_risk:
        high = np.array([name in spec.high_risk for name in spec.label_names])
        h_true, h_pred = g[:, high].any(1), p[:, high].any(1)
        key = "high_risk_f1" if len(spec.labels) == 2 else "binary_high_f1"
        out[key] = _micro(h_true[:, None], h_pred[:, None], w)
        if len(spec.labels) > 2:  # the 11-level scale collapsed to low (0-5) / high (6-10)
            out["binary_accuracy"] = (w @ ((h_true == h_pred) & valid)) / total
    if spec.ordinal:  # levels of one scale: one level off counts as near
        levels = np.array([int(n) for n in spec.label_names])
        gold_level = levels[g.argmax(1)]
        pred_level = levels[p.argmax(1)]
        out["within_one"] = (w @ (valid & (np.abs(gold_level - pred_level) <= 1))) / total
    if spec.hierarchy:  # cognitive pathway: parents (level 1), children (level 2), both pooled (overall)
        to_parent = np.array([[lab.parent == parent for parent in spec.hierarchy] for lab in spec.labels])
        g1, p1 = (gf @ to_parent) > 0, (pf @ to_parent) > 0
        out["level1_micro_f1"] = _micro(g1, p1, w)
        out["level2_micro_f1"] = _micro(g, p, w)
        out["overall_micro_f1"] = _micro(np.hstack([g1, g]), np.hstack([p1, p]), w)
    return out


def score(spec: TaskSpec, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
          valid: Sequence[bool] | None = None) -> dict[str, float]:
    """Headline scores for one task. ``valid[i]`` False marks an unparseable prediction."""
    enc = _encode(spec, gold, pred, valid)
    n = len(enc.valid)
    if n == 0:
        return {"n": 0, "invalid_rate": 0.0}
    return {"n": n, **{k: float(v[0]) for k, v in _metrics(spec, enc, np.ones((1, n))).items()}}


def bootstrap_intervals(spec: TaskSpec, gold, pred, valid=None, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over posts: ``resamples`` draws of n posts with replacement.

    The same seed gives the same intervals, so reports are reproducible to the digit."""
    enc = _encode(spec, gold, pred, valid)
    n = len(enc.valid)
    if n == 0 or resamples <= 0:
        return {}
    return _percentiles(_metrics(spec, enc, _resample_weights(n, resamples, seed)), level)


def paired_difference_intervals(spec: TaskSpec, gold, pred_a, pred_b, valid_a=None, valid_b=None,
                                resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                                level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Intervals of metric(b) - metric(a) with both systems scored on the same resampled posts.

    Pairing matters: two systems' separate intervals overlap far more than the interval of their
    difference, which is the question a comparison asks (an interval holding 0 is not a demonstrated gain)."""
    enc_a, enc_b = _encode(spec, gold, pred_a, valid_a), _encode(spec, gold, pred_b, valid_b)
    n = len(enc_a.valid)
    if n == 0 or resamples <= 0:
        return {}
    weights = _resample_weights(n, resamples, seed)
    a, b = _metrics(spec, enc_a, weights), _metrics(spec, enc_b, weights)
    return _percentiles({k: b[k] - a[k] for k in a}, level)


def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n): how often each post is drawn in each resample of n posts with replacement."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def _percentiles(values: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    tail = (1 - level) / 2 * 100
    return {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for k, v in values.items()}


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, multi_label: bool, bins: int = 10) -> float:
    """ECE over ``bins`` equal-width bins: of the top label (single-label rows of a softmax), or of every label's
    own probability (multi-label rows of sigmoids). ``gold`` is the one-/multi-hot matrix over the same labels."""
    if multi_label:
        conf, hit = probs.ravel(), gold.ravel().astype(float)
    else:
        conf, hit = probs.max(1), (probs.argmax(1) == gold.argmax(1)).astype(float)
    which = np.clip(np.digitize(conf, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    return float(sum(abs(conf[which == b].mean() - hit[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def per_class(spec: TaskSpec, gold, pred, valid=None) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every label (per label for multi-label tasks)."""
    enc = _encode(spec, gold, pred, valid)
    gf, pf = enc.gold.astype(float), enc.pred.astype(float)
    tp, fp, fn = (gf * pf).sum(0), ((1 - gf) * pf).sum(0), (gf * (1 - pf)).sum(0)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    f1 = _f1(tp, fp, fn)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(tp[i] + fn[i]), "predicted": int(tp[i] + fp[i])}
            for i, name in enumerate(spec.label_names)}


def confusion(spec: TaskSpec, gold, pred, valid=None) -> dict | None:
    """Gold rows x predicted columns (labels, then ``<invalid>``) for single-label tasks; None for multi-label,
    whose per-label scores say the same thing."""
    if spec.multi_label:
        return None
    enc = _encode(spec, gold, pred, valid)
    labels = spec.label_names
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=int)
    for g_row, p_row, ok in zip(enc.gold, enc.pred, enc.valid):
        if g_row.any():
            matrix[g_row.argmax(), p_row.argmax() if ok else len(labels)] += 1
    return {"labels": labels, "columns": [*labels, INVALID_LABEL], "matrix": matrix.tolist()}


@dataclass
class ScoreCard:
    """Everything ``eval score`` and the report show for one system on one task."""

    task: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_class: dict[str, dict[str, float]]
    confusion: dict | None
    bootstrap: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        return d


def evaluate(spec: TaskSpec, gold, pred, valid=None, resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = BOOTSTRAP_SEED) -> ScoreCard:
    return ScoreCard(spec.name, len(gold), score(spec, gold, pred, valid),
                     bootstrap_intervals(spec, gold, pred, valid, resamples, seed),
                     per_class(spec, gold, pred, valid), confusion(spec, gold, pred, valid),
                     {"resamples": resamples, "seed": seed, "level": 0.95})
