"""Zero-shot accuracy, weighted F1, parse rate and speed of a model on the Chinese training files.

    python benchmarks/zero_shot.py --n 200                      # default model, all four tasks
    python benchmarks/zero_shot.py --n 50 --tasks emotion --model qwen2.5-coder-0.5b-instruct-q4
    python benchmarks/zero_shot.py --model qwen2.5-coder-0.5b-instruct-q4 --adapter runs/train/cpu-0.5b \
        --prompt-style instruction --explain-n 0 --out runs/trained      # a trained adapter

Draws a stratified sample (seed 13) of each task's validation split (``task_splits``: SOS-4K's own
val.tsv, else 20% of the training file carved with seed 13) from ../shared/data, runs
``analyze`` with labels only (greedy decoding writes the same label with or without the
explanation that follows it, so the scores hold for full answers), and prints one table.
Predictions go to runs/zero_shot/<model>/<task>.jsonl and are resumed if interrupted.
Speed with explanations is measured separately on --explain-n posts.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

from mentalglm.analyze import AnalyzeConfig, Analyzer, completed_pairs
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.classification import score
from mentalglm.inputs import Post
from mentalglm.jsonl import write_rows
from mentalglm.llm.catalog import ZERO_SHOT_MODEL
from mentalglm.llm.registry import open_backend
from mentalglm.tasks import INVALID, get_task

TASKS = ["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=ZERO_SHOT_MODEL)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--explain-n", type=int, default=10, help="posts timed with explanations on")
    ap.add_argument("--out", default="runs/zero_shot")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--adapter", help="LoRA adapter: a training run folder or GGUF adapter (llama.cpp), PEFT folder (HF)")
    ap.add_argument("--prompt-style", choices=["zeroshot", "instruction"],
                    help="instruction: the C-IMHI prompt a fine-tuned adapter learned (default: the model's own)")
    args = ap.parse_args()
    backend, style = open_backend(args.model, adapter=args.adapter, prompt_style=args.prompt_style,
                                  **({"n_threads": args.threads} if args.threads else {}))
    rows = []
    for task in args.tasks.split(","):
        spec = get_task(task)
        sample = stratified_sample(task_splits(task)["validation"], args.n, seed=13)
        gold = {e.id: e.labels for e in sample}
        out = Path(args.out) / args.model / f"{task}.jsonl"
        done = completed_pairs(out)
        analyzer = Analyzer(backend, AnalyzeConfig(tasks=(task,), explain=False, style=style))
        todo = [Post(e.id, e.text) for e in sample if (e.id, task) not in done]
        start = time.perf_counter()
        write_rows(analyzer.stream(todo), out)
        elapsed = time.perf_counter() - start
        preds = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
        ids = [e.id for e in sample]
        s = score(spec, [gold[i] for i in ids], [preds[i]["labels"] for i in ids],
                  [preds[i]["parse_status"] not in (INVALID, "error") for i in ids])
        rows.append((task, len(sample), s, len(todo) / elapsed if todo and elapsed else float("nan")))
    explain_speed = float("nan")
    if args.explain_n:
        sample = stratified_sample(task_splits("cognitive_distortion")["validation"], args.explain_n, seed=7)
        analyzer = Analyzer(backend, AnalyzeConfig(style=style))  # the three default tasks, with explanations
        start = time.perf_counter()
        list(analyzer.stream([Post(e.id, e.text) for e in sample]))
        explain_speed = len(sample) / (time.perf_counter() - start)

    print(f"\nmodel {args.model}, {date.today()}, {platform.machine()} {platform.processor() or ''}, "
          f"n={args.n} per task (stratified from the validation split, seed 13), zero-shot, greedy\n")
    print("| task | n | accuracy | weighted F1 | macro F1 | parse rate | posts/s (labels only) |")
    print("|---|---|---|---|---|---|---|")
    for task, n, s, speed in rows:
        extra = f" (micro F1 {s['micro_f1']:.3f})" if "micro_f1" in s else ""
        print(f"| {task} | {n} | {s['accuracy']:.3f} | {s['weighted_f1']:.3f}{extra} | {s['macro_f1']:.3f} | "
              f"{1 - s['invalid_rate']:.3f} | {speed:.2f} |")
    print(f"\nwith explanations, three default tasks per post: {explain_speed:.3f} posts/s "
          f"({args.explain_n} posts)")


if __name__ == "__main__":
    main()
