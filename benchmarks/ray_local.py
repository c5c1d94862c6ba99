"""The local run against ``analyze --ray`` on an embedded cluster of this machine: same posts, same rows, and the cost
of Ray.

    python benchmarks/ray_local.py --n 60 --rounds 2 --out runs/benchmarks/ray_local.json

(a quick check that it works: ``python benchmarks/ray_local.py --n 10 --rounds 1 --out /tmp/ray_local.json``)

The posts are a stratified sample (seed 13) of each default task's validation split, mixed (as in
``benchmarks/mini_speed.py``); the model is the default, mentalglm-mini, labels only (``--no-explain``), the three
default tasks, ``--chunk 16``. Each round runs the whole job twice, as a user would, interleaved so that a change
in machine load hits both alike:

- local: ``mentalglm analyze --no-explain``: the model opens in this process (llama.cpp on all cores);
- ray: ``mentalglm analyze --no-explain --ray``: an embedded cluster starts (``ray.init``, all cores), one actor
  of 2 CPUs opens the model, Ray Data feeds it batches of 16 posts, the cluster shuts down.

Both go through the command's own code (``commands.analyze.open_analyzer``, ``cluster.open_on_ray``), only not in
subprocesses, so each phase is timed: cluster start, model open (local) or first row back (Ray: actor start, its
model open, the first batch), the whole job; and the rate while computing (local: after the model opened; Ray: the
actor's posts over the summed time of its batches, which is what each actor of a cluster adds). A warm-up post
first puts the model file in the page cache. Rows are compared field by field (all but ``latency_ms``): missing
or extra rows, labels, the high-risk flag, the largest score difference. ``--parallel 1`` (one sequence at a time)
takes llama.cpp's batch composition out of the comparison (see docs/scale.md). The peak RSS of the actor process
is read from /proc (VmHWM) while it runs; the local figure is this process's peak (ru_maxrss), which after the first
round also holds the driver's share of Ray.

Prints a Markdown table and writes everything, with the command, machine and date, to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from mentalglm.cli import build_parser
from mentalglm.cluster import open_on_ray
from mentalglm.commands.analyze import open_analyzer
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.inputs import Post, read_posts
from mentalglm.tasks import DEFAULT_TASKS

ACTOR_MARK = b"AnalyzeActor"  # in the process title Ray gives an actor of mentalglm.cluster


def sample_posts(n: int) -> list[Post]:
    """n posts taken in turn from each default task's validation sample, so every block mixes the corpora."""
    per_task = -(-n // len(DEFAULT_TASKS))
    pools = [[Post(f"{task}:{e.id}", e.text) for e in stratified_sample(task_splits(task)["validation"], per_task,
                                                                         seed=13)]
             for task in DEFAULT_TASKS]
    return [post for group in zip(*pools) for post in group][:n]


class ActorMemory(threading.Thread):
    """Polls /proc for the actor processes and keeps the largest peak RSS (VmHWM) seen, in MB."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.peak_mb, self.pids, self._done = every, 0.0, set(), threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.poll()
            self._done.wait(self.every)

    def poll(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if ACTOR_MARK not in f.read():
                        continue
                with open(f"/proc/{entry.name}/status") as f:
                    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            except (OSError, StopIteration, ValueError):
                continue
            self.pids.add(int(entry.name))
            self.peak_mb = max(self.peak_mb, hwm / 1024)

    def stop(self) -> None:
        self.poll()
        self._done.set()
        self.join()


def timed_rows(stream, start: float) -> tuple[list[dict], list[float]]:
    rows, times = [], []
    for a in stream:
        rows.append(json.loads(a.to_json()))
        times.append(time.perf_counter() - start)
    return rows, times


def actor_rate(rows: list[dict], tasks: int) -> float | None:
    """posts/s of the actors while they compute: posts over the summed time of their batches (the rows of one unit
    share its ``latency_ms``), without the cluster's and the actors' start and without Ray's hand-over of rows."""
    units = {(r["latency_ms"], r["model"]) for r in rows if r["latency_ms"]}
    seconds = sum(latency for latency, _ in units) / 1000
    return len(rows) / tasks / seconds if seconds else None


def run_local(argv: list[str], posts: list[Post]) -> dict:
    args = build_parser().parse_args(argv)
    tasks = tuple(DEFAULT_TASKS)
    start = time.perf_counter()
    analyzer = open_analyzer(args, tasks)
    opened = time.perf_counter() - start
    rows, times = timed_rows(analyzer.stream(posts, chunk=args.chunk), start)
    total = time.perf_counter() - start
    analyzer.backend.close()
    return {"rows": rows, "row_times_s": times, "open_s": opened, "first_row_s": times[0], "total_s": total,
            "compute_posts_s": len(posts) / (total - opened),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_ray(argv: list[str], posts: list[Post]) -> dict:
    from functools import partial

    args = build_parser().parse_args([*argv, "--ray"])
    tasks = tuple(DEFAULT_TASKS)
    memory = ActorMemory()
    start = time.perf_counter()
    analyzer = open_on_ray(args, partial(open_analyzer, tasks=tasks), tasks)
    up = time.perf_counter() - start
    memory.start()
    try:
        rows, times = timed_rows(analyzer.stream(posts, chunk=args.chunk), start)
        total = time.perf_counter() - start
    finally:
        memory.stop()
        analyzer.backend.close()
    return {"rows": rows, "row_times_s": times, "cluster_start_s": up, "first_row_s": times[0], "total_s": total,
            "compute_posts_s": actor_rate(rows, len(tasks)), "actors": analyzer.actors,
            "actor_pids": sorted(memory.pids), "actor_peak_rss_mb": memory.peak_mb}


def differences(a: list[dict], b: list[dict]) -> dict:
    """How two runs' rows differ (latency_ms aside): missing or extra (id, task) rows, and per field the rows whose
    value differs; labels, the high-risk flag and the largest difference of a score, which llama.cpp's batched
    decoding moves a little when other sequences share a post's steps (see docs/scale.md)."""
    key = lambda r: (r["id"], r["task"])  # noqa: E731
    left, right = {key(r): r for r in a}, {key(r): r for r in b}
    both = left.keys() & right.keys()
    fields: dict[str, int] = {}
    for k in both:
        for f in left[k]:
            if f != "latency_ms" and left[k][f] != right[k].get(f):
                fields[f] = fields.get(f, 0) + 1
    gaps = [abs(p - right[k]["scores"].get(label, p)) for k in both for label, p in (left[k]["scores"] or {}).items()]
    return {"rows": len(both), "missing_or_extra": len(left.keys() ^ right.keys()), "fields": fields,
            "labels_differ": fields.get("labels", 0), "high_risk_differ": fields.get("high_risk", 0),
            "max_score_gap": max(gaps, default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="validation posts")
    ap.add_argument("--rounds", type=int, default=2, help="local + ray jobs, interleaved")
    ap.add_argument("--chunk", type=int, default=16, help="posts per batch (an actor's batch, a local chunk)")
    ap.add_argument("--parallel", type=int, help="--parallel for both runs (default: the model's, from the machine)")
    ap.add_argument("--out", default="runs/benchmarks/ray_local.json")
    opts = ap.parse_args()
    posts = sample_posts(opts.n)
    with tempfile.TemporaryDirectory() as tmp:
        # The posts as a file, read back as the command reads one (the Ray items carry what read_posts gives).
        path = Path(tmp) / "posts.jsonl"
        path.write_text("".join(json.dumps({"id": p.id, "text": p.text}, ensure_ascii=False) + "\n" for p in posts),
                        encoding="utf-8")
        posts = list(read_posts(path))
        argv = ["analyze", "--no-explain", "--file", str(path), "--chunk", str(opts.chunk),
                *(["--parallel", str(opts.parallel)] if opts.parallel else [])]
        run_local(argv, posts[:1])  # warm-up, not counted: the model file into the page cache
        rounds = []
        for r in range(opts.rounds):
            local = run_local(argv, posts)
            print(f"round {r + 1}: local {local['total_s']:.1f} s", flush=True)
            ray = run_ray(argv, posts)
            print(f"round {r + 1}: ray {ray['total_s']:.1f} s", flush=True)
            rounds.append({"local": local, "ray": ray, "differences": differences(local["rows"], ray["rows"])})
    n, tasks = len(posts), len(DEFAULT_TASKS)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    fmt = lambda x: "—" if x is None or x != x else f"{x:.2f}"  # noqa: E731

    def avg(kind: str, field: str) -> float:
        return mean([r[kind][field] for r in rounds if r[kind].get(field) is not None])

    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"\n{when}, {platform.machine()}, {os.cpu_count()} CPUs, {n} posts x {tasks} tasks, labels only, "
          f"--chunk {opts.chunk}{f' --parallel {opts.parallel}' if opts.parallel else ''}, {opts.rounds} round(s) "
          "interleaved\n")
    print("| run | posts/s, whole job | posts/s, computing | start (s) | first row (s) | total (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| local | {n / avg('local', 'total_s'):.2f} | {fmt(avg('local', 'compute_posts_s'))} | "
          f"{avg('local', 'open_s'):.1f} (model) | {avg('local', 'first_row_s'):.1f} | {avg('local', 'total_s'):.1f} | "
          f"{avg('local', 'peak_rss_mb'):.0f} (process) |")
    print(f"| ray, {rounds[0]['ray']['actors']} actor(s) | {n / avg('ray', 'total_s'):.2f} | "
          f"{fmt(avg('ray', 'compute_posts_s'))} | {avg('ray', 'cluster_start_s'):.1f} (cluster) | "
          f"{avg('ray', 'first_row_s'):.1f} | {avg('ray', 'total_s'):.1f} | {avg('ray', 'actor_peak_rss_mb'):.0f} "
          "(actor) |")
    print("\nposts/s computing: local, after the model opened; Ray, the actor's posts over the summed time of its "
          "batches (a node adds this per actor it holds)")
    for r, round_ in enumerate(rounds, 1):
        d = round_["differences"]
        print(f"round {r}: {d['rows']} rows compared, {d['missing_or_extra']} missing or extra; labels differ in "
              f"{d['labels_differ']}, high_risk in {d['high_risk_differ']}; largest score difference "
              f"{d['max_score_gap']:.4f}; fields that differ (rows): {d['fields'] or 'none'}")
    ray_compute = avg("ray", "compute_posts_s")
    batches = n / ray_compute if ray_compute == ray_compute else float("nan")
    print(f"Ray's overhead on this job: {avg('ray', 'total_s') - avg('local', 'total_s'):.1f} s; of the Ray job's "
          f"{avg('ray', 'total_s'):.1f} s, cluster start {avg('ray', 'cluster_start_s'):.1f} s, batches "
          f"{batches:.1f} s, the rest ({avg('ray', 'total_s') - avg('ray', 'cluster_start_s') - batches:.1f} s) the "
          f"actor's start and model open and Ray's scheduling and hand-over (locally: model open "
          f"{avg('local', 'open_s'):.1f} s)")
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "date": when,
                               "machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                                           "python": platform.python_version()},
                               "posts": n, "tasks": list(DEFAULT_TASKS), "chunk": opts.chunk, "rounds": rounds},
                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
