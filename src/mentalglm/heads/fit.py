"""Fitting a task head (``model.TaskHead``) with every choice made out of fold.

Validation posts are only scored, never used for a choice: the regularisation of both linear
models, the stacker, the multi-label thresholds and the risk operating point all come from
``folds``-fold cross-fitting on the training split, so the validation numbers stay honest.

The shipped linear models are the *average of the fold models* (for a linear model, the average of
their scores is the score of their averaged weights), not a refit on all posts: a refit is more
confident on new posts than the fold models whose out-of-fold scores the stacker, thresholds and
risk threshold were fitted on, so the calibration learned out of fold would not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..tasks import get_task
from .model import NgramScorer, StateScorer, TaskHead


@dataclass
class Fitted:
    head: TaskHead
    oof: np.ndarray  # out-of-fold probabilities of the whole head on the state posts


def label_matrix(spec, gold: Sequence[Sequence[str]]) -> np.ndarray:
    """One-hot (single-label) or multi-hot rows over the spec's labels."""
    index = {n: i for i, n in enumerate(spec.label_names)}
    y = np.zeros((len(gold), len(index)), dtype=np.int8)
    for r, labels in enumerate(gold):
        for lab in labels:
            y[r, index[lab]] = 1
    return y


def ngram_vectorizer(max_features: int = 60_000):
    """The character 1-3-gram TF-IDF of every head's n-gram part (``NgramScorer`` reproduces it at inference)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, max_features=max_features,
                           sublinear_tf=True, dtype=np.float64)


def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    strata = y.argmax(1) if y.shape[1] > 1 else y[:, 0]  # multi-label: stratify by the first label
    counts = np.bincount(strata, minlength=y.shape[1])
    strata = np.where(counts[strata] >= k, strata, -1)  # rare strata pooled, so every fold can be drawn
    return [test for _, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), strata)]


def _average(models: list["_Linear"]) -> "_Linear":
    out = models[0]
    out.coef = np.mean([m.coef for m in models], axis=0)
    out.intercept = np.mean([m.intercept for m in models], axis=0)
    return out


class _Linear:
    """A linear model giving one score per label: logistic regression (multinomial for single-label tasks), or
    a class-balanced linear SVM (``kind="svm"``, the n-gram baseline's model: its margins are scores the
    stacker calibrates), or (``kind="ordinal"``, single-label tasks whose labels are a scale in order) a ridge
    regression of the label's rank read as a Gaussian around the prediction: score_k = (k * yhat - k^2 / 2) / var,
    linear in the features (the yhat^2 term is the same for every label and cancels in the softmax), so neighbouring
    levels share what is learned. Multi-label tasks get one binary model per label."""

    def __init__(self, multi_label: bool, C: float, seed: int, kind: str = "logistic", balanced: bool = False):
        self.multi_label, self.C, self.seed, self.kind, self.balanced = multi_label, C, seed, kind, balanced

    def _model(self, binary: bool):
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        if self.kind == "svm":
            return LinearSVC(C=self.C, class_weight="balanced", random_state=self.seed)
        # liblinear is fast on sparse binary problems; lbfgs fits the multinomial model.
        return LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced" if self.balanced else None,
                                  **({"solver": "liblinear"} if binary else {}))

    def fit(self, x, y: np.ndarray) -> "_Linear":
        n_labels = y.shape[1]
        self.coef = np.zeros((n_labels, x.shape[1]))
        self.intercept = np.zeros(n_labels)
        if self.kind == "ordinal":
            from sklearn.linear_model import Ridge

            rank = y.argmax(1).astype(np.float64)
            m = Ridge(alpha=1.0 / self.C).fit(x, rank)
            var = max(float(np.mean((m.predict(x) - rank) ** 2)), 1e-3)
            k = np.arange(n_labels, dtype=np.float64)
            self.coef, self.intercept = np.outer(k / var, m.coef_), (k * m.intercept_ - k ** 2 / 2) / var
            return self
        if self.multi_label:
            for j in range(n_labels):
                if 0 < y[:, j].sum() < len(y):  # a label never (or always) seen keeps a zero weight
                    m = self._model(binary=True).fit(x, y[:, j])
                    self.coef[j], self.intercept[j] = m.coef_[0], m.intercept_[0]
                else:
                    self.intercept[j] = -10.0 if y[:, j].sum() == 0 else 10.0
            return self
        classes = np.flatnonzero(y.sum(0))
        m = self._model(binary=False).fit(x, y.argmax(1))
        if len(classes) == 2:  # sklearn keeps one row for two classes: score = [0, w.x + b]
            self.coef[classes[1]], self.intercept[classes[1]] = m.coef_[0], m.intercept_[0]
        else:
            self.coef[classes], self.intercept[classes] = m.coef_, m.intercept_
        absent = np.setdiff1d(np.arange(n_labels), classes)
        self.intercept[absent] = -30.0
        return self

    def scores(self, x) -> np.ndarray:
        return np.asarray(x @ self.coef.T) + self.intercept


def _log_loss(y: np.ndarray, scores: np.ndarray, multi_label: bool) -> float:
    if multi_label:
        p = np.clip(1 / (1 + np.exp(-scores)), 1e-7, 1 - 1e-7)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    s = scores - scores.max(1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    return float(-(y * logp).sum(1).mean())


def _cross_fit(x, y, folds, multi_label, grid, seed, balanced=False,
               kind="logistic") -> tuple[float, np.ndarray, "_Linear"]:
    """(best C by out-of-fold log loss, its out-of-fold scores, the average of its fold models)."""
    best = None
    for C in grid:
        oof = np.zeros(y.shape, dtype=np.float64)
        models = []
        for test in folds:
            train = np.setdiff1d(np.arange(len(y)), test)
            models.append(_Linear(multi_label, C, seed, kind, balanced).fit(x[train], y[train]))
            oof[test] = models[-1].scores(x[test])
        loss = _log_loss(y, oof, multi_label)
        if best is None or loss < best[0]:
            best = (loss, C, oof, models)
    return best[1], best[2], _average(best[3])


def _stacker(ngram: np.ndarray, state: np.ndarray, y: np.ndarray, multi_label: bool, seed: int):
    """(coef, intercept) of the stacker on the two models' scores."""
    from sklearn.linear_model import LogisticRegression

    n = y.shape[1]
    x = np.hstack([ngram, state])
    if multi_label:  # one model per label over that label's two scores (every label's scores overfit: measured)
        coef, intercept = np.zeros((n, x.shape[1])), np.full(n, -10.0)
        for j in range(n):
            if 0 < y[:, j].sum() < len(y):
                m = LogisticRegression(C=1.0, max_iter=2000).fit(x[:, [j, n + j]], y[:, j])
                coef[j, [j, n + j]], intercept[j] = m.coef_[0], m.intercept_[0]
        return coef, intercept
    # Single-label: logits_k = a * ngram_k + b * state_k + c_k. Two weights shared by every label (plus a bias
    # each) rather than a full matrix: the stacker learns from the few hundred posts with a state, where a full
    # matrix over six emotions overfits the rare ones (measured: below the n-gram part alone on validation).
    from scipy.optimize import minimize

    def loss(theta):
        logits = theta[0] * ngram + theta[1] * state + theta[2:]
        logits = logits - logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -(y * logp).sum() / len(y) + 1e-4 * (theta[2:] ** 2).sum()

    theta = minimize(loss, np.r_[1.0, 1.0, np.zeros(n)], method="L-BFGS-B").x
    return np.hstack([theta[0] * np.eye(n), theta[1] * np.eye(n)]), theta[2:]


def best_thresholds(y: np.ndarray, p: np.ndarray, passes: int = 3) -> np.ndarray:
    """Per-label probability thresholds that maximise micro F1 on (out-of-fold) predictions.

    Micro F1 (the task's headline) pools every label's decisions, so a threshold is good for what it does to
    the total, not to its own label's F1 (which would flag rare labels too eagerly): start from the best
    single threshold for all labels, then move one label's threshold at a time while the total improves."""
    y = y.astype(bool)
    grid = np.unique(np.round(np.quantile(p, np.linspace(0, 1, 101)), 4))

    def micro(t: np.ndarray) -> float:  # with the decision rule of TaskHead.decide: at least one label
        pred = p >= t
        empty = ~pred.any(1)
        pred[empty, np.argmax(p[empty] - t, axis=1)] = True
        return 2 * (pred & y).sum() / max(1, pred.sum() + y.sum())

    seen = y.sum(0) > 0
    out = np.full(y.shape[1], max(grid, key=lambda t: micro(np.where(seen, t, 1.0))))
    out[~seen] = 1.0  # a label never seen in training is never chosen
    for _ in range(passes):
        for j in np.flatnonzero(seen):
            trial = out.copy()
            scores = []
            for c in np.concatenate([[out[j]], grid]):
                trial[j] = c
                scores.append((micro(trial), c))
            out[j] = max(scores, key=lambda s: s[0])[1]  # ties keep the current threshold (listed first)
    return out


def decision_weights(spec, y: np.ndarray, p: np.ndarray, metric: str, passes: int = 2) -> np.ndarray:
    """Per-label weights w for a single-label decision argmax(p * w) that maximise ``metric`` on (out-of-fold)
    probabilities: from all ones, one label at a time over a grid, while the metric improves. Argmax is best
    for accuracy; macro F1 (emotion's headline) rewards choosing rare labels more often than their probability
    alone would. The probabilities stay as they are, calibrated: only the choice moves."""
    from ..evaluate.classification import score

    names = spec.label_names
    gold = [(names[i],) for i in y.argmax(1)]

    def value(w: np.ndarray) -> float:
        return score(spec, gold, [(names[i],) for i in (p * w).argmax(1)])[metric]

    w, best = np.ones(p.shape[1]), value(np.ones(p.shape[1]))
    for _ in range(passes):
        for j in np.flatnonzero(y.sum(0)):
            for g in np.exp(np.linspace(-1.5, 1.5, 13)):
                trial = w.copy()
                trial[j] = g
                if (v := value(trial)) > best + 1e-9:  # ties keep the current weight
                    w, best = trial, v
    return w


def recall_threshold(is_high: np.ndarray, p_high: np.ndarray, recall: float) -> float:
    """The largest threshold on P(high) whose recall of the high posts is at least ``recall``."""
    scores = np.sort(p_high[is_high.astype(bool)])[::-1]
    if not len(scores):
        return 0.5
    k = int(np.ceil(recall * len(scores))) - 1  # the k-th highest high-risk score must be flagged
    return float(scores[min(k, len(scores) - 1)])


def fit_head(task: str, texts_all: Sequence[str], gold_all: Sequence[Sequence[str]],
             texts_s: Sequence[str], states: np.ndarray, gold_s: Sequence[Sequence[str]], *, folds: int = 5,
             seed: int = 13, C_grid=(0.01, 0.1), ngram_C_grid=(3.0, 10.0), risk_recall: float = 0.9,
             max_features: int = 60_000, ngram_model: str = "logistic", balanced: bool = False,
             decision_metric: str | None = None, state_model: str = "logistic") -> Fitted:
    """Fit the n-gram model on every training post (``texts_all``), the state model on the posts with a
    state (``texts_s``/``states``, a subset), and the stacker on their out-of-fold scores. ``balanced`` weighs
    the state model's classes by their inverse frequency; ``decision_metric`` (single-label) fits decision
    weights for that metric out of fold (``decision_weights``); ``state_model="ordinal"`` fits the state part as a
    scale (``_Linear``), its regularisation ``1 / C`` chosen from ``C_grid`` in the same way."""
    spec = get_task(task)
    multi = spec.multi_label
    if state_model == "ordinal" and multi:
        raise ValueError(f"{task} is multi-label: an ordinal state part needs one label a post on a scale")
    y_all, y_s = label_matrix(spec, gold_all), label_matrix(spec, gold_s)

    vectorizer = ngram_vectorizer(max_features)
    x_all = vectorizer.fit_transform(list(texts_all))
    ngram_C = ngram_C_grid[0]
    if len(ngram_C_grid) > 1:
        ngram_C, _, _ = _cross_fit(x_all, y_all, _folds(y_all, folds, seed), multi, ngram_C_grid, seed)

    # Out-of-fold scores on the state posts: the n-gram model refitted without each fold of them.
    folds_s = _folds(y_s, folds, seed)
    x_s_ngram = vectorizer.transform(list(texts_s))
    position = {t: i for i, t in enumerate(texts_all)}
    in_all = np.array([position.get(t, -1) for t in texts_s])
    ngram_oof = np.zeros(y_s.shape)
    ngram_models = []
    for test in folds_s:
        held = set(in_all[test][in_all[test] >= 0].tolist())
        keep = np.array([i for i in range(len(texts_all)) if i not in held])
        ngram_models.append(_Linear(multi, ngram_C, seed, ngram_model).fit(x_all[keep], y_all[keep]))
        ngram_oof[test] = ngram_models[-1].scores(x_s_ngram[test])
    ngram = _average(ngram_models)

    mean, scale = states.mean(0), states.std(0) + 1e-6
    z = (states - mean) / scale
    state_C, state_oof, state = _cross_fit(z, y_s, folds_s, multi, C_grid, seed, balanced, state_model)

    coef, intercept = _stacker(ngram_oof, state_oof, y_s, multi, seed)
    head = TaskHead(task, spec.label_names, multi,
                    NgramScorer(dict(vectorizer.vocabulary_), vectorizer.idf_, ngram.coef, ngram.intercept),
                    StateScorer(mean, scale, state.coef, state.intercept), coef, intercept,
                    high_labels=list(spec.high_risk))
    # Out-of-fold probabilities of the whole head (the stacker refitted without each fold).
    stack_oof = np.zeros(y_s.shape)
    for test in folds_s:
        train = np.setdiff1d(np.arange(len(y_s)), test)
        c, b = _stacker(ngram_oof[train], state_oof[train], y_s[train], multi, seed)
        fold_head = TaskHead(task, head.labels, multi, head.ngram, head.state, c, b)
        stack_oof[test] = fold_head.probabilities_from_scores(ngram_oof[test], state_oof[test])
    if multi:
        head.thresholds = best_thresholds(y_s, stack_oof)
    elif decision_metric:
        head.weights = decision_weights(spec, y_s, stack_oof, decision_metric)
    if head.high_labels:
        is_high = y_s[:, [head.labels.index(h) for h in head.high_labels]].sum(1) > 0
        p_high = stack_oof[:, [head.labels.index(h) for h in head.high_labels]].sum(1)
        head.risk_threshold = recall_threshold(is_high, p_high, risk_recall)
    head.info = {"ngram_model": ngram_model, "ngram_C": ngram_C, "state_C": state_C, "train_posts": len(texts_all),
                 "state_posts": len(texts_s), "folds": folds, "seed": seed, "balanced": balanced,
                 "decision_metric": decision_metric, "state_model": state_model}
    return Fitted(head, stack_oof)
