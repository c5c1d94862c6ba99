"""mentalglm-mini (the shipped default) against the character n-gram baseline, on the validation samples.

    for t in cognitive_distortion suicide_risk suicide_risk_levels emotion; do
      mentalglm eval predict --task $t --sample 200 --no-explain --out runs/mini_eval/$t.jsonl --resume
    done
    python benchmarks/mini_vs_ngram.py --mini runs/mini_eval

The predictions are the product's own (``eval predict`` with the default model); the n-gram baseline
(``mentalglm.baselines.ngram``: char 1-3-gram TF-IDF + linear SVM) is trained here on the task's train split
and predicts the same 200-post stratified sample (seed 13) of the validation split. Prints each task's
headline metrics with 95% bootstrap intervals, the paired difference mini - n-gram (1000 resamples of the
posts, seed 13: an interval above 0 is a demonstrated gain), the parse rate, the expected calibration error
of the probabilities the rows carry, and for suicide risk the operating point of the high-risk flag.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np

from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.classification import (bootstrap_intervals, expected_calibration_error,
                                               paired_difference_intervals, score)
from mentalglm.evaluate.report import METRIC_NAMES
from mentalglm.heads.fit import label_matrix
from mentalglm.tasks import get_task

HEADLINE = {"cognitive_distortion": ("micro_f1", "macro_f1"), "suicide_risk": ("high_risk_f1", "accuracy"),
            "suicide_risk_levels": ("accuracy", "within_one"), "emotion": ("weighted_f1", "macro_f1")}
# Best published supervised numbers on the official test splits (not these validation posts): the aim.
ANCHORS = {("cognitive_distortion", "micro_f1"): 76.1, ("suicide_risk", "high_risk_f1"): 82.8,
           ("emotion", "macro_f1"): 73.9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mini", type=Path, default=Path("runs/mini_eval"), help="folder of <task>.jsonl predictions")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(HEADLINE))
    args = ap.parse_args()
    print(f"{date.today()}, {platform.machine()}, {args.n}-post stratified validation samples (seed 13); percent; "
          "[95% bootstrap interval]; difference = mini - n-gram, paired\n")
    print("| task | metric | mentalglm-mini | n-gram | difference | published best (test split) |")
    print("|---|---|---|---|---|---|")
    notes = []
    for task in args.tasks.split(","):
        spec = get_task(task)
        splits = task_splits(task)
        sample = stratified_sample(splits["validation"], args.n, seed=13)
        gold = [e.labels for e in sample]
        rows = {r["id"]: r for r in map(json.loads, (args.mini / f"{task}.jsonl").read_text("utf-8").splitlines())}
        missing = [e.id for e in sample if e.id not in rows]
        if missing:
            raise SystemExit(f"{args.mini / f'{task}.jsonl'} lacks {len(missing)} of the {len(sample)} sample posts")
        mini = [tuple(rows[e.id]["labels"]) for e in sample]
        valid = [rows[e.id]["parse_status"] == "ok" for e in sample]
        ngram = NgramBaseline(spec).fit(splits["train"]).predict([e.text for e in sample])
        m, n = score(spec, gold, mini, valid), score(spec, gold, ngram)
        ci = bootstrap_intervals(spec, gold, mini, valid)
        diff = paired_difference_intervals(spec, gold, ngram, mini, None, valid)
        for key in HEADLINE[task]:
            anchor = ANCHORS.get((task, key))
            print(f"| {task} | {METRIC_NAMES[key]} | {100 * m[key]:.1f} [{100 * ci[key][0]:.1f}, {100 * ci[key][1]:.1f}]"
                  f" | {100 * n[key]:.1f} | {100 * (m[key] - n[key]):+.1f} [{100 * diff[key][0]:+.1f}, "
                  f"{100 * diff[key][1]:+.1f}] | {anchor if anchor else '—'} |")
        probs = np.array([[rows[e.id]["scores"][lab] for lab in spec.label_names] for e in sample])
        ece = expected_calibration_error(probs, label_matrix(spec, gold), spec.multi_label)
        note = f"{task}: parse rate {100 * np.mean(valid):.0f}%, ECE {100 * ece:.1f}"
        if spec.high_risk:
            high = np.array([spec.high_risk_in(g) for g in gold])
            flagged = np.array([rows[e.id]["high_risk"] for e in sample])
            tp = int((high & flagged).sum())
            note += (f", high-risk flag at the default threshold: recall {tp}/{high.sum()} = "
                     f"{100 * tp / max(1, high.sum()):.0f}%, precision {tp}/{flagged.sum()} = "
                     f"{100 * tp / max(1, flagged.sum()):.0f}%")
        notes.append(note)
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
