"""Throughput of `analyze` on this CPU: the project's path against a naive loop, and HTTP concurrency.

    python benchmarks/throughput.py                                   # 0.5B model, 500 posts, naive on 40
    python benchmarks/throughput.py --n 100 --naive-n 20 --http-n 40  # quicker
    python benchmarks/throughput.py --model qwen2.5-coder-1.5b-instruct-q4 --threads 2

What is compared, on the same posts (SOS-HL-1K's training file from ../shared/data, sampled with seed 13;
task suicide_risk, the screening task, unless --task; labels are not scored here, only time):

- project: prompts with the task's shared instructions first and the post last, sent one after another so
  llama.cpp keeps the instructions in its KV cache and evaluates only each post's tokens; labels only, so the
  answer is prefilled up to the label and stops right after it (``analyze --no-explain``).
- project + explanations: the same prompts, full answers (label, 理由, explanation).
- naive, labels only: the KV cache reset before every prompt (``llm.reset()``), so every prompt is evaluated
  from scratch; answers stop after the label.
- naive: reset before every prompt and full answers: a loop that rebuilds every prompt and generates everything.
- HTTP: `mentalglm serve` on loopback over the same model, the project's OpenAIBackend as client with 1 and
  4 requests in flight (labels only). The server runs one generation at a time, so on one CPU parallel requests
  can only overlap HTTP and parsing with generation; the gain from concurrency belongs to remote servers that
  batch (vLLM).

The naive variants take seconds per post, so they run on the first --naive-n posts; the variants that share
those posts run in interleaved blocks of --block posts, so a change in machine load (it is shared) hits them
alike. Ratios are against the naive loop (full answers), per post. Two clocks: wall time, and this process's
CPU time, which on a machine shared with other jobs measures the work itself (use --threads 1 for it: with
more threads llama.cpp's waiting threads spin and count as CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.data.sources import load_task
from mentalglm.data.splits import stratified_sample
from mentalglm.inputs import Post
from mentalglm.llm.openai_client import OpenAIBackend
from mentalglm.llm.registry import open_backend
from mentalglm.serve import BackgroundServer, ServeSettings, create_app
from mentalglm.tasks import get_task

def load_posts(task: str, n: int, seed: int) -> list[Post]:
    examples = load_task(task)  # the whole training file: labels are not used, and 500 needs more than validation
    if n > len(examples):
        raise SystemExit(f"only {len(examples)} posts for {task}; use --n {len(examples)} or less")
    return [Post(e.id, e.text) for e in stratified_sample(examples, n, seed)]


class Variant:
    def __init__(self, name: str, backend, config: AnalyzeConfig, reset: bool):
        self.name, self.backend, self.reset = name, backend, reset
        self.analyzer = Analyzer(backend, config)
        self.seconds, self.cpu, self.posts = 0.0, 0.0, 0

    def run(self, posts: list[Post]) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        if self.reset:  # the naive loop: every prompt evaluated from its first token
            for post in posts:
                self.backend.llm.reset()
                results = self.analyzer.run([post])
        else:  # consecutive prompts of one task: llama.cpp reuses the shared prefix
            results = self.analyzer.run(posts)
        self.seconds += time.perf_counter() - start
        self.cpu += time.process_time() - cpu
        self.posts += len(posts)
        bad = [r for r in results if r.parse_status == "error"]
        if bad:
            raise SystemExit(f"{self.name}: {bad[0].error}")

    @property
    def rate(self) -> float:
        return self.posts / self.seconds if self.seconds else float("nan")


def http_rate(backend, style: str, task: str, posts: list[Post], concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: client and in-process server) for the posts."""
    app = create_app(backend, style, ServeSettings(max_queue=max(8, concurrency * 2), request_timeout=600))
    with BackgroundServer(app) as server:
        client = OpenAIBackend(backend.name, base_url=server.url + "/v1", concurrency=concurrency, timeout=600)
        analyzer = Analyzer(client, AnalyzeConfig(tasks=(task,), explain=False, style=style))
        analyzer.run(posts[:2])  # warm the server's KV cache with the task's prefix
        start, cpu = time.perf_counter(), time.process_time()
        results = analyzer.run(posts)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        client.close()
    errors = [r for r in results if r.parse_status == "error"]
    if errors:
        raise SystemExit(f"HTTP c={concurrency}: {errors[0].error}")
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4")
    ap.add_argument("--n", type=int, default=500, help="posts for the project's path")
    ap.add_argument("--naive-n", type=int, default=40, help="posts (the first of the --n) for the slow variants")
    ap.add_argument("--http-n", type=int, default=60, help="posts per HTTP concurrency level (0: skip)")
    ap.add_argument("--block", type=int, default=10, help="interleave the shared-post variants in blocks")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--task", default="suicide_risk", help="a Chinese task (its training file supplies the posts)")
    ap.add_argument("--out", default="runs/benchmarks/throughput.json")
    args = ap.parse_args()
    task = get_task(args.task).name

    posts = load_posts(task, args.n, args.seed)
    backend, style = open_backend(args.model, **({"n_threads": args.threads} if args.threads else {}))
    labels = AnalyzeConfig(tasks=(task,), explain=False, style=style)
    full = AnalyzeConfig(tasks=(task,), explain=True, style=style)
    shared = [Variant("project: prefix reuse, label-first, early stop", backend, labels, reset=False),
              Variant("project + explanations (prefix reuse, full answers)", backend, full, reset=False),
              Variant("naive, labels only (from scratch, early stop)", backend, labels, reset=True),
              Variant("naive (from scratch, full answers)", backend, full, reset=True)]
    console = Console(stderr=True)
    subset = posts[:args.naive_n]
    for i in range(0, len(subset), args.block):
        for v in shared:
            v.run(subset[i:i + args.block])
        console.print(f"shared-post variants: {min(i + args.block, len(subset))}/{len(subset)} posts")
    project = Variant("project: prefix reuse, label-first, early stop", backend, labels, reset=False)
    for i in range(0, len(posts), 50):
        project.run(posts[i:i + 50])
        console.print(f"project path: {project.posts}/{len(posts)} posts, {project.rate:.2f} posts/s")
    http = {}
    for c in ((1, 4) if args.http_n else ()):
        http[c] = http_rate(backend, style, task, posts[:args.http_n], c)
        console.print(f"HTTP concurrency {c}: {args.http_n / http[c][0]:.2f} posts/s")
    backend.close()

    naive = shared[3]
    rows = [(v.name, v.posts, v.seconds, v.cpu) for v in shared]
    rows.append((f"{project.name} (all {len(posts)} posts)", project.posts, project.seconds, project.cpu))
    for c, (seconds, cpu) in http.items():
        rows.append((f"HTTP to mentalglm serve, {c} in flight, labels only", args.http_n, seconds, cpu))
    table = Table(title=f"{args.model}, task {task}, {platform.machine()} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    for col in ("variant", "posts", "wall s", "posts/s", "× naive (wall)", "CPU s/post", "× naive (CPU)"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, n, seconds, cpu in rows:
        table.add_row(name, str(n), f"{seconds:.1f}", f"{n / seconds:.3f}", f"{naive.seconds / naive.posts / (seconds / n):.1f}",
                      f"{cpu / n:.2f}", f"{naive.cpu / naive.posts / (cpu / n):.1f}")
    Console(width=150).print(table)
    if http:
        print(f"HTTP: 4 in flight vs 1: {http[1][0] / http[4][0]:.2f}x the posts/s")
    lengths = [len(p.text) for p in posts]
    print(f"posts: {len(posts)}, median {statistics.median(lengths):.0f} characters")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "task": task, "args": vars(args), "when": datetime.now(
        timezone.utc).isoformat(), "rows": [dict(zip(("variant", "posts", "wall_s", "cpu_s"), r)) for r in rows]}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
