"""Which reader tells the label an explanation argues for? Measured on SOS-4K's validation references.

SOS-4K's reference explanations were written for their post's gold level, so a good reader names that level
(or one next to it) from the explanation alone, with the quotes of the post removed (``heads.reader.argument``).
Two readers, on the 636 validation references:

- ``head-ngram``: the shipped head's own n-gram part (trained on posts), applied to the argument;
- ``trained``: character 1-3-gram TF-IDF + logistic regression (C=10, the heads' n-gram setting; min_df 2),
  fitted on the 2,544 training references' arguments.

For ``suicide_risk_levels``: exact level, within one level (what ``explanation_consistent`` counts as agreeing on
the ordinal scale: the rate at which an explanation that does argue for its label is called consistent), and how
often a reference paired with a wrong label three or more levels away is called inconsistent. For
``suicide_risk``: levels 6-10 as 高自杀风险; the suicide_risk head's n-gram part against the trained reader's
P(levels 6-10) >= 0.5 (accuracy and balanced accuracy).

The other tasks have no references; ``--teacher FOLDER`` reads a ``mentalglm data build`` output instead (the
teacher was told the gold label, and what it kept passed QC, so a good reader names the gold label): the rate at
which the task's reader does, per task. Build it without ``--consistent``, which would keep only what the reader
already agrees with.

    python benchmarks/explanation_consistency.py                                  # measure
    python benchmarks/explanation_consistency.py --teacher runs/explainer/cimhi   # ... and on teacher explanations
    python benchmarks/explanation_consistency.py --teacher runs/explainer/cimhi --classifier runs/cls/v1
                                          # ... and a classifier run (its adapter and trained heads) as a third reader
    python benchmarks/explanation_consistency.py --write src/mentalglm/resources  # measure, ship the trained reader
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mentalglm.data.sources import task_splits
from mentalglm.heads import load_heads
from mentalglm.heads.classifier import head_weights
from mentalglm.heads.model import NgramScorer
from mentalglm.heads.reader import (TRAINED, ExplanationReader, argument, explanation_reader, load_trained,
                                    save_trained)


# The tasks whose explanations a teacher writes in `mentalglm data build` (the 0-10 scale reuses SOS-4K's references).
TEACHER_TASKS = ("cognitive_distortion", "suicide_risk", "emotion")


def train_reader(train, C: float = 10.0, min_df: int = 2) -> tuple[NgramScorer, list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [argument(e.explanation) for e in train]
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=min_df, sublinear_tf=True)
    x = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=C, max_iter=3000).fit(x, [e.labels[0] for e in train])
    labels = [str(c) for c in model.classes_]
    order = sorted(range(len(labels)), key=lambda i: int(labels[i]))
    return (NgramScorer(dict(vectorizer.vocabulary_), vectorizer.idf_, model.coef_[order], model.intercept_[order]),
            [labels[i] for i in order])


def levels_rates(reader: ExplanationReader, val) -> dict:
    gold = np.array([int(e.labels[0]) for e in val])
    argued = np.array([int(reader.argued(argument(e.explanation))) for e in val])
    wrong = [str((g + 3 + (i % 6)) % 11) for i, g in enumerate(gold)]  # 3 to 8 levels away, round the scale
    wrong = [w if abs(int(w) - g) >= 3 else str((g + 5) % 11) for w, g in zip(wrong, gold)]
    flagged = [not reader.consistent(str(a), [w]) for a, w in zip(argued, wrong)]
    return {"exact": float((argued == gold).mean()), "within_one": float((abs(argued - gold) <= 1).mean()),
            "band_6_10": float(((argued >= 6) == (gold >= 6)).mean()),
            "wrong_label_flagged": float(np.mean(flagged))}


def risk_rates(reader: ExplanationReader, val) -> dict:
    gold = np.array([int(e.labels[0]) >= 6 for e in val])
    argued = np.array([reader.argued(argument(e.explanation)) == "高自杀风险" for e in val])
    recall_high, recall_low = argued[gold].mean(), (~argued[~gold]).mean()
    return {"accuracy": float((argued == gold).mean()), "balanced_accuracy": float((recall_high + recall_low) / 2),
            "argued_high": float(argued.mean()), "gold_high": float(gold.mean())}


class ClassifierScorer:
    """A classifier run's trained head of one task on the run's state of a text (its adapter on its base): a scorer
    an ``ExplanationReader`` can read arguments with. ``state(text)`` is shared by the tasks' scorers."""

    def __init__(self, state, weight: np.ndarray, bias: np.ndarray):
        self.state, self.weight, self.bias = state, weight, bias

    def scores(self, text: str) -> np.ndarray:
        return self.weight @ self.state(text) + self.bias


def classifier_readers(run: Path, tasks) -> dict[str, ExplanationReader]:
    """Each task's reader on the classifier run (the 0-10 scale ordinal, as the shipped reader). A text's state is
    read once for every task (the references are read as both a level and a risk)."""
    from functools import lru_cache

    from mentalglm.heads.build import open_model
    from mentalglm.heads.features import POST_TOKENS
    from mentalglm.heads.recipe import Recipe
    from mentalglm.tasks import get_task

    backend, weights = open_model(Recipe(classifier=str(run)), "classifier"), head_weights(run)

    @lru_cache(maxsize=None)
    def state(text: str) -> np.ndarray:
        return backend.text_states([text], POST_TOKENS)[0]

    return {t: ExplanationReader(t, list(get_task(t).label_names), get_task(t).multi_label,
                                 ClassifierScorer(state, *weights[t]), t == TRAINED, "classifier") for t in tasks}


def teacher_rates(readers: dict[str, ExplanationReader], folder: Path) -> dict:
    """Per task of a ``data build`` folder: how often ``readers[task]`` names the gold label of the kept teacher
    explanations (multi-label: one of the gold labels), and the most frequent misreadings."""
    from collections import Counter

    out = {}
    for task, reader in readers.items():
        path = folder / task / "train.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        read = [(r["labels"], reader.argued(argument(r["explanation"]))) for r in rows]
        read = [(gold, argued) for gold, argued in read if argued is not None]
        wrong = Counter(f"{gold[0]} read as {argued}" for gold, argued in read if argued not in gold)
        out[task] = {"reader": reader.kind, "explanations": len(read),
                     "gold_read": float(np.mean([argued in gold for gold, argued in read])),
                     "misread": dict(wrong.most_common(3))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", help="heads folder (default: the packaged mentalglm-mini)")
    ap.add_argument("--write", help="write the trained reader's files into this folder")
    ap.add_argument("--teacher", type=Path, help="a `mentalglm data build` folder (built without --consistent): "
                    "also read its kept teacher explanations with each task's shipped reader")
    ap.add_argument("--classifier", type=Path, metavar="RUN",
                    help="also read the references (and with --teacher the teacher explanations) with a classifier "
                         "run's adapter and trained heads (`heads train --classifier`)")
    args = ap.parse_args()
    splits = task_splits(TRAINED)
    train, val = splits["train"], splits["validation"]
    started = time.time()
    trained = train_reader(train)
    seconds = round(time.time() - started, 1)
    heads = load_heads(args.heads)
    results = {}
    for kind, source in (("head-ngram", None), ("trained", trained)):
        levels = explanation_reader(heads.head(TRAINED), ordinal=True, trained=source)
        risk = explanation_reader(heads.head("suicide_risk"), trained=source)
        results[kind] = {"suicide_risk_levels": levels_rates(levels, val), "suicide_risk": risk_rates(risk, val)}
    if args.classifier:
        readers = classifier_readers(args.classifier, (TRAINED, *TEACHER_TASKS))
        results["classifier"] = {TRAINED: levels_rates(readers[TRAINED], val),
                                 "suicide_risk": risk_rates(readers["suicide_risk"], val)}
    report = {"validation_references": len(val), "training_references": len(train), "fit_seconds": seconds,
              "vocabulary": len(trained[0].vocabulary), "readers": results,
              "date": time.strftime("%Y-%m-%d")}
    if args.teacher:
        shipped = {t: explanation_reader(heads.head(t), trained=load_trained()) for t in TEACHER_TASKS}
        report["teacher_explanations"] = teacher_rates(shipped, args.teacher)
        if args.classifier:
            report["teacher_explanations_classifier"] = teacher_rates(
                {t: readers[t] for t in TEACHER_TASKS}, args.teacher)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    if args.write:
        info = {"source": "SOS-4K train.tsv reference explanations, quotes removed", "C": 10.0, "min_df": 2,
                "validation": results["trained"], "command": "python benchmarks/explanation_consistency.py --write "
                f"{args.write}"}
        for path in save_trained(trained[0], trained[1], Path(args.write), info):
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
