"""What one llama.cpp step costs on this CPU as the batch grows: prompt tokens/s and decode tokens/s.

    python benchmarks/decode_batch.py
    python benchmarks/decode_batch.py --model qwen2.5-coder-0.5b-instruct-q4 --sizes 1,8,32

Two measurements on the same model and threads:

- prompt evaluation: ``Llama.eval`` of a prompt of N tokens in a fresh context (one sequence), tokens/s;
- decoding: N short requests generated together by the batch engine (``--parallel N``), 48 tokens each,
  tokens/s over the whole call (N = 1 is the one-at-a-time path).

Batched decoding can gain at most what a batch of N prompt tokens gains over one token; the gap between the
two rows is the price of decoding (every token an output, attention over every sequence's cells).
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from mentalglm.llm.base import GenConfig, Request
from mentalglm.llm.catalog import ZERO_SHOT_MODEL
from mentalglm.llm.registry import open_backend


def prompt_rate(backend, n: int) -> float:
    tokens = backend.llm.tokenize(("今天天气很好，我们去公园散步。" * 200).encode(), add_bos=False)[:n]
    backend.llm.reset()
    start = time.perf_counter()
    backend.llm.eval(tokens)
    return n / (time.perf_counter() - start)


def decode_rate(model: str, n: int, threads: int | None) -> float:
    backend, _ = open_backend(model, n_ctx=1024, n_threads=threads, parallel=n)
    requests = [Request(({"role": "user", "content": f"请介绍第{i + 1}个中国城市，写得越详细越好。"},))
                for i in range(n)]
    backend.generate(requests[:1], GenConfig(max_tokens=2))  # warm up
    start = time.perf_counter()
    generations = backend.generate(requests, GenConfig(max_tokens=48))
    seconds = time.perf_counter() - start
    backend.close()
    return sum(g.completion_tokens for g in generations) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=ZERO_SHOT_MODEL, help="a registry GGUF model (the default model's base)")
    ap.add_argument("--sizes", default="1,4,8,16,32")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    single, _ = open_backend(args.model, n_ctx=2048, n_threads=args.threads, parallel=1)
    prompt = {n: prompt_rate(single, max(n, 2)) for n in sizes}
    single.close()
    decode = {n: decode_rate(args.model, n, args.threads) for n in sizes}
    table = Table(title=f"{args.model}, {platform.machine()}, {args.threads or 'all'} threads "
                        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    for col in ("batch N", "prompt tokens/s", "decode tokens/s (N sequences)", "decode x N=1"):
        table.add_column(col, justify="right")
    for n in sizes:
        table.add_row(str(n), f"{prompt[n]:.1f}", f"{decode[n]:.1f}", f"{decode[n] / decode[sizes[0]]:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
