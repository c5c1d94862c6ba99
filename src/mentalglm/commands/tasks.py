"""`mentalglm tasks`: the registered task specs and their labels."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..tasks import all_tasks, get_task

EXAMPLES = """examples:
  mentalglm tasks                      # every task, one line each
  mentalglm tasks suicide_risk_levels  # one task: labels, definitions, question, answer format
  mentalglm tasks --family imhi        # the English IMHI tasks
"""


def register(sub, fmt):
    p = sub.add_parser("tasks", help="list the analysis tasks and their labels", epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("task", nargs="?", help="show one task in detail")
    p.add_argument("--family", choices=["c-imhi", "imhi"], help="only this family")
    p.set_defaults(func=run)


def run(args) -> int:
    console = Console()
    if args.task:
        spec = get_task(args.task)
        table = Table(title=f"{spec.name}: {spec.title} / {spec.title_en}", show_lines=False)
        for col in ("label", "中文", "English", "definition"):
            table.add_column(col)
        for lab in spec.labels:
            table.add_row(lab.code or lab.name, lab.zh, lab.en, lab.definition)
        console.print(table)
        console.print(f"question: {spec.question}\nmulti-label: {spec.multi_label}\nmetrics: {', '.join(spec.metrics)}"
                      f"\nsource: {spec.source}")
        example = spec.render_answer([spec.labels[0].name], "……")
        console.print(f"answer format: {example}")
        return 0
    table = Table(title="mentalglm tasks")
    for col in ("task", "family", "title", "labels", "type", "source"):
        table.add_column(col, overflow="fold")
    for spec in all_tasks(args.family):
        table.add_row(spec.name, spec.family, f"{spec.title}" if spec.language == "zh" else spec.title_en,
                      str(len(spec.labels)), "multi-label" if spec.multi_label else "single-label",
                      spec.source.split(" (")[0])
    console.print(table)
    return 0
