"""Do a model's answers carry explanations, and do the explanations quote the post? From prediction files.

    python benchmarks/explanation_coverage.py runs/trained_explain \
        --labels-only runs/trained/qwen2.5-coder-0.5b-instruct-q4

Reads ``<folder>/<task>.jsonl`` written with explanations on (``mentalglm eval predict`` or ``analyze --out``)
and prints, per task: answers with a non-empty explanation, explanations quoting the post (“…”), the median
explanation length in characters and the mean seconds per post. With ``--labels-only`` (a folder of the same
model's labels-only predictions) it also counts the posts present in both whose labels agree: greedy decoding
writes the label before the explanation, so they should all agree.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from mentalglm.data.sources.io import read_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="predictions with explanations, one <task>.jsonl per task")
    ap.add_argument("--labels-only", type=Path, help="labels-only predictions of the same model, to compare labels")
    args = ap.parse_args()
    print("| task | answers with an explanation | explanations quoting the post | median length (chars) | "
          "seconds per post | same label as labels-only |")
    print("|---|---|---|---|---|---|")
    for path in sorted(args.folder.glob("*.jsonl")):
        rows = [row for _, row in read_jsonl(path)]
        texts = [(r.get("explanation") or "").strip() for r in rows]
        same = "—"
        if args.labels_only and (args.labels_only / path.name).exists():
            other = {r["id"]: r["labels"] for _, r in read_jsonl(args.labels_only / path.name)}
            both = [r for r in rows if r["id"] in other]
            same = f"{sum(other[r['id']] == r['labels'] for r in both)}/{len(both)}"
        n = len(rows)
        print(f"| {path.stem} | {sum(map(bool, texts))}/{n} | {sum('“' in t for t in texts)}/{n} | "
              f"{statistics.median(len(t) for t in texts):.0f} | "
              f"{statistics.mean(r.get('latency_ms', 0) for r in rows) / 1000:.1f} | {same} |")


if __name__ == "__main__":
    main()
