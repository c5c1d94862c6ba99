"""`mentalglm analyze`: a post, a file or stdin in; a label and an explanation per task out."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .. import DISCLAIMER
from ..analyze import Analysis, AnalyzeConfig, Analyzer, completed_pairs, write_stream
from ..inputs import Post, read_posts
from ..safety import resources_message
from ..tasks import DEFAULT_TASKS, get_task
from ..heads import HeadsError
from .common import add_model_args, heads_options, open_from_args

log = logging.getLogger("mentalglm")

EXAMPLES = """examples:
  mentalglm analyze "我真的好累，感觉所有人都在针对我，活着没有意思"
  mentalglm analyze --tasks suicide_risk_levels,emotion "今天考试又没过，我就是个废物"
  mentalglm analyze --file posts.csv --text-column content --out results.jsonl
  mentalglm analyze --file posts.csv --out results.jsonl --resume      # continue an interrupted run
  mentalglm analyze --file posts.jsonl --no-explain --tasks suicide_risk --out risk.jsonl  # labels only, fast
  cat posts.txt | mentalglm analyze --redact --out results.jsonl         # one post per line from stdin
  mentalglm analyze --model openai:glm-4 --base-url http://127.0.0.1:8000/v1 "..."

  mentalglm analyze --risk-threshold 0.3 --tasks suicide_risk --no-explain --file posts.csv --out risk.jsonl
  mentalglm analyze --model qwen2.5-coder-1.5b-instruct-q4 "..."   # the zero-shot model, labels generated

Output JSONL fields: id, task, labels, explanation, raw, parse_status (ok | fallback | invalid | error),
model, latency_ms, high_risk, warnings, error, label_en, scores (label -> probability; label heads),
evidence_ok (every quote of the explanation is in the post; null without an explanation).
"""


def register(sub, fmt):
    p = sub.add_parser("analyze", help="analyze posts: labels + explanations per task",
                       description="Analyze posts. " + DISCLAIMER, epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("post", nargs="?", help="one post (omit to read --file or stdin)")
    p.add_argument("--file", help="CSV, TSV, JSONL or TXT (one post per line); '-' for stdin")
    p.add_argument("--format", help="file format when the suffix does not tell (csv, tsv, jsonl, txt)")
    p.add_argument("--text-column", help="column holding the post (default: text, content, post, comment, 内容)")
    p.add_argument("--id-column", help="column holding a post id (default: id if present, else the line number)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated tasks (see `mentalglm tasks`)")
    p.add_argument("--out", help="write JSONL here, one line per (post, task), as results are produced")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --out file, skipping finished rows")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-explain", dest="explain", action="store_false", help="labels only (stops after the label)")
    p.add_argument("--max-tokens", type=int, default=160, help="answer budget in tokens")
    p.add_argument("--redact", action="store_true", help="mask phones, ID numbers, e-mails and @handles first")
    p.add_argument("--resources", help="file with the crisis-resources message shown for high-risk results")
    p.add_argument("--chunk", type=int, default=16, help="posts per chunk (prompts of one task run together)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    for t in tasks:
        get_task(t)  # unknown task: fail before loading a model
    console = Console(stderr=not sys.stdout.isatty() and not args.out)
    out = Path(args.out) if args.out else None
    if out and out.exists() and out.stat().st_size and not (args.resume or args.overwrite):
        console.print(f"[red]error:[/red] {out} exists; pass --resume to continue it or --overwrite to replace it")
        return 2
    if out and args.overwrite and out.exists():
        out.unlink()

    if args.post is not None:
        posts = [Post("1", args.post.strip(), None if args.post.strip() else "empty post")]
    else:
        posts = list(read_posts(args.file, args.text_column, args.id_column, args.format))
    if not posts:
        console.print("[red]error:[/red] no posts given (a post argument, --file, or lines on stdin)")
        return 2

    backend, style = open_from_args(args)
    try:
        analyzer = Analyzer(backend, AnalyzeConfig(tasks=tasks, explain=args.explain, max_tokens=args.max_tokens,
                                                   redact=args.redact, style=style, **heads_options(args)))
    except HeadsError as e:
        console.print(f"[red]error:[/red] {e}")
        backend.close()
        return 2
    done = completed_pairs(out) if (out and args.resume) else set()
    if done:
        console.print(f"resuming: {len(done)} (post, task) results already in {out}")
    total = len(posts) * len(tasks) - sum(1 for p in posts for t in tasks if (p.id, t) in done)
    results: list[Analysis] = []
    stream = analyzer.stream(posts, done=done, chunk=args.chunk)
    single = args.post is not None and not out
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), disable=single, transient=False) as bar:
        job = bar.add_task(f"analyzing ({backend.name})", total=total)

        def tick(a: Analysis):
            results.append(a)
            bar.advance(job)

        if out:
            write_stream(stream, out, tick)
        else:
            for a in stream:
                tick(a)
    backend.close()

    if out:
        summarize(console, results, out)
    elif sys.stdout.isatty() or single:
        print_tables(Console(), results, args.resources)
    else:
        for a in results:
            print(a.to_json())
    if any(a.high_risk for a in results) and not single:
        console.print(Panel(resources_message(args.resources), title="high suicide risk in some posts", style="red"))
    return 0


def print_tables(console: Console, results: list[Analysis], resources: str | None) -> None:
    by_post: dict[str, list[Analysis]] = {}
    for a in results:
        by_post.setdefault(a.id, []).append(a)
    for pid, rows in by_post.items():
        table = Table(title=f"post {pid}", show_lines=True, expand=True)
        table.add_column("任务 task", no_wrap=True)
        table.add_column("标签 labels", no_wrap=True)
        table.add_column("理由 explanation", ratio=1, overflow="fold")  # CJK has no spaces to wrap at
        table.add_column("status", no_wrap=True)
        for a in rows:
            spec = get_task(a.task)
            labels = "、".join(f"{n} {a.scores[n]:.2f}" if n in a.scores else n for n in a.labels) or "—"
            style = "bold red" if a.high_risk else None
            detail = a.explanation or a.error or ""
            status = a.parse_status + {True: "\n引文✓", False: "\n引文✗"}.get(a.evidence_ok, "")
            table.add_row(spec.title, f"[{style}]{labels}[/]" if style else labels, detail, status)
        console.print(table)
        if any(a.high_risk for a in rows):
            console.print(Panel(resources_message(resources), title="⚠ 高自杀风险 high suicide risk", style="red"))
    console.print(f"[dim]{DISCLAIMER}[/dim]")


def summarize(console: Console, results: list[Analysis], out: Path) -> None:
    from collections import Counter

    status = Counter(a.parse_status for a in results)
    table = Table(title=f"wrote {len(results)} results to {out}")
    for col in ("ok", "fallback", "invalid", "error", "high risk", "evidence in post"):
        table.add_column(col, justify="right")
    checked = [a.evidence_ok for a in results if a.evidence_ok is not None]
    table.add_row(*(str(status.get(k, 0)) for k in ("ok", "fallback", "invalid", "error")),
                  str(sum(a.high_risk for a in results)),
                  f"{sum(checked)}/{len(checked)}" if checked else "—")
    console.print(table)
    for a in [a for a in results if a.error][:5]:
        console.print(f"[yellow]row {a.id} ({a.task}):[/yellow] {a.error}")
    console.print(f"[dim]{DISCLAIMER}[/dim]")
