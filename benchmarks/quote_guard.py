"""What holding quotes to the post costs (llm/quotes.py): reading a vocabulary's bytes once, then the mask per step.

    python benchmarks/quote_guard.py                       # the packaged 1.5B's vocabulary (the explainers' is the same)

Loads the GGUF's vocabulary only (no weights), builds the token table, and times ``QuoteGuard.mask`` on a
validation post in the three states a decoding step can be in: outside a quote, a quote just opened (every
character of the post may start it), and inside a quote.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone

from mentalglm.data.sources import task_splits
from mentalglm.llm.catalog import REGISTRY, assemble_packaged
from mentalglm.llm.quotes import QuoteGuard, TokenTable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4", help="a packaged model's registry name")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    from llama_cpp import Llama

    llm = Llama(model_path=str(assemble_packaged(REGISTRY[args.model])), vocab_only=True, verbose=False)
    start = time.perf_counter()
    table = TokenTable.of_llama(llm)
    built = time.perf_counter() - start
    post = max((e.text for e in task_splits("cognitive_distortion")["validation"][:50]), key=len)[:200]
    opened = "理由：帖子中提到“"
    steps = {"outside a quote": "理由：这表明作者", "a quote just opened": opened,
             "inside a quote": opened + post[:4]}
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}; {args.model}: {table.size:,} tokens, "
          f"{len(table.marked)} with a quote mark; the table in {built:.2f} s; a post of {len(post)} characters\n")
    print("| step | ms per mask | tokens allowed |")
    print("|---|---|---|")
    for name, written in steps.items():
        guard = QuoteGuard(post, table)
        allowed = guard.mask(written.encode())  # the first call outside a quote builds its mask
        start = time.perf_counter()
        for _ in range(args.repeat):
            guard.mask(written.encode())
        ms = (time.perf_counter() - start) / args.repeat * 1000
        print(f"| {name} | {ms:.2f} | {table.size if allowed is None else int(allowed.sum()):,} |")


if __name__ == "__main__":
    main()
