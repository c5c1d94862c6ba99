"""What one llama.cpp step costs on this CPU as the batch grows: prompt tokens/s and decode tokens/s.

    python benchmarks/decode_batch.py
    python benchmarks/decode_batch.py --model qwen2.5-coder-0.5b-instruct-q4 --sizes 1,8,32

Two measurements on the same model and threads:

- prompt evaluation: ``Llama.eval`` of a prompt of N tokens in a fresh context (one sequence), tokens/s;
- decoding: N short requests generated together by the batch engine (``--parallel N``), 48 tokens each,
  tokens/s over the whole call (N = 1 is the one-at-a-time path).

Batched decoding can gain at most what a batch of N prompt tokens gains over one token; the gap between the
two rows is the price of decoding (every token an output, the attention over each sequence's cells).

With --layouts, how the KV cache is laid out, measured at the llama.cpp API: N sequences holding --context
tokens each (their own prompts, evaluated first, not timed), then decode steps of one token per sequence, in
one unified cache (every token's attention spans every sequence's cells), with a stream per sequence (the
batch engine's layout), and with a stream per sequence but every other sequence id (llama.cpp splits a step
over streams into runs of consecutive ids, one matrix product each: why the engine keeps them consecutive).

    python benchmarks/decode_batch.py --layouts --sizes 32 --context 256
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


LAYOUTS = (("one unified cache", True, 1), ("a stream per sequence", False, 1),
           ("a stream per sequence, every other id", False, 2))


def layout_rates(backend, n: int, context: int, steps: int = 16) -> dict[str, float]:
    """Decode tokens/s of ``n`` sequences of ``context`` tokens each, one token per sequence a step, per layout."""
    import llama_cpp
    from llama_cpp import _internals

    llm = backend.llm
    text = llm.tokenize(("我觉得自己什么都做不好，今天又失眠了。" * 40 * n).encode(), add_bos=False)
    rates = {}
    for name, unified, spacing in LAYOUTS:
        seqs = [i * spacing for i in range(n)]
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = seqs[-1] + 1
        params.n_ctx = params.n_seq_max * (-(-(context + steps) // 256) * 256)
        params.n_batch = params.n_ubatch = 512
        params.kv_unified = unified
        ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1, verbose=False)

        def decode(rows):
            b = batch.batch
            b.n_tokens = len(rows)
            for i, (token, pos, seq) in enumerate(rows):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = token, pos, 1, seq, True
            if llama_cpp.llama_decode(ctx.ctx, b) != 0:
                raise SystemExit(f"llama_decode failed ({name})")

        for k, seq in enumerate(seqs):  # each sequence its own prompt, so no cells are shared
            own = text[k * 7:k * 7 + context]
            for start in range(0, context, 512):
                decode([(own[j], j, seq) for j in range(start, min(context, start + 512))])
        began = time.perf_counter()
        for step in range(steps):
            decode([(text[step], context + step, seq) for seq in seqs])
        rates[name] = n * steps / (time.perf_counter() - began)
        batch.close()
        ctx.close()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=ZERO_SHOT_MODEL, help="a registry GGUF model (the default model's base)")
    ap.add_argument("--sizes", default="1,4,8,16,32")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--layouts", action="store_true", help="compare KV cache layouts instead (see above)")
    ap.add_argument("--context", type=int, default=256, help="--layouts: tokens each sequence holds")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.layouts:
        return print_layouts(args, sizes)
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


def print_layouts(args, sizes: list[int]) -> None:
    backend, _ = open_backend(args.model, n_ctx=512, n_threads=args.threads, parallel=1)
    rates = {n: layout_rates(backend, n, args.context) for n in sizes}
    backend.close()
    table = Table(title=f"{args.model}, {platform.machine()}, {args.threads or 'all'} threads, {args.context} tokens "
                        f"a sequence ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    for col in ("sequences", *(name for name, *_ in LAYOUTS), "streams x unified"):
        table.add_column(col, justify="right")
    for n in sizes:
        r = [rates[n][name] for name, *_ in LAYOUTS]
        table.add_row(str(n), *(f"{x:.1f} tokens/s" for x in r), f"{r[1] / r[0]:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
