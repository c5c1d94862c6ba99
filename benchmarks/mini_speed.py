"""Speed of mentalglm-mini against the zero-shot 1.5B it runs on, and how often explanations quote the post.

    python benchmarks/mini_speed.py --n 20

The same posts (a stratified sample, seed 13, of each default task's validation split, mixed) go through
four variants, interleaved in blocks of --block posts so that a change in machine load hits them alike:

- zero-shot, labels only: ``analyze --model qwen2.5-coder-1.5b-instruct-q4 --no-explain`` (yesterday's default);
- mentalglm-mini, labels only: ``analyze --no-explain`` (label heads: one prompt evaluation, nothing generated);
- zero-shot, full analysis: the three default tasks with explanations;
- mentalglm-mini, full analysis: heads decide, then the model explains the chosen label.

Both models are the same GGUF file (two contexts over one memory-mapped copy of the weights). Prints posts/s,
seconds per post, ratios to the zero-shot variant, and the share of explanations whose quotes are all in the
post (evidence_ok), and writes the rows to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.inputs import Post
from mentalglm.llm.catalog import DEFAULT_MODEL, ZERO_SHOT_MODEL
from mentalglm.llm.registry import open_backend
from mentalglm.tasks import DEFAULT_TASKS


def sample_posts(n: int) -> list[Post]:
    """n posts taken in turn from each default task's validation sample, so every block mixes the corpora."""
    per_task = -(-n // len(DEFAULT_TASKS))
    pools = [[Post(f"{task}:{e.id}", e.text) for e in stratified_sample(task_splits(task)["validation"], per_task, seed=13)]
             for task in DEFAULT_TASKS]
    return [post for group in zip(*pools) for post in group][:n]


class Variant:
    def __init__(self, name: str, analyzer: Analyzer):
        self.name, self.analyzer = name, analyzer
        self.seconds, self.posts, self.rows = 0.0, 0, []

    def run(self, posts: list[Post]) -> None:
        start = time.perf_counter()
        self.rows += list(self.analyzer.stream(posts))
        self.seconds += time.perf_counter() - start
        self.posts += len(posts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--out", default="runs/benchmarks/mini_speed.jsonl")
    args = ap.parse_args()
    posts = sample_posts(args.n)
    zs, zs_style = open_backend(ZERO_SHOT_MODEL)
    mini, mini_style = open_backend(DEFAULT_MODEL)
    variants = [Variant("zero-shot 1.5B, labels only", Analyzer(zs, AnalyzeConfig(explain=False, style=zs_style))),
                Variant("mentalglm-mini, labels only", Analyzer(mini, AnalyzeConfig(explain=False, style=mini_style))),
                Variant("zero-shot 1.5B, full analysis", Analyzer(zs, AnalyzeConfig(style=zs_style))),
                Variant("mentalglm-mini, full analysis", Analyzer(mini, AnalyzeConfig(style=mini_style)))]
    for i in range(0, len(posts), args.block):
        for v in variants:
            v.run(posts[i:i + args.block])
        print(f"{min(i + args.block, len(posts))}/{len(posts)} posts", flush=True)
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {len(posts)} posts x "
          f"{len(DEFAULT_TASKS)} tasks ({', '.join(DEFAULT_TASKS)}), llama.cpp on all cores\n")
    print("| variant | posts/s | s per post | vs zero-shot | explanations quoting only the post |")
    print("|---|---|---|---|---|")
    for k, v in enumerate(variants):
        base = variants[k - k % 2]  # the zero-shot variant of the same kind
        checked = [r.evidence_ok for r in v.rows if r.evidence_ok is not None]
        quoted = f"{sum(checked)}/{len(checked)} = {100 * sum(checked) / len(checked):.0f}%" if checked else "—"
        print(f"| {v.name} | {v.posts / v.seconds:.3f} | {v.seconds / v.posts:.2f} | "
              f"{base.seconds / v.seconds:.2f}x | {quoted} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for v in variants:
            for r in v.rows:
                f.write(json.dumps({"variant": v.name, **r.__dict__}, ensure_ascii=False) + "\n")
    zs.close()
    mini.close()


if __name__ == "__main__":
    main()
