"""The consistency check: which label does an explanation argue for, read from the explanation alone?

A reader sees the explanation with every quote of the post removed (so it reads the argument, not the
evidence it cites) and without the unsure lead (which names two labels), and names the label it argues for.
The row's ``explanation_consistent`` says whether that agrees with the row's label:

- single-label tasks: the reader's label is the row's label; on the 0-10 scale (ordinal tasks) within one level,
  since the argument for level 6 and for level 7 reads the same;
- multi-label tasks: the reader's most probable label is one of the row's labels.

Two kinds of reader, chosen by what the numbers on SOS-4K's validation references favour
(``benchmarks/explanation_consistency.py``, docs/analyze.md):

- a *trained reader*: character 1-3-gram TF-IDF + logistic regression fitted on SOS-4K's training reference
  explanations (written for their gold level, quotes removed), shipped as ``resources/reader-<task>.{npz,json}``;
  it reads the 0-10 scale, and ``suicide_risk`` through it (P(levels 6-10) against the rest);
- otherwise the task head's own n-gram part (``TaskHead.ngram``), trained on posts, applied to the argument.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..evidence import without_quotes
from .model import NgramScorer, TaskHead, to_probabilities

TRAINED = "suicide_risk_levels"  # the task SOS-4K's reference explanations are written for
_HIGH_LEVELS = tuple(str(i) for i in range(6, 11))
_LEFTOVER = re.compile(r"[\s，,。.！!？?、；;：:]+")


def argument(explanation: str, lead: str = "") -> str:
    """What the reader reads: the explanation without ``lead`` (the unsure lead) and without its quotes."""
    if lead and explanation.startswith(lead):
        explanation = explanation[len(lead):]
    return without_quotes(explanation).strip()


@dataclass
class ExplanationReader:
    """Scores every label of ``labels`` from an argument's characters (``scorer``), then names the argued label."""

    task: str
    labels: list[str]
    multi_label: bool
    scorer: NgramScorer
    ordinal: bool = False
    kind: str = "head-ngram"  # or "trained" (SOS-4K references)
    high_of: list[str] | None = None  # suicide_risk through the levels reader: the levels summed as 高自杀风险

    def argued(self, text: str) -> str | None:
        """The label ``text`` argues for (None: nothing left to read)."""
        if not _LEFTOVER.sub("", text):
            return None
        scores = self.scorer.scores(text)
        if self.high_of is not None:  # P(levels 6-10) against the rest
            probs = to_probabilities(scores[None], False)[0]
            p_high = float(sum(probs[self.high_of.index(level)] for level in _HIGH_LEVELS))
            return "高自杀风险" if p_high >= 0.5 else "低自杀风险"
        return self.labels[int(np.argmax(scores))]

    def consistent(self, argued: str | None, labels: list[str]) -> bool | None:
        if argued is None or not labels:
            return None
        if self.ordinal and not self.multi_label:
            return abs(int(argued) - int(labels[0])) <= 1
        return argued in labels


def trained_folder() -> Path:
    return Path(str(resources.files("mentalglm").joinpath("resources")))


def save_trained(scorer: NgramScorer, labels: list[str], folder: Path, info: dict) -> list[Path]:
    """The trained reader's files (``reader-<task>.npz`` + ``.json``, no pickles)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays, meta = folder / f"reader-{TRAINED}.npz", folder / f"reader-{TRAINED}.json"
    np.savez_compressed(arrays, idf=scorer.idf.astype(np.float32), coef=scorer.coef.astype(np.float32),
                        intercept=scorer.intercept)
    vocabulary = sorted(scorer.vocabulary, key=scorer.vocabulary.get)
    meta.write_text(json.dumps({"task": TRAINED, "labels": labels, "ngram_range": list(scorer.ngram_range),
                                "info": info, "vocabulary": vocabulary}, ensure_ascii=False), encoding="utf-8")
    return [arrays, meta]


def load_trained(folder: Path | None = None) -> tuple[NgramScorer, list[str]] | None:
    """The trained reader (``save_trained``'s files) in ``folder``, by default the packaged one (read once)."""
    return _load_trained(folder or trained_folder())


@lru_cache(maxsize=4)
def _load_trained(folder: Path) -> tuple[NgramScorer, list[str]] | None:
    meta_path = folder / f"reader-{TRAINED}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    with np.load(folder / f"reader-{TRAINED}.npz", allow_pickle=False) as z:
        a = {k: z[k].astype(np.float64) for k in z.files}
    scorer = NgramScorer({g: i for i, g in enumerate(meta["vocabulary"])}, a["idf"], a["coef"], a["intercept"],
                         tuple(meta["ngram_range"]))
    return scorer, meta["labels"]


def explanation_reader(head: TaskHead, ordinal: bool = False, trained=None) -> ExplanationReader:
    """The reader of ``head``'s task: the trained reader where one reads the task (see the module doc), else the
    head's n-gram part. ``trained``: ``load_trained()``'s result (None: no trained reader)."""
    if trained is not None and head.task == TRAINED:
        scorer, labels = trained
        return ExplanationReader(head.task, labels, False, scorer, ordinal, "trained")
    if trained is not None and head.task == "suicide_risk":
        scorer, labels = trained
        return ExplanationReader(head.task, head.labels, False, scorer, False, "trained", high_of=labels)
    return ExplanationReader(head.task, head.labels, head.multi_label, head.ngram, ordinal)
