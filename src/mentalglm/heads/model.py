"""A task head: label probabilities from a post's characters and the base model's hidden state.

Two linear models score every label of the task, and a small stacker turns their two scores into
calibrated probabilities:

- a character 1-3-gram TF-IDF model (carries the frequent labels and the corpus's own words),
- a linear model on the hidden state at the end of the ``heads`` prompt (carries meaning: rare
  labels, paraphrase),
- the stacker, fitted on out-of-fold scores of both, so its weights say how much each is trusted.

Single-label tasks get a softmax over their labels; multi-label tasks one sigmoid per label and a
per-label threshold. Everything is plain arrays (``<task>.npz``) and JSON (``<task>.json``: labels,
vocabulary, thresholds); inference is numpy only, so a head loads in milliseconds and runs anywhere.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_SPACES = re.compile(r"\s\s+")


def to_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Rows of logits to probabilities: a sigmoid per label (multi-label) or a softmax over the labels."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def char_ngrams(text: str, low: int, high: int) -> list[str]:
    """scikit-learn's ``analyzer="char"`` (lower case, runs of white space as one space)."""
    text = _SPACES.sub(" ", text.lower())
    return [text[i:i + n] for n in range(low, high + 1) for i in range(len(text) - n + 1)]


@dataclass
class NgramScorer:
    vocabulary: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray  # (labels, vocabulary)
    intercept: np.ndarray
    ngram_range: tuple[int, int] = (1, 3)

    def features(self, text: str) -> np.ndarray:
        counts: dict[int, int] = {}
        for gram in char_ngrams(text, *self.ngram_range):
            j = self.vocabulary.get(gram)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        x = np.zeros(len(self.idf), dtype=np.float64)
        for j, c in counts.items():
            x[j] = (1.0 + math.log(c)) * self.idf[j]  # sublinear tf
        norm = np.linalg.norm(x)
        return x / norm if norm else x

    def scores(self, text: str) -> np.ndarray:
        return self.coef @ self.features(text) + self.intercept


@dataclass
class StateScorer:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (labels, hidden size)
    intercept: np.ndarray

    def scores(self, state: np.ndarray) -> np.ndarray:
        return self.coef @ ((np.asarray(state, dtype=np.float64) - self.mean) / self.scale) + self.intercept


QUOTE_CHARS = 40  # the longest clause an explanation is started with


@dataclass
class TaskHead:
    task: str
    labels: list[str]
    multi_label: bool
    ngram: NgramScorer
    state: StateScorer
    # Stacker: logits = stack_coef @ [ngram scores, state scores] + stack_intercept, then a softmax
    # (single-label) or a sigmoid per label (multi-label).
    stack_coef: np.ndarray
    stack_intercept: np.ndarray
    thresholds: np.ndarray | None = None  # multi-label: per-label decision thresholds on probabilities
    weights: np.ndarray | None = None  # single-label: the decision is argmax(probs * weights) (None: argmax)
    high_labels: list[str] = field(default_factory=list)  # labels whose summed probability is P(high risk)
    risk_threshold: float | None = None  # P(high risk) at which a post is flagged
    info: dict = field(default_factory=dict)  # validation scores, calibration, operating point
    pool: str = "last"  # how the state is read (features.POOLS)

    @property
    def hidden_size(self) -> int:
        return self.state.coef.shape[1] // (2 if self.pool == "last+mean" else 1)

    def probabilities(self, text: str, state: np.ndarray) -> np.ndarray:
        return self.probabilities_from_scores(self.ngram.scores(text)[None], self.state.scores(state)[None])[0]

    def probabilities_from_scores(self, ngram: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Rows of label probabilities from rows of the two models' scores (training and tests use this too)."""
        return to_probabilities(np.hstack([ngram, state]) @ self.stack_coef.T + self.stack_intercept,
                                self.multi_label)

    def decide(self, probs: np.ndarray) -> list[str]:
        """The chosen labels: the most probable one, or (multi-label) every label over its threshold,
        and at least the one furthest over (or nearest to) its threshold."""
        if not self.multi_label:
            return [self.labels[int(np.argmax(probs if self.weights is None else probs * self.weights))]]
        margin = probs - self.thresholds
        chosen = [lab for lab, m in zip(self.labels, margin) if m >= 0]
        return chosen or [self.labels[int(np.argmax(margin))]]

    def evidence(self, text: str, labels: list[str]) -> str | None:
        """The clause of ``text`` that the n-gram part weighs most for ``labels`` (evidence.clauses), or None for an
        empty post: for one label, its score's margin over the best other label; for several, the
        best of their scores. What an explanation starts by quoting, so its evidence is the post's own words. A post
        whose clauses are all longer than a quote offers their first ``QUOTE_CHARS`` characters instead; a post too
        short to hold a clause (“加油！”) is quoted whole."""
        from ..evidence import clauses

        candidates = clauses(text, high=QUOTE_CHARS) or [c[:QUOTE_CHARS] for c in clauses(text, high=len(text))] \
            or ([text.strip()[:QUOTE_CHARS]] if text.strip() else [])
        if not candidates:
            return None
        chosen = [self.labels.index(lab) for lab in labels]
        scores = np.stack([self.ngram.scores(c) for c in candidates])
        if self.multi_label:
            support = scores[:, chosen].max(1)
        else:
            others = np.delete(scores, chosen[0], axis=1)
            support = scores[:, chosen[0]] - others.max(1)
        return candidates[int(np.argmax(support))]

    def p_high(self, probs: np.ndarray) -> float | None:
        if not self.high_labels:
            return None
        return float(sum(probs[self.labels.index(lab)] for lab in self.high_labels))

    def flagged(self, probs: np.ndarray, threshold: float | None = None) -> bool:
        """The high-risk flag: P(high) at or above ``threshold`` (default: the head's operating point)."""
        p_high = self.p_high(probs)
        return p_high is not None and p_high >= (self.risk_threshold if threshold is None else threshold)

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = folder / f"{self.task}.npz"
        np.savez_compressed(
            arrays, ngram_idf=self.ngram.idf.astype(np.float32), ngram_coef=self.ngram.coef.astype(np.float32),
            ngram_intercept=self.ngram.intercept, state_mean=self.state.mean.astype(np.float32),
            state_scale=self.state.scale.astype(np.float32), state_coef=self.state.coef.astype(np.float32),
            state_intercept=self.state.intercept, stack_coef=self.stack_coef, stack_intercept=self.stack_intercept,
            thresholds=self.thresholds if self.thresholds is not None else np.zeros(0),
            weights=self.weights if self.weights is not None else np.zeros(0))
        vocabulary = sorted(self.ngram.vocabulary, key=self.ngram.vocabulary.get)
        meta = folder / f"{self.task}.json"
        meta.write_text(json.dumps({
            "task": self.task, "labels": self.labels, "multi_label": self.multi_label,
            "ngram_range": list(self.ngram.ngram_range), "high_labels": self.high_labels,
            "risk_threshold": self.risk_threshold, "pool": self.pool, "info": self.info, "vocabulary": vocabulary,
        }, ensure_ascii=False, indent=1), encoding="utf-8")
        return [arrays, meta]

    @classmethod
    def load(cls, folder: Path, task: str) -> "TaskHead":
        meta = json.loads((folder / f"{task}.json").read_text(encoding="utf-8"))
        with np.load(folder / f"{task}.npz", allow_pickle=False) as z:
            a = {k: z[k].astype(np.float64) for k in z.files}
        ngram = NgramScorer({g: i for i, g in enumerate(meta["vocabulary"])}, a["ngram_idf"], a["ngram_coef"],
                            a["ngram_intercept"], tuple(meta["ngram_range"]))
        state = StateScorer(a["state_mean"], a["state_scale"], a["state_coef"], a["state_intercept"])
        weights = a.get("weights", np.zeros(0))  # heads made before decision weights have none
        return cls(meta["task"], meta["labels"], meta["multi_label"], ngram, state, a["stack_coef"],
                   a["stack_intercept"], a["thresholds"] if a["thresholds"].size else None,
                   weights if weights.size else None, meta["high_labels"], meta["risk_threshold"], meta["info"],
                   meta.get("pool", "last"))
