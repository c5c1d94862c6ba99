"""Batched decoding (``--parallel N``) against one sequence at a time, on the default model mentalglm-mini.

    python benchmarks/parallel.py --n 60 --parallel 4
    python benchmarks/parallel.py --n 16 --parallel 2 4 8 --one-task-n 16    # which N suits this machine

The same posts (validation samples of the default tasks, seed 13, mixed as in benchmarks/mini_speed.py) go
through each variant, interleaved in blocks of --block posts so that a change in machine load (it is shared)
hits them alike:

- full analysis: the three default tasks with explanations (``mentalglm analyze``), --parallel 1 (the path
  before batching) and each N; with --issue-baseline also the default of the day issue #12 was filed (the
  zero-shot 1.5B model, one sequence at a time), against which the issue set its 2.5x;
- labels only (``analyze --no-explain``), --parallel 1 and each N;
- one task (suicide_risk) with explanations of up to 96 tokens on --one-task-n posts, --parallel 1 and each N.

Every variant's labels are compared with --parallel 1's on the same posts (greedy decoding: they should be the
same). Peak resident memory is measured in a fresh process per N (model loaded, two posts analysed). Prints a
table and writes the rows to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.llm.catalog import DEFAULT_MODEL, ZERO_SHOT_MODEL
from mentalglm.llm.registry import open_backend
from mentalglm.tasks import DEFAULT_TASKS

sys.path.insert(0, str(Path(__file__).parent))
from mini_speed import sample_posts  # noqa: E402  (the same mixed posts)


class Variant:
    def __init__(self, name: str, parallel: int, backend, config: AnalyzeConfig):
        self.name, self.parallel, self.analyzer = name, parallel, Analyzer(backend, config)
        self.seconds, self.posts, self.rows = 0.0, 0, []

    def run(self, posts) -> None:
        start = time.perf_counter()
        rows = self.analyzer.run(posts)
        self.seconds += time.perf_counter() - start
        self.posts += len(posts)
        bad = [r for r in rows if r.parse_status == "error"]
        if bad:
            raise SystemExit(f"{self.name}: {bad[0].error}")
        self.rows += rows


MEMORY_PROBE = """
import re, sys
from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.inputs import Post
from mentalglm.llm.registry import open_backend
backend, style = open_backend(sys.argv[1], n_ctx=int(sys.argv[2]), parallel=int(sys.argv[3]))
Analyzer(backend, AnalyzeConfig(style=style, max_tokens=32)).run(
    [Post("1", "最近总觉得自己什么都做不好"), Post("2", "今天和朋友出去玩，很开心")])
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))  # peak RSS of this process
"""


def peak_memory_mb(parallel: int, n_ctx: int) -> float:
    """Peak RSS of a fresh process that loads the model with ``parallel`` and analyses two posts."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, DEFAULT_MODEL, str(n_ctx), str(parallel)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="posts for the full and labels-only variants")
    ap.add_argument("--one-task-n", type=int, default=16, help="posts for the one-task variants (0: skip)")
    ap.add_argument("--parallel", type=int, nargs="+", default=[4], help="N to compare with 1")
    ap.add_argument("--block", type=int, default=8, help="interleave the variants in blocks of this many posts")
    ap.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--skip-labels-only", action="store_true")
    ap.add_argument("--issue-baseline", action="store_true",
                    help=f"full analysis also with {ZERO_SHOT_MODEL} --parallel 1 (the default when #12 was filed)")
    ap.add_argument("--out", default="runs/benchmarks/parallel.json")
    args = ap.parse_args()

    console = Console(stderr=True)
    levels = [1, *[n for n in args.parallel if n != 1]]
    backends = {}
    for n in levels:
        backends[n], style = open_backend(DEFAULT_MODEL, n_ctx=args.n_ctx, n_threads=args.threads, parallel=n)
    full = AnalyzeConfig(tasks=DEFAULT_TASKS, style=style)
    baseline = None
    if args.issue_baseline:
        zero_shot, zero_style = open_backend(ZERO_SHOT_MODEL, n_ctx=args.n_ctx, n_threads=args.threads, parallel=1)
        baseline = Variant(f"full analysis (3 tasks, explanations), {ZERO_SHOT_MODEL}", 1, zero_shot,
                           AnalyzeConfig(tasks=DEFAULT_TASKS, style=zero_style))
    labels = AnalyzeConfig(tasks=DEFAULT_TASKS, style=style, explain=False)
    one = AnalyzeConfig(tasks=("suicide_risk",), style=style, max_tokens=96)
    groups = [("full analysis (3 tasks, explanations)", full, args.n)]
    if not args.skip_labels_only:
        groups.append(("labels only (3 tasks)", labels, args.n))
    if args.one_task_n:
        groups.append(("one task, answers up to 96 tokens", one, args.one_task_n))
    posts = sample_posts(max(n for _, _, n in groups))
    results = []
    for title, config, count in groups:
        variants = [Variant(title, n, backends[n], config) for n in levels]
        runs = [*variants, baseline] if config is full and baseline else variants
        for i in range(0, count, args.block):
            for v in runs:
                v.run(posts[i:min(count, i + args.block)])
            console.print(f"{title}: {min(count, i + args.block)}/{count} posts, " +
                          ", ".join(f"--parallel {v.parallel} {v.posts / v.seconds:.3f}/s" for v in runs))
        results.append((title, variants))
    for b in backends.values():
        b.close()
    if baseline:
        baseline.analyzer.backend.close()
    memory = {n: peak_memory_mb(n, args.n_ctx) for n in levels}

    when = datetime.now(timezone.utc)
    table = Table(title=f"{DEFAULT_MODEL}, {platform.machine()}, {args.threads or 'all'} threads, "
                        f"n_ctx {args.n_ctx} per sequence ({when:%Y-%m-%d %H:%M} UTC)")
    columns = ["variant", "--parallel", "posts", "posts/s", "s/post", "x --parallel 1", "same labels", "peak RSS MB"]
    for col in columns + ["x #12 baseline"] * bool(baseline):
        table.add_column(col, justify="left" if col == "variant" else "right")
    rows = []
    for title, variants in results:
        base = variants[0]
        for v in variants:
            same = sum(a.labels == b.labels for a, b in zip(v.rows, base.rows))
            rate = v.posts / v.seconds
            rows.append({"variant": title, "parallel": v.parallel, "posts": v.posts, "seconds": round(v.seconds, 1),
                         "posts_per_s": rate, "ratio": rate / (base.posts / base.seconds),
                         "same_labels": same, "rows": len(v.rows), "peak_rss_mb": memory[v.parallel]})
            cells = [title, str(v.parallel), str(v.posts), f"{rate:.3f}", f"{v.seconds / v.posts:.2f}",
                     f"{rows[-1]['ratio']:.2f}", f"{same}/{len(v.rows)}", f"{memory[v.parallel]:.0f}"]
            if baseline:
                versus = rate / (baseline.posts / baseline.seconds) if v.analyzer.config is full else None
                rows[-1]["x_issue_baseline"] = versus
                cells.append(f"{versus:.2f}" if versus else "")
            table.add_row(*cells)
    if baseline:
        rate = baseline.posts / baseline.seconds
        rows.append({"variant": baseline.name, "parallel": 1, "posts": baseline.posts,
                     "seconds": round(baseline.seconds, 1), "posts_per_s": rate, "x_issue_baseline": 1.0})
        table.add_row(baseline.name, "1", str(baseline.posts), f"{rate:.3f}", f"{baseline.seconds / baseline.posts:.2f}",
                      "", "", "", "1.00")
    Console(width=180).print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "when": when.isoformat(), "machine": platform.machine(),
                               "rows": rows}, indent=1), encoding="utf-8")
    print(f"written {out}  (this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
