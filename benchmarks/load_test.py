"""A bounded load test of `mentalglm serve` on loopback: latency, 429s and errors at several concurrency levels.

    python benchmarks/load_test.py                                   # mentalglm-mini, 1/4/16 clients, 40 requests each
    python benchmarks/load_test.py --parallel 1,4 --explain both --concurrency 4,16 --requests 16
    python benchmarks/load_test.py --concurrency 1,8,32 --requests 64 --queue 4
    python benchmarks/load_test.py --url http://127.0.0.1:8000       # a server you started yourself

Starts `mentalglm serve` as a subprocess for each --parallel value (unless --url), then for each concurrency
level runs that many client threads that send POST /v1/analyze (one post, task suicide_risk, labels only or
with its explanation as --explain says) until --requests have been sent.
A 429 is counted as the server's answer (that is what the bounded queue is for) and is not retried; the client
then waits as its Retry-After says (at most 2 s, to keep the test short) before its next post. Reports
p50/p95 latency of the 200s, the 429s (and how fast they come back), other errors, and successful requests/s.
Posts come from ../shared/data when present (SOS-HL-1K), else from a few built-in lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import httpx
from rich.console import Console
from rich.table import Table

FALLBACK_POSTS = ["今天考试又没过，我就是个废物", "周末和朋友去爬山，心情很好", "最近总是睡不着，觉得很累",
                  "大家一定都在背后笑我", "工作压力好大，不知道该怎么办"]


def posts(n: int) -> list[str]:
    try:
        from mentalglm.data.sources import load_task

        texts = [e.text for e in load_task("suicide_risk")[:n]]
        return texts or FALLBACK_POSTS
    except Exception:  # noqa: BLE001 - no data here: the built-in lines do
        return FALLBACK_POSTS


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def start_server(args, parallel: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mentalglm.cli", "serve", "--model", args.model, "--port", str(port),
           "--queue", str(args.queue), "--timeout", str(args.timeout), "--parallel", str(parallel),
           "--n-ctx", str(args.n_ctx)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def level(url: str, texts: list[str], concurrency: int, total: int, timeout: float, explain: bool) -> dict:
    results: list[tuple[int, float]] = []
    counter = iter(range(total))

    def client():
        with httpx.Client(base_url=url, timeout=timeout) as http:
            for i in counter:  # shared iterator: the clients send `total` requests between them
                body = {"text": texts[i % len(texts)], "tasks": ["suicide_risk"], "explain": explain}
                start = time.perf_counter()
                try:
                    response = http.post("/v1/analyze", json=body)
                    status = response.status_code
                except httpx.HTTPError:
                    status, response = -1, None
                results.append((status, time.perf_counter() - start))
                if status == 429:  # a polite client: wait as told before the next post
                    time.sleep(min(2.0, float(response.headers.get("retry-after", 1))))

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    wall = time.perf_counter() - start
    ok = [t for s, t in results if s == 200]
    busy = [t for s, t in results if s == 429]
    return {"explain": explain, "concurrency": concurrency, "sent": len(results), "ok": len(ok), "429": len(busy),
            "errors": len(results) - len(ok) - len(busy), "p50": percentile(ok, 0.5), "p95": percentile(ok, 0.95),
            "p50_429": percentile(busy, 0.5), "ok_per_s": len(ok) / wall, "wall": wall}


def main() -> None:
    from mentalglm.llm.catalog import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--url", help="test a running server instead of starting one")
    ap.add_argument("--parallel", default="1,4", help="the server's --parallel values to compare (one server each)")
    ap.add_argument("--explain", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=40, help="requests per concurrency level")
    ap.add_argument("--queue", type=int, default=8, help="the server's --queue")
    ap.add_argument("--timeout", type=float, default=120.0, help="the server's --timeout (and the clients')")
    ap.add_argument("--threads", type=int, help="the server's llama.cpp threads")
    ap.add_argument("--n-ctx", type=int, default=2048, help="the server's --n-ctx (per sequence)")
    args = ap.parse_args()
    texts = posts(200)
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.explain]
    rows, model = [], args.model
    for parallel in ([None] if args.url else [int(x) for x in args.parallel.split(",")]):
        proc, url = (None, args.url.rstrip("/")) if args.url else start_server(args, parallel)
        try:
            with httpx.Client(base_url=url, timeout=args.timeout) as http:  # warm-up: the prompt prefix in the cache
                http.post("/v1/analyze", json={"text": texts[0], "tasks": ["suicide_risk"], "explain": False})
                model = http.get("/healthz").json()["model"]
            for explain in modes:
                for c in (int(x) for x in args.concurrency.split(",")):
                    rows.append({"parallel": parallel, **level(url, texts, c, args.requests, args.timeout + 10,
                                                               explain)})
                    Console(stderr=True).print(f"--parallel {parallel}, explain {explain}, {c} clients: "
                                               f"{rows[-1]['ok_per_s']:.2f} answered/s")
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    table = Table(title=f"load test: {model}, queue {args.queue}, {args.requests} requests per level, "
                        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    for col in ("--parallel", "explain", "clients", "sent", "200", "429", "errors", "p50 s", "p95 s", "p50 of 429 s",
                "200/s", "x --parallel 1"):
        table.add_column(col, justify="right")
    for r in rows:
        base = next((b for b in rows if b["parallel"] == 1 and b["explain"] == r["explain"]
                     and b["concurrency"] == r["concurrency"]), None)
        ratio = f"{r['ok_per_s'] / base['ok_per_s']:.2f}" if base and base["ok_per_s"] else "—"
        table.add_row(str(r["parallel"] or "?"), "yes" if r["explain"] else "no", str(r["concurrency"]), str(r["sent"]),
                      str(r["ok"]), str(r["429"]), str(r["errors"]), f"{r['p50']:.2f}", f"{r['p95']:.2f}",
                      f"{r['p50_429']:.3f}" if r["429"] else "–", f"{r['ok_per_s']:.2f}", ratio)
    Console(width=160).print(table)
    print(f"median post length {statistics.median(len(t) for t in texts):.0f} characters")


if __name__ == "__main__":
    main()
