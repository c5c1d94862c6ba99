"""A trained adapter against its base model's zero-shot answers and the character n-gram baseline.

    python benchmarks/trained_vs_zero_shot.py \
        --zero-shot runs/zero_shot/qwen2.5-coder-0.5b-instruct-q4 --trained runs/trained/qwen2.5-coder-0.5b-instruct-q4

Both prediction folders hold ``<task>.jsonl`` files written by ``benchmarks/zero_shot.py`` on the same
200-post stratified sample (seed 13) of each task's validation split. The n-gram baseline
(``mentalglm.baselines.ngram``) is trained on the task's train split here and predicts the same posts.
Prints weighted F1 per task with, for the LLM answers, the parse rate and the number of distinct answers
(1 = the same label for every post), and the gaps, as a Markdown table; the gain over zero-shot comes with a
95% paired bootstrap interval (1000 resamples of the posts, seed 13).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.classification import paired_difference_intervals, score
from mentalglm.tasks import INVALID, get_task

TASKS = ["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"]


def llm_answers(sample, folder: Path) -> tuple[list, list] | str | None:
    """(labels, parseable) per sample post from ``folder/<task>.jsonl``; "k/n" if incomplete; None if absent."""
    path = folder / f"{sample[0].task}.jsonl"
    if not path.exists():
        return None
    preds = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    missing = [e.id for e in sample if e.id not in preds]
    if missing:
        return f"{len(sample) - len(missing)}/{len(sample)}"
    return ([tuple(preds[e.id]["labels"]) for e in sample],
            [preds[e.id]["parse_status"] not in (INVALID, "error") for e in sample])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zero-shot", type=Path, required=True)
    ap.add_argument("--trained", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    print("| task | n | zero-shot weighted F1 (parse rate, distinct answers) | trained weighted F1 (parse rate, "
          "distinct answers) | char n-gram weighted F1 | trained - zero-shot [95% paired bootstrap] | n-gram - trained |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        spec = get_task(task)
        splits = task_splits(task)
        sample = stratified_sample(splits["validation"], args.n, seed=13)
        gold = [e.labels for e in sample]
        ngram = NgramBaseline(spec).fit(splits["train"])
        ng = score(spec, gold, ngram.predict([e.text for e in sample]))["weighted_f1"]
        zs, tr = llm_answers(sample, args.zero_shot), llm_answers(sample, args.trained)

        def f1(answers):
            return score(spec, gold, *answers)["weighted_f1"]

        def cell(answers):
            if answers is None or isinstance(answers, str):
                return f"incomplete ({answers})" if answers else "—"
            labels, valid = answers
            return f"{f1(answers):.3f} ({sum(valid) / len(valid):.2f}, {len(set(labels))})"

        complete = [isinstance(x, tuple) for x in (zs, tr)]
        gain, gap = "—", "—"
        if all(complete):
            low, high = paired_difference_intervals(spec, gold, zs[0], tr[0], zs[1], tr[1])["weighted_f1"]
            gain = f"{f1(tr) - f1(zs):+.3f} [{low:+.3f}, {high:+.3f}]"
        if complete[1]:
            gap = f"{ng - f1(tr):+.3f}"
        print(f"| {task} | {len(sample)} | {cell(zs)} | {cell(tr)} | {ng:.3f} | {gain} | {gap} |")


if __name__ == "__main__":
    main()
