"""A trained adapter against its base model's zero-shot answers and the character n-gram baseline.

    python benchmarks/trained_vs_zero_shot.py \
        --zero-shot runs/zero_shot/qwen2.5-coder-0.5b-instruct-q4 --trained runs/trained/qwen2.5-coder-0.5b-instruct-q4

Both prediction folders hold ``<task>.jsonl`` files written by ``benchmarks/zero_shot.py`` on the same
200-post stratified sample (seed 13) of each task's validation split. The n-gram baseline
(``mentalglm.baselines.ngram``) is trained on the task's train split here and predicts the same posts.
Prints weighted F1 per task with, for the LLM answers, the parse rate and the number of distinct answers
(1 = the same label for every post), and the gaps, as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.classification import score
from mentalglm.tasks import INVALID, get_task

TASKS = ["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"]


def llm_scores(spec, sample, folder: Path) -> dict | None:
    path = folder / f"{spec.name}.jsonl"
    if not path.exists():
        return None
    preds = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    missing = [e.id for e in sample if e.id not in preds]
    if missing:
        return {"partial": f"{len(sample) - len(missing)}/{len(sample)}"}
    labels = [tuple(preds[e.id]["labels"]) for e in sample]
    s = score(spec, [e.labels for e in sample], labels,
              [preds[e.id]["parse_status"] not in (INVALID, "error") for e in sample])
    s["distinct"] = len(set(labels))  # 1 = the same answer for every post
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zero-shot", type=Path, required=True)
    ap.add_argument("--trained", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    print("| task | n | zero-shot weighted F1 (parse rate, distinct answers) | trained weighted F1 (parse rate, "
          "distinct answers) | "
          "char n-gram weighted F1 | trained - zero-shot | n-gram - trained |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        spec = get_task(task)
        splits = task_splits(task)
        sample = stratified_sample(splits["validation"], args.n, seed=13)
        ngram = NgramBaseline(spec).fit(splits["train"])
        ng = score(spec, [e.labels for e in sample], ngram.predict([e.text for e in sample]))["weighted_f1"]
        zs, tr = llm_scores(spec, sample, args.zero_shot), llm_scores(spec, sample, args.trained)

        def cell(s):
            if s is None:
                return "—"
            if "partial" in s:
                return f"incomplete ({s['partial']})"
            return f"{s['weighted_f1']:.3f} ({1 - s['invalid_rate']:.2f}, {s['distinct']})"

        gain = f"{tr['weighted_f1'] - zs['weighted_f1']:+.3f}" if zs and tr and "partial" not in zs | tr else "—"
        gap = f"{ng - tr['weighted_f1']:+.3f}" if tr and "partial" not in tr else "—"
        print(f"| {task} | {len(sample)} | {cell(zs)} | {cell(tr)} | {ng:.3f} | {gain} | {gap} |")


if __name__ == "__main__":
    main()
