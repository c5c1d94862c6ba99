"""`mentalglm analyze`: a post, a file or stdin in; a label and an explanation per task out."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from .. import DISCLAIMER
from ..analyze import ERROR, Analysis, AnalyzeConfig, Analyzer, resume_rows
from ..cluster import add_ray_args, check_extras, open_on_ray
from ..columnar import is_parquet, spooled
from ..inputs import Post, read_posts, unique_ids
from ..jsonl import check_settings, remove as remove_output, save_settings, write_rows
from ..safety import resources_message
from ..tasks import DEFAULT_TASKS, INVALID, get_task
from ..heads import HeadsError
from .common import add_model_args, heads_options, model_settings, open_from_args

log = logging.getLogger("mentalglm")

EXAMPLES = """examples:
  mentalglm analyze "我真的好累，感觉所有人都在针对我，活着没有意思"
  mentalglm analyze --tasks suicide_risk_levels,emotion "今天考试又没过，我就是个废物"
  mentalglm analyze --file posts.csv --text-column content --out results.jsonl
  mentalglm analyze --file posts.csv --out results.jsonl --resume      # continue an interrupted run
  mentalglm analyze --file posts.jsonl --no-explain --tasks suicide_risk --out risk.jsonl  # labels only, fast
  mentalglm analyze --file posts.csv --out results.jsonl --parallel 8 --n-ctx 2048  # 8 sequences decode together
  cat posts.txt | mentalglm analyze --redact --out results.jsonl         # one post per line from stdin
  mentalglm analyze --model openai:glm-4 --base-url http://127.0.0.1:8000/v1 "..."

  mentalglm analyze --risk-threshold 0.3 --tasks suicide_risk --no-explain --file posts.csv --out risk.jsonl
  mentalglm analyze --model qwen2.5-coder-1.5b-instruct-q4 "..."   # the zero-shot model, labels generated
  mentalglm analyze --file posts.csv --out results.jsonl --no-explain --screen  # sure posts by the n-gram part
  mentalglm analyze --explainer trained "..."    # every explanation by the trained 0.5B explainer
  mentalglm analyze --brief --file posts.csv --out results.jsonl   # explanations of one sentence: the quote, one reason

  mentalglm analyze --file posts.parquet --text-column content --out results.parquet --resume  # Parquet in and out
  mentalglm analyze --file posts.csv --out results.jsonl --no-explain --ray    # an embedded Ray cluster here
  mentalglm analyze --file posts.parquet --out results.parquet --ray 10.0.0.1:6379 --ray-cpus 4 --resume

Exit status: 0 every row ok or fallback; 1 some row invalid or error (a one-line summary on stderr);
2 a usage error (empty post, unknown task, missing column, repeated id, no posts, --resume with other
settings), found before the model loads; 3 the model is not available; 4 an optional extra is missing
(--ray: cluster; a Parquet file: parquet), with its pip install line.

Input files: CSV, TSV, JSONL, TXT or Parquet (--format when the suffix does not say). Text files: UTF-8
(with or without BOM), UTF-16 with a BOM, or GB18030, detected. A repeated id is an
error naming both lines unless --dedupe-ids. A tab-separated .csv (or comma-separated .tsv) is refused
with a hint to pass --format.

Output JSONL fields: id, task, labels, explanation, raw, parse_status (ok | fallback | invalid | error),
model, latency_ms, high_risk, warnings, error, label_en, scores (label -> probability; label heads),
evidence_ok (every quote of the explanation is in the post, after near-miss quotes are repaired; null without
an explanation), runner_up ({label, p} when the label heads were unsure, else null), explanation_labels and
explanation_consistent (the label the explanation argues for, read from it alone, and whether it is the row's),
quotes_repaired (near-miss quotes replaced by the post's words). A .parquet --out has one typed column each.
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
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted --out file: finished rows are skipped, error rows redone; refused "
                        "if the file was written with another model, prompt style, heads folder or tasks")
    p.add_argument("--keep-errors", action="store_true", help="with --resume, keep error rows instead of redoing them")
    p.add_argument("--dedupe-ids", action="store_true",
                   help="number repeated ids (the second 'a1' becomes 'a1#2') instead of refusing the file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-explain", dest="explain", action="store_false", help="labels only (stops after the label)")
    p.add_argument("--max-tokens", type=int, default=160, help="answer budget in tokens")
    p.add_argument("--redact", action="store_true", help="mask phones, ID numbers, e-mails and @handles first")
    p.add_argument("--resources", help="file with the crisis-resources message shown for high-risk results")
    p.add_argument("--chunk", type=int, default=16, help="posts per chunk (prompts of one task run together)")
    add_model_args(p)
    add_ray_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    check_extras(args)  # --ray, Parquet in or out: their optional extras, before anything is read (exit 4)
    if args.out and is_parquet(args.out):  # rows go to a JSON-lines file next to it, packed at the end
        return spooled(args, run)
    # Every usage error is found here, before a model is loaded (which can take a minute): exit 2.
    try:
        tasks = tuple(dict.fromkeys(get_task(t.strip()).name for t in args.tasks.split(",") if t.strip()))
    except KeyError as e:
        return _usage(e.args[0])
    if not tasks:
        return _usage("--tasks names no task (see `mentalglm tasks`)")
    console = Console(stderr=not sys.stdout.isatty() and not args.out)
    out = Path(args.out) if args.out else None
    if out and out.exists() and out.stat().st_size and not (args.resume or args.overwrite):
        console.print(f"[red]error:[/red] {out} exists; pass --resume to continue it or --overwrite to replace it")
        return 2

    if args.post is not None:
        if not args.post.strip():
            return _usage("the post is empty; give its text, or use --file or stdin for many posts")
        posts = [Post("1", args.post.strip())]
    else:
        posts = unique_ids(read_posts(args.file, args.text_column, args.id_column, args.format),
                           args.file or "stdin", args.dedupe_ids)
    if not posts:
        console.print("[red]error:[/red] no posts given (a post argument, --file, or lines on stdin)")
        return 2
    settings = {**model_settings(args), "tasks": list(tasks)}
    kept: dict[tuple[str, str], str] = {}
    if out and args.overwrite:
        remove_output(out)
    elif out and args.resume:
        check_settings(out, settings)  # another model, prompt style, heads or tasks: a DataError, exit 2
        kept, redo = resume_rows(out, retry_errors=not args.keep_errors)
        if kept or redo:
            console.print(f"resuming: {len(kept)} (post, task) results already in {out}"
                          + (f"; redoing {redo} error row(s) (--keep-errors keeps them)" if redo else ""),
                          soft_wrap=True)

    try:  # --ray: actors on a Ray cluster, each opening its analyzer with open_analyzer and these options
        analyzer = (open_on_ray(args, partial(open_analyzer, tasks=tasks), tasks) if args.ray is not None
                    else open_analyzer(args, tasks))
    except HeadsError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    backend = analyzer.backend
    if out:
        save_settings(out, settings)
    total = len(posts) * len(tasks) - sum(1 for p in posts for t in tasks if (p.id, t) in kept)
    results: list[Analysis] = []
    stream = analyzer.stream(posts, done=set(kept), chunk=args.chunk)
    single = args.post is not None and not out
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), PostsPerSecond(len(tasks)),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=single,
                  transient=False) as bar:
        job = bar.add_task(f"analyzing ({backend.name})", total=total)

        def tick(a: Analysis):
            results.append(a)
            bar.advance(job)

        if out:
            write_rows(stream, out, tick)
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
    return exit_code(results, kept, out)


def open_analyzer(args, tasks: tuple[str, ...]) -> Analyzer:
    """The model and the engine of a run, from its options: the local run opens its own here, and so does every
    actor of a --ray run (mentalglm.cluster), so an option read here applies to both."""
    backend, style = open_from_args(args)
    try:
        analyzer = Analyzer(backend, AnalyzeConfig(tasks=tasks, explain=args.explain, max_tokens=args.max_tokens,
                                                   redact=args.redact, style=style, **heads_options(args)))
    except BaseException:
        backend.close()
        raise
    return analyzer


class PostsPerSecond(ProgressColumn):
    """Throughput in posts/s. The bar counts (post, task) results; a post is done when all its tasks are, so the
    rate is results/s over the tasks per post: recent speed while running (rich's 30 s window), the average at
    the end."""

    def __init__(self, tasks_per_post: int):
        super().__init__()
        self.tasks_per_post = max(1, tasks_per_post)

    def render(self, task) -> Text:
        if task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        else:
            speed = task.speed
        if not speed:
            return Text("– posts/s", style="progress.data.speed")
        return Text(f"{speed / self.tasks_per_post:.2f} posts/s", style="progress.data.speed")


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def exit_code(results: list[Analysis], kept: dict[tuple[str, str], str], out: Path | None) -> int:
    """0 when every row (this run's, and those a resumed file kept) is ok or fallback; else 1, with one line on
    stderr saying how many rows failed, of which kinds, and where (the output file, the first ids)."""
    rows = [((a.id, a.task), a.parse_status) for a in results] + list(kept.items())
    failed = [(key, status) for key, status in rows if status in (ERROR, INVALID)]
    if not failed:
        return 0
    kinds = Counter(status for _, status in failed)
    ids = list(dict.fromkeys(pid for (pid, _), _ in failed))
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    print(f"{len(failed)} of {len(rows)} results failed ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"
          + (f" in {out}" if out else "") + f"; post ids {shown}", file=sys.stderr)
    return 1


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
            if a.runner_up:  # unsure: the runner-up beside the label
                labels += f"\n— 或 or {a.runner_up['label']} {a.runner_up['p']:.2f}"
            if a.high_risk and not spec.high_risk_in(a.labels):  # flagged by P(high) under the risk threshold
                labels += "\n⚠ 风险标记 flagged"
            style = "bold red" if a.high_risk else None
            detail = a.explanation or a.error or ""
            status = a.parse_status + {True: "\n引文✓", False: "\n引文✗"}.get(a.evidence_ok, "")
            status += {True: "\n论证✓", False: "\n论证✗"}.get(a.explanation_consistent, "")
            table.add_row(spec.title, f"[{style}]{labels}[/]" if style else labels, detail, status)
        console.print(table)
        if any(a.high_risk for a in rows):
            console.print(Panel(resources_message(resources), title="⚠ 高自杀风险 high suicide risk", style="red"))
    console.print(f"[dim]{DISCLAIMER}[/dim]")


def _check_rates(rows: list[Analysis]) -> list[str]:
    """evidence_ok, explanation_consistent (of the rows that have them) and unsure rows (of those decided by label
    heads), as "k/n (x%)" (as ``eval score`` gives the checks)."""
    from ..evaluate.predictions import CHECKS, check_rate

    def rate(values: list[bool]) -> str:
        return check_rate([sum(values), len(values)])

    return [*(rate([getattr(a, k) for a in rows if getattr(a, k) is not None]) for k in CHECKS),
            rate([a.runner_up is not None for a in rows if a.scores])]


def summarize(console: Console, results: list[Analysis], out: Path) -> None:
    status = Counter(a.parse_status for a in results)
    table = Table(title=f"wrote {len(results)} results to {out}")
    for col in ("ok", "fallback", "invalid", "error", "high risk", "evidence in post", "argues its label",
                "unsure"):
        table.add_column(col, justify="right")
    table.add_row(*(str(status.get(k, 0)) for k in ("ok", "fallback", "invalid", "error")),
                  str(sum(a.high_risk for a in results)), *_check_rates(results))
    console.print(table)
    if len({a.task for a in results}) > 1:  # the same per task
        per_task = Table(title="explanations per task")
        for col in ("task", "evidence in post", "argues its label", "unsure"):
            per_task.add_column(col, justify="left" if col == "task" else "right")
        for task in dict.fromkeys(a.task for a in results):
            per_task.add_row(task, *_check_rates([a for a in results if a.task == task]))
        console.print(per_task)
    for a in [a for a in results if a.error][:5]:
        console.print(f"[yellow]row {a.id} ({a.task}):[/yellow] {a.error}")
    console.print(f"[dim]{DISCLAIMER}[/dim]")
