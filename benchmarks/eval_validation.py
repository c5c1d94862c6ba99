"""The n-gram baseline and the zero-shot default LLM side by side on the validation split, with a report.

    python benchmarks/eval_validation.py
    python benchmarks/eval_validation.py --llm-dir runs/zero_shot/qwen2.5-coder-1.5b-instruct-q4 \
        --out runs/eval_validation

For cognitive_distortion, suicide_risk, suicide_risk_levels and emotion: trains the character
n-gram baseline on the train split of ``task_splits`` (SOS-4K: its own train.tsv; the others: the
80% left after carving a stratified 20% validation split with seed 13), predicts the whole
validation split, and scores it

- on the same 200-post stratified sample (seed 13) of the validation split that the LLM run of
  ``benchmarks/zero_shot.py`` answered (predictions read from ``--llm-dir/<task>.jsonl``), next
  to the LLM on those posts, and
- on the full validation split (SOS-HL-1K's has 199 posts: there the sample is the whole split).

95% bootstrap intervals (1000 resamples, seed 13). Writes ``<out>/ngram/<task>.jsonl`` and the
report ``<out>/report/report.{md,html}``, and prints a Markdown table. The LLM files must be
complete for the sample; ``--allow-partial`` scores the posts they have (marked in the table).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.data.sources import task_splits
from mentalglm.evaluate.predictions import GoldSet, gold_set, read_predictions, write_predictions
from mentalglm.evaluate.report import METRIC_NAMES, entry_from_file, write_report
from mentalglm.llm.catalog import ZERO_SHOT_MODEL
from mentalglm.tasks import get_task

TASKS = ["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"]
TASK_METRIC = {"cognitive_distortion": "micro_f1", "suicide_risk": "high_risk_f1",
               "suicide_risk_levels": "within_one", "emotion": "macro_f1"}
NGRAM = "n-gram (char TF-IDF + linear SVM)"
LLM = f"{ZERO_SHOT_MODEL} zero-shot"


def _cell(card, key: str) -> str:
    lo, hi = card.intervals[key]
    return f"{100 * card.metrics[key]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--llm-dir", default=f"runs/zero_shot/{ZERO_SHOT_MODEL}")
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--out", default="runs/eval_validation")
    ap.add_argument("--allow-partial", action="store_true", help="score only the sample posts the LLM has answered")
    args = ap.parse_args()
    out = Path(args.out)
    entries, rows = [], []
    for task in args.tasks.split(","):
        spec = get_task(task)
        splits = task_splits(task)
        start = time.perf_counter()
        model = NgramBaseline(spec).fit(splits["train"])
        ngram_file = write_predictions(model.predictions(splits["validation"]), out / "ngram" / f"{task}.jsonl")
        seconds = time.perf_counter() - start
        sample = gold_set(task, sample=args.sample, seed=13)
        llm_file = Path(args.llm_dir) / f"{task}.jsonl"
        if args.allow_partial:
            sample = _answered_only(sample, llm_file)
        on_sample = [entry_from_file(ngram_file, sample, NGRAM), entry_from_file(llm_file, sample, LLM)]
        entries += on_sample
        whole = len(sample.examples) == len(splits["validation"])  # SOS-HL-1K: the sample is the whole split
        posts = "all" if whole else "sample"
        rows += [(task, f"{posts} {on_sample[0].card.n}", on_sample[0], seconds),
                 (task, f"{posts} {on_sample[1].card.n}", on_sample[1], None)]
        if not whole:
            full = entry_from_file(ngram_file, gold_set(task), NGRAM)
            entries.append(full)
            rows.append((task, f"all {full.card.n}", full, seconds))
    md, page = write_report(entries, out / "report", "n-gram baseline vs. zero-shot LLM on the validation split",
                            command=_command(args))
    print(f"\n{date.today()}, {platform.machine()}, validation split of task_splits (seed 13); 95% bootstrap "
          f"intervals (1000 resamples, seed 13); percent\n")
    print("| task | posts | system | accuracy | macro F1 | weighted F1 | task metric | invalid "
          "| n-gram train+predict s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task, posts, e, seconds in rows:
        key = TASK_METRIC[task]
        print(f"| {task} | {posts} | {e.system} | {_cell(e.card, 'accuracy')} | {_cell(e.card, 'macro_f1')} | "
              f"{_cell(e.card, 'weighted_f1')} | {METRIC_NAMES[key]} {_cell(e.card, key)} | "
              f"{100 * e.card.metrics['invalid_rate']:.1f} | {'' if seconds is None else f'{seconds:.1f}'} |")
    print(f"\nreport: {md} and {page}")


def _command(args) -> str:
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
             if v not in (None, False)]
    return "python benchmarks/eval_validation.py " + " ".join(flags)


def _answered_only(sample: GoldSet, llm_file: Path) -> GoldSet:
    """The sample restricted to the posts a partial LLM file has answered, so both systems see the same posts."""
    answered = {r.id for r in read_predictions(llm_file)}
    kept = tuple(e for e in sample.examples if e.id in answered)
    if len(kept) == len(sample.examples):
        return sample
    return replace(sample, examples=kept, description=f"{sample.description}; PARTIAL: the {len(kept)} posts "
                                                      "the LLM has answered so far")


if __name__ == "__main__":
    main()
