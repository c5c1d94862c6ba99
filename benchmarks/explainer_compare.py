"""The trained explainer against today's explanations (the heads' 1.5B model continuing its prompt), on validation posts.

    python benchmarks/explainer_compare.py --heads runs/explainer/heads --n 60 --levels-n 100 \
        --bertscore-model ~/.cache/mentalglm/hf/qwen2.5-coder-0.5b-instruct-q4 --scores-out runs/explainer/scores.json

Both variants are one ``Analyzer`` over the same heads and the same 1.5B model (labels identical by construction:
the explainer never sees a state); they differ only in who writes the explanation (``--explainer base`` or
``trained``). Interleaved in blocks of --block posts, so load on the machine hits both alike.

1. **Full analysis, the three default tasks** on --n validation posts (a stratified sample, seed 13, of each
   default task's validation split, mixed): posts/s, per task the share of explanations whose quotes are all the
   post's own words (``evidence_ok``), the share the consistency reader finds arguing for the row's label
   (``explanation_consistent``), mean length in characters, and unsure rows. Peak memory of the process (both
   models loaded) at the end.
2. **Against SOS-4K's reference explanations** (``suicide_risk_levels``, --levels-n validation posts that have one):
   character ROUGE-L, chrF and (with --bertscore-model, any local encoder) BERTScore F1 of each variant's
   explanation against the reference, beside two floors: a template that only quotes the post, and another post's
   reference. Paired bootstrap intervals (1,000 resamples of the posts, seed 13) of trained - base and
   trained - each floor.

Writes the rows to --out (``<explainer>-<task>.jsonl``: each post for its own corpus's task, ready for
``mentalglm data review-sample base=base-<task>.jsonl trained=trained-<task>.jsonl ...``; ``*-all-tasks.jsonl``:
every row) and, with --scores-out, the numbers as JSON (what `mentalglm heads explainer --scores`
puts in the explainer's manifest).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.explanations import BertScorer, lexical_scores
from mentalglm.inputs import Post
from mentalglm.llm.catalog import DEFAULT_MODEL
from mentalglm.llm.registry import open_backend
from mentalglm.tasks import DEFAULT_TASKS

LEVELS = "suicide_risk_levels"
VARIANTS = ("trained", "base")
FLAGS = {"unguarded", "unquoted", "brief"}


def analyzer_config(variant: str, **kw) -> AnalyzeConfig:
    """A variant: who writes (``base``, ``trained``, ``auto``), with ``-unguarded`` its quotes left free
    (llm/quotes.py), with ``-unquoted`` no quote of the post to start from, with ``-brief`` only the first sentence
    (``AnalyzeConfig.brief``), with ``@FOLDER`` another heads folder
    (``base-unguarded-unquoted@runs/mini2/model``: the explanations of the build before #22)."""
    name, _, heads = variant.partition("@")
    writer, *flags = name.split("-")
    if set(flags) - FLAGS:  # a typo must not quietly run the default
        raise SystemExit(f"unknown variant flag in {variant!r}: {sorted(set(flags) - FLAGS)}")
    if heads:
        kw["heads"] = heads
    return AnalyzeConfig(explainer=writer, guard_quotes="unguarded" not in flags, quote_first="unquoted" not in flags,
                         brief="brief" in flags, **kw)


def file_name(variant: str) -> str:
    """A variant's name as a file name (its heads folder's path flattened)."""
    return variant.replace("/", "_")


def default_task_posts(n: int, tasks=DEFAULT_TASKS) -> tuple[list[Post], dict[str, str]]:
    """n posts taken in turn from each default task's (or each of ``tasks``') validation sample (as
    benchmarks/mini_speed.py takes them), and the task each post's corpus labels."""
    per_task = -(-n // len(tasks))
    pools = [[(Post(e.id, e.text), task) for e in stratified_sample(task_splits(task)["validation"], per_task, seed=13)]
             for task in tasks]
    mixed = [item for group in zip(*pools) for item in group][:n]
    return [post for post, _ in mixed], {post.id: task for post, task in mixed}


def quote_template(post: str, chars: int = 150) -> str:
    """The floor that only quotes the post."""
    return f"帖子中写道：“{post.strip()[:chars]}”。"


def run_interleaved(analyzers: dict, posts: list[Post], block: int, label: str) -> tuple[dict, dict]:
    rows = {v: [] for v in analyzers}
    seconds = dict.fromkeys(analyzers, 0.0)
    for i in range(0, len(posts), block):
        for name, analyzer in analyzers.items():
            start = time.perf_counter()
            rows[name] += list(analyzer.stream(posts[i:i + block]))
            seconds[name] += time.perf_counter() - start
        print(f"{label}: {min(i + block, len(posts))}/{len(posts)} posts", flush=True)
    return rows, seconds


def rates(rows) -> dict:
    ok = [r.evidence_ok for r in rows if r.evidence_ok is not None]
    consistent = [r.explanation_consistent for r in rows if r.explanation_consistent is not None]
    return {"rows": len(rows), "evidence_ok": float(np.mean(ok)) if ok else None,
            "consistent": float(np.mean(consistent)) if consistent else None, "consistency_read": len(consistent),
            "mean_chars": float(np.mean([len(r.explanation) for r in rows])),
            "unsure": sum(1 for r in rows if r.runner_up)}


def paired(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 13) -> tuple[float, float, float]:
    """mean(a - b) and its 95% bootstrap interval over the posts."""
    d = a - b
    rng = np.random.default_rng(seed)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(resamples)]
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def reference_scores(rows: dict, examples, bertscore: str | None, focus: str) -> dict:
    refs = [e.explanation for e in examples]
    candidates = {name: [r.explanation for r in rows[name]] for name in rows}
    candidates["quote-only template"] = [quote_template(e.text) for e in examples]
    candidates["another post's reference"] = refs[1:] + refs[:1]
    per = {}
    for name, texts in candidates.items():
        lex = [lexical_scores(c, r) for c, r in zip(texts, refs)]
        per[name] = {"rougeL": np.array([s["rougeL"] for s in lex]), "chrF": np.array([s["chrf"] for s in lex])}
    if bertscore:  # minutes a set on a CPU: after the cheap scores, the references embedded once
        scorer = BertScorer(bertscore, layer=12)
        ref_vectors = scorer._embed(refs)
        for name, texts in candidates.items():
            scores = scorer.score_embedded(scorer._embed(texts), ref_vectors)
            per[name]["BERTScore"] = np.array([s["bertscore_f1"] for s in scores])
    for name, texts in candidates.items():
        per[name]["chars"] = np.array([len(t) for t in texts], dtype=float)
    out = {}
    for name, metrics in per.items():
        out[name] = {m: float(v.mean()) for m, v in metrics.items()}
        if name != focus:
            out[name][f"{focus}_minus_this"] = {m: paired(per[focus][m], v) for m, v in metrics.items()
                                                if m != "chars"}
    return out


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", required=True, help="heads folder with an explainer/ (e.g. the packaged mentalglm-mini)")
    ap.add_argument("--n", type=int, default=60, help="posts for the three default tasks")
    ap.add_argument("--levels-n", type=int, default=100, help="SOS-4K validation posts with a reference explanation")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--bertscore-model", help="a local encoder folder for BERTScore (layer 12)")
    ap.add_argument("--out", default="runs/benchmarks/explainer", help="folder for the rows: <explainer>.jsonl")
    ap.add_argument("--scores-out", help="write the numbers as JSON here")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="who writes, comma-separated, the first compared with the others: base, trained, each with "
                         "-unguarded for quotes left free at decoding (e.g. base,base-unguarded)")
    args = ap.parse_args()
    variants = tuple(args.variants.split(","))
    focus, other = variants[0], variants[-1]

    backend, style = open_backend(DEFAULT_MODEL)
    analyzers = {v: Analyzer(backend, analyzer_config(v, style=style, heads=args.heads)) for v in variants}
    assert all(a.explainer is not None for v, a in analyzers.items() if v.startswith("trained")), \
        f"{args.heads} has no explainer/"
    posts, own_task = default_task_posts(args.n)
    rows, seconds = run_interleaved(analyzers, posts, args.block, "default tasks")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    levels_examples = stratified_sample([e for e in task_splits(LEVELS)["validation"] if e.explanation],
                                        args.levels_n, seed=13)
    level_analyzers = {v: Analyzer(backend, analyzer_config(v, tasks=(LEVELS,), style=style, heads=args.heads))
                       for v in variants}
    level_rows, level_seconds = run_interleaved(level_analyzers, [Post(e.id, e.text) for e in levels_examples],
                                                args.block, LEVELS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for v in variants:  # predictions files per explainer and task, each post for its own corpus's task
        for task in (*DEFAULT_TASKS, LEVELS):
            with open(out / f"{file_name(v)}-{task}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(r.to_json() + "\n" for r in [*rows[v], *level_rows[v]]
                             if r.task == task and own_task.get(r.id, LEVELS) == task)
        with open(out / f"{file_name(v)}-all-tasks.jsonl", "w", encoding="utf-8") as f:
            f.writelines(r.to_json() + "\n" for r in rows[v])
    refs = reference_scores(level_rows, levels_examples, args.bertscore_model, focus)

    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, llama.cpp on all cores"
    print(f"\n{stamp}\n\nFull analysis, {len(posts)} validation posts x {len(DEFAULT_TASKS)} tasks "
          f"({', '.join(DEFAULT_TASKS)}); peak memory {peak_mib:,.0f} MiB with both models\n")
    print(f"| explanations by | posts/s | vs {other} | task | evidence_ok % | consistent % (read) | mean chars | unsure |")
    print("|---|---|---|---|---|---|---|---|")
    speed = {v: len(posts) / seconds[v] for v in variants}
    per_task = {}
    for v in variants:
        for k, task in enumerate(DEFAULT_TASKS):
            r = per_task.setdefault(v, {})[task] = rates([x for x in rows[v] if x.task == task])
            lead = (f"| {v} | {speed[v]:.3f} | {speed[v] / speed[other]:.2f}x" if k == 0 else "| | |")
            print(f"{lead} | {task} | {pct(r['evidence_ok'])} | {pct(r['consistent'])} ({r['consistency_read']}) | "
                  f"{r['mean_chars']:.0f} | {r['unsure']} |")
    level_rates = {v: rates(level_rows[v]) for v in variants}
    print(f"\nSOS-4K validation, {len(levels_examples)} posts with reference explanations ({LEVELS}; the heads' "
          f"label): scores against the reference (0-100); [95% paired interval of {focus} - this]\n")
    metrics = [m for m in ("rougeL", "chrF", "BERTScore") if m in refs[focus]]
    print("| explanation | " + " | ".join(metrics) + " | chars | evidence_ok % | consistent % |")
    print("|---|" + "---|" * (len(metrics) + 3))
    for name, score in refs.items():
        cells = []
        for m in metrics:
            diff = score.get(f"{focus}_minus_this", {}).get(m)
            cells.append(f"{score[m]:.1f}" + (f" [{diff[1]:+.1f}, {diff[2]:+.1f}]" if diff else ""))
        lr = level_rates.get(name)
        print(f"| {name} | " + " | ".join(cells) + f" | {score['chars']:.0f} | "
              f"{pct(lr['evidence_ok']) if lr else '—'} | {pct(lr['consistent']) if lr else '—'} |")

    if args.scores_out:
        scores = {"date": stamp, "default_tasks": {"posts": len(posts), "posts_per_second": speed,
                                                   "peak_memory_mib": round(peak_mib), "per_task": per_task},
                  LEVELS: {"posts": len(levels_examples), "against_references": refs, "rates": level_rates,
                           "posts_per_second": {v: len(levels_examples) / level_seconds[v] for v in variants}},
                  "command": "python benchmarks/explainer_compare.py " + " ".join(
                      f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)}
        Path(args.scores_out).write_text(json.dumps(scores, indent=1, ensure_ascii=False), encoding="utf-8")
    backend.close()


if __name__ == "__main__":
    main()
