"""`mentalglm eval suite CONFIG.yaml`: systems x tasks x split from one file, resumable, into one report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..data.sources import SPLITS

EXAMPLES = """examples:
  # minutes on a CPU: n-gram baseline, mentalglm-mini and the zero-shot 1.5B on a sample of each validation split
  mentalglm eval suite configs/eval/quick.yaml
  # the same on the publishers' test files (socialcd3k/test.tsv, sos_hl_1k/test.tsv, sos4k/test.tsv,
  # smp2020_ewect/usual_test.json and virus_test.json beside the training files)
  mentalglm eval suite configs/eval/quick.yaml --split test --data-root /data/corpora
  # the paper's comparison; systems whose weights are not here are listed and skipped with how to get them
  mentalglm eval suite configs/eval/paper.yaml --split test --out runs/paper-test
  # rerun after a stop or after adding a system: finished predictions are reused
  mentalglm eval suite configs/eval/paper.yaml --split test --out runs/paper-test --only ngram,bert-base-chinese
"""


def register(verbs, fmt) -> None:
    p = verbs.add_parser("suite", help="run a declarative suite of systems x tasks x split into one report",
                         description="Runs every system of CONFIG on every task's gold posts (cached by settings, "
                                     "so a rerun resumes), then writes one report with comparison tables, paired "
                                     "differences against the reference system, per-class plots, explanation "
                                     "metrics and literature anchors. The file format: docs/evaluation.md.",
                         epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("config", help="suite YAML, e.g. configs/eval/quick.yaml")
    p.add_argument("--split", choices=SPLITS, help="override the suite's split (test: the publishers' test files)")
    p.add_argument("--out", help="run folder (default: runs/eval/<suite name>-<split>)")
    p.add_argument("--only", help="comma-separated system names to run (the others are left out of the report)")
    p.add_argument("--sample", type=int, help="override the suite's posts per task (a stratified sample)")
    p.add_argument("--data-root", help="folder holding the corpora (default: $MENTALGLM_DATA or ../shared/data)")
    p.add_argument("--threads", type=int, help="llama.cpp threads for every LLM system (default: all cores; on a "
                                               "machine busy with other jobs, 1 is often faster)")
    p.set_defaults(func=run)


class _Bars:
    """Rich progress for a suite run: one bar per system and task."""

    def __init__(self, progress: Progress, console: Console):
        self.progress, self.console, self.current = progress, console, None

    def system_start(self, system, task: str, todo: int) -> None:
        self.current = self.progress.add_task(f"{system.name} / {task}", total=todo)

    def advance(self, n: int = 1) -> None:
        if self.current is not None:
            self.progress.advance(self.current, n)

    def system_done(self, record) -> None:
        if record.status == "ok":
            reused = f" (reused: {', '.join(record.cached)})" if record.cached else ""
            self.console.print(f"[green]done[/green] {record.name}{reused}")
        else:
            self.console.print(f"[yellow]{record.status}[/yellow] {record.name}: {record.message}", soft_wrap=True)


def run(args) -> int:
    from ..suite import load_suite, run_suite

    config = load_suite(args.config)
    split = args.split or config.split
    out = Path(args.out or f"runs/eval/{config.name}-{split}")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    console = Console(stderr=True)
    command = shlex.join(["mentalglm", *sys.argv[1:]]) if "suite" in sys.argv[1:] else ""
    with Progress(TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        result = run_suite(config, out, split=split, only=only, sample=args.sample, data_root=args.data_root,
                           events=_Bars(progress, console), command=command, threads=args.threads)
    table = Table(title=f"suite {config.name!r} on the {split} split → {out}")
    for col in ("system", "family", "status", "splits read", "tasks"):
        table.add_column(col)
    for r in result.systems:
        table.add_row(r.name, r.family, r.status, ", ".join(r.splits_read), ", ".join(r.files) or "—")
    Console(stderr=True, width=None if sys.stderr.isatty() else 140).print(table)  # a log file: no squeezed cells
    if result.report:
        md, page = result.report
        print(f"report: {md} and {page}; run record: {out / 'suite.json'}")
    else:
        console.print("[red]error:[/red] no system could run, so there is no report; see the reasons above")
        return 1
    return 1 if any(r.status == "failed" for r in result.systems) else 0
