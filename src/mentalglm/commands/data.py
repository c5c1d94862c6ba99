"""`mentalglm data`: build C-IMHI with a teacher, review it, export it, mix the training stages."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..data.records import DataError
from ..llm.catalog import ZERO_SHOT_MODEL
from .common import add_backend_args

DATA_EXAMPLES = """the whole flow:
  mentalglm data build --out data/cimhi --max-per-task 25          # teacher explanations + QC + data card
  mentalglm data review-sample data/cimhi --n 100 --out review/b1   # sheets for expert raters
  mentalglm data review-stats review/alice.xlsx review/bob.xlsx     # mean ratings + agreement
  mentalglm data export data/cimhi --out data/cimhi-export          # Alpaca, messages, LLaMA-Factory, HF
  mentalglm data mix --stage2 data/cimhi --out data/mix             # stage 1 (English IMHI) + stage 2

run `mentalglm data ACTION --help` for the options and more examples of each.
"""

BUILD_EXAMPLES = f"""examples:
  # the four Chinese classification tasks, the offline default model as teacher, 25 posts per task
  mentalglm data build --out data/cimhi --max-per-task 25

  # a strong teacher behind an OpenAI-compatible endpoint, 8 requests at a time, every post
  OPENAI_API_KEY=... mentalglm data build --teacher openai:glm-4-plus \\
      --base-url https://open.bigmodel.cn/api/paas/v4 --concurrency 8 --out data/cimhi

  # SOS-4K already has explanations: reuse them, ask the teacher only for those that fail QC
  mentalglm data build --tasks suicide_risk_levels --reuse-explanations --out data/sos4k

  # training data for an explainer: explanations the consistency reader reads as arguing for the gold label
  mentalglm data build --tasks emotion,suicide_risk --splits train --consistent --max-chars 160 --out data/explain

  # cognitive pathway from your own span file (Jiang et al. 2024 schema)
  mentalglm data build --tasks cognitive_pathway --input cognitive_pathway=pathway_spans:pathway.jsonl --out data/pw

A killed build resumes when rerun with the same --out: finished teacher calls come from
<out>/teacher_cache.jsonl. Default teacher: {ZERO_SHOT_MODEL}.
"""

REVIEW_SAMPLE_EXAMPLES = """examples:
  mentalglm data review-sample data/cimhi --n 100 --out review/batch1     # review/batch1.csv + .xlsx
  mentalglm data review-sample data/cimhi --tasks suicide_risk --n 40 --out review/suicide
  # model outputs, blinded and shuffled: 50 posts x 2 systems; review/models.key.csv maps rows to systems
  mentalglm data review-sample mini=runs/mini/levels.jsonl qwen=runs/qwen/levels.jsonl --n 50 --out review/models
  mentalglm data review-sample runs/eval/paper-test/predictions/*/suicide_risk_levels-*.jsonl --split test \
      --n 50 --out review/paper
"""

REVIEW_STATS_EXAMPLES = """examples:
  mentalglm data review-stats review/alice.xlsx review/bob.xlsx review/chen.csv
  mentalglm data review-stats review/*.xlsx --weights quadratic --level interval --json review/stats.json
  # ratings of model outputs per system (the key written by review-sample)
  mentalglm data review-stats review/alice.xlsx review/bob.xlsx --key review/models.key.csv
"""

EXPORT_EXAMPLES = """examples:
  mentalglm data export data/cimhi --out data/cimhi-export            # alpaca, messages, hf + dataset_info.json
  mentalglm data export data/cimhi --out data/cd --tasks cognitive_distortion --formats alpaca
  # then, in LLaMA-Factory: dataset_dir: data/cimhi-export, dataset: cimhi_train, eval_dataset: cimhi_validation
"""

MIX_EXAMPLES = """examples:
  mentalglm data mix --stage2 data/cimhi --out data/mix          # stage 1 English IMHI, stage 2 C-IMHI
  mentalglm data mix --stage2 data/cimhi data/sos4k --out data/mix --data-root /data/shared
"""


def register(sub, fmt):
    p = sub.add_parser("data", help="build, review, export and mix the C-IMHI instruction data",
                       description="Build the C-IMHI instruction data with a teacher model, quality-control it, "
                                   "review it, export it for training.", epilog=DATA_EXAMPLES, formatter_class=fmt)
    verbs = p.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    _register_build(verbs, fmt)
    _register_review(verbs, fmt)
    _register_export(verbs, fmt)


def _register_build(verbs, fmt):
    from ..data.builder import BUILD_TASKS
    from ..data.quality import QCConfig

    qc = QCConfig()
    b = verbs.add_parser("build", help="instruction records with teacher explanations, quality-controlled",
                         epilog=BUILD_EXAMPLES, formatter_class=fmt)
    b.add_argument("--tasks", default="cognitive_distortion,suicide_risk,suicide_risk_levels,emotion",
                   help=f"comma-separated, from: {', '.join(BUILD_TASKS)}")
    b.add_argument("--out", required=True, help="output folder (also holds the teacher cache)")
    b.add_argument("--max-per-task", type=int, help="stratified sample of at most N posts per task (None: all)")
    b.add_argument("--splits", default="train,validation",
                   help="splits to explain, comma-separated; 'train' spends the teacher only on training posts")
    b.add_argument("--reuse-explanations", action="store_true",
                   help="use explanations the source already has (SOS-4K `explain`) before asking the teacher")
    b.add_argument("--retries", type=int, default=2,
                   help="regenerations of a sample that fails QC before it is dropped")
    b.add_argument("--input", action="append", default=[], metavar="TASK=FORMAT:PATH",
                   help="a file for a task without a built-in corpus, e.g. cognitive_pathway=pathway_spans:p.jsonl")
    b.add_argument("--data-root", help="folder holding the source corpora; None: $MENTALGLM_DATA, else ../shared/data")
    b.add_argument("--redact-posts", action="store_true", help="mask PII in the posts of the instructions too")
    b.add_argument("--seed", type=int, default=13, help="sampling and decoding seed")
    b.add_argument("--cache", help="teacher cache JSONL (default: <out>/teacher_cache.jsonl)")
    t = b.add_argument_group("teacher")
    t.add_argument("--teacher", default=ZERO_SHOT_MODEL,
                   help="registry name, .gguf, HF folder, openai:<name> with --base-url, or 'none' (reuse only)")
    t.add_argument("--base-url",
                   help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (key from $OPENAI_API_KEY)")
    add_backend_args(t)
    t.add_argument("--max-tokens", type=int, default=256, help="explanation budget in tokens")
    t.add_argument("--temperature", type=float, default=0.3, help="first try; regenerations use --retry-temperature")
    t.add_argument("--retry-temperature", type=float, default=0.8)
    q = b.add_argument_group("quality control")
    q.add_argument("--min-chars", type=int, default=qc.min_chars)
    q.add_argument("--max-chars", type=int, default=qc.max_chars)
    q.add_argument("--min-cjk-share", type=float, default=qc.min_cjk_share)
    q.add_argument("--max-copy-ratio", type=float, default=qc.max_copy_ratio,
                   help="longest passage shared with the post / explanation length")
    q.add_argument("--near-duplicate", type=float, default=qc.near_duplicate_jaccard,
                   help="character 5-gram Jaccard at which two posts count as near duplicates")
    q.add_argument("--consistent", nargs="?", const="packaged", metavar="HEADS",
                   help="also require the consistency reader of a heads folder (default: the packaged mentalglm-mini; "
                        "the reader `analyze` reports explanation_consistent with) to read the explanation alone as "
                        "arguing for the gold label; a sample it reads otherwise is regenerated")
    b.set_defaults(func=run_build)


def _register_review(verbs, fmt):
    s = verbs.add_parser("review-sample", help="a stratified sample to rate (a build, or model outputs blinded), "
                                               "as CSV and XLSX", epilog=REVIEW_SAMPLE_EXAMPLES, formatter_class=fmt)
    s.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a build folder (mentalglm data build --out), or predictions files of one or more systems "
                        "(NAME=PATH names a system; they are blinded in the sheets)")
    s.add_argument("--out", required=True, help="path without suffix: writes OUT.csv and OUT.xlsx (+ OUT.key.csv "
                                                "for predictions)")
    s.add_argument("--n", type=int, default=100, help="posts, stratified by task and label set")
    s.add_argument("--tasks", help="comma-separated subset of tasks")
    s.add_argument("--split", help="build: train (default), validation or all; predictions: the split they "
                                   "answered, for the posts and gold labels (default validation; or test)")
    s.add_argument("--data-root", help="predictions: folder holding the corpora (default: $MENTALGLM_DATA or "
                                       "../shared/data)")
    s.add_argument("--gold", help="predictions: a gold JSONL or build folder instead of the built-in corpus")
    s.add_argument("--seed", type=int, default=13)
    s.set_defaults(func=run_review_sample)

    r = verbs.add_parser("review-stats", help="mean ratings and agreement of several raters' sheets",
                         epilog=REVIEW_STATS_EXAMPLES, formatter_class=fmt)
    r.add_argument("sheets", nargs="+",
                   help="filled sheets (CSV or XLSX), one per rater; the file name names the rater")
    r.add_argument("--weights", choices=["none", "linear", "quadratic"], default="none",
                   help="Cohen's kappa weighting for the 0-3 ratings")
    r.add_argument("--level", choices=["nominal", "ordinal", "interval"], default="ordinal",
                   help="Krippendorff's alpha level for the 0-3 ratings")
    r.add_argument("--key", help="the key of a blinded sample of model outputs (OUT.key.csv from review-sample): "
                                 "adds the mean ratings of each system")
    r.add_argument("--json", help="also write the statistics here")
    r.set_defaults(func=run_review_stats)


def _register_export(verbs, fmt):
    e = verbs.add_parser("export", help="Alpaca JSON, OpenAI messages JSONL, LLaMA-Factory dataset_info, HF folder",
                         epilog=EXPORT_EXAMPLES, formatter_class=fmt)
    e.add_argument("builds", nargs="+", help="build folder(s)")
    e.add_argument("--out", required=True)
    e.add_argument("--name", default="cimhi", help="dataset name prefix")
    e.add_argument("--formats", default="alpaca,messages,hf", help="comma-separated: alpaca, messages, hf")
    e.add_argument("--tasks", help="comma-separated subset of tasks")
    e.set_defaults(func=run_export)

    m = verbs.add_parser("mix", help="stage-1 (English IMHI) and stage-2 (C-IMHI) training corpora, with counts",
                         epilog=MIX_EXAMPLES, formatter_class=fmt)
    m.add_argument("--stage2", nargs="+", default=[], help="C-IMHI build folder(s)")
    m.add_argument("--out", required=True)
    m.add_argument("--no-stage1", dest="stage1", action="store_false", help="skip the English IMHI")
    m.add_argument("--data-root", help="folder holding imhi/; None: $MENTALGLM_DATA, else ../shared/data")
    m.set_defaults(func=run_mix)


# ---------------------------------------------------------------------------------------------------- build
def _parse_inputs(values: list[str]) -> dict[str, list[tuple[str, str]]]:
    inputs: dict[str, list[tuple[str, str]]] = {}
    for value in values:
        task, eq, rest = value.partition("=")
        fmt, colon, path = rest.partition(":")
        if not (eq and colon and task and fmt and path):
            raise DataError(value, None, "--input must look like TASK=FORMAT:PATH, "
                                         "e.g. cognitive_pathway=pathway_spans:p.jsonl")
        inputs.setdefault(task.strip(), []).append((fmt.strip(), path.strip()))
    return inputs


class _Bars:
    """One rich bar per task, counting explanations checked (regenerations extend it)."""

    def __init__(self, progress: Progress):
        self.progress, self.ids = progress, {}

    def start(self, task: str, total: int) -> None:
        self.ids[task] = self.progress.add_task(task, total=total)

    def grow(self, task: str, n: int) -> None:
        if n:
            bar = next(t for t in self.progress.tasks if t.id == self.ids[task])
            self.progress.update(bar.id, total=(bar.total or 0) + n, description=f"{task} (regenerating)")

    def advance(self, task: str, n: int = 1) -> None:
        if n:
            self.progress.advance(self.ids[task], n)


def open_teacher(args):
    """The teacher backend, opened like every other verb opens its --model."""
    from ..llm.registry import open_backend
    from .common import backend_options

    backend, _ = open_backend(args.teacher, base_url=args.base_url, **backend_options(args, args.teacher))
    return backend


def _judge(heads: str | None, tasks):
    """``Builder``'s judge: the heads folder's consistency readers (heads.reader) on an explanation alone."""
    if heads is None:
        return None
    from ..heads import load_heads
    from ..heads.reader import argument, explanation_reader, load_trained
    from ..tasks import get_task

    headset = load_heads(None if heads == "packaged" else heads)
    trained = load_trained()
    readers = {t: explanation_reader(headset.head(t), get_task(t).ordinal, trained) for t in tasks
               if t in headset.heads}

    def judge(task: str, explanation: str, gold: list[str]) -> bool | None:
        reader = readers.get(task)
        return None if reader is None else reader.consistent(reader.argued(argument(explanation)), gold)

    return judge


def run_build(args) -> int:
    from ..data.builder import BUILD_TASKS, BuildConfig, Builder
    from ..data.cache import TeacherCache
    from ..data.quality import QCConfig
    from ..data.teacher import DecodingPlan, Teacher
    from ..tasks import get_task

    console = Console(stderr=True)
    tasks = tuple(get_task(t.strip()).name for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in BUILD_TASKS]
    if unknown:
        console.print(f"[red]error:[/red] cannot build {unknown}; buildable tasks: {', '.join(BUILD_TASKS)}")
        return 2
    out = Path(args.out)
    cfg = BuildConfig(
        tasks=tasks, out=out, max_per_task=args.max_per_task, retries=args.retries,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        reuse_explanations=args.reuse_explanations, redact_posts=args.redact_posts, seed=args.seed,
        command=shlex.join(["mentalglm", *sys.argv[1:]]) if "build" in sys.argv[1:] else "",
        qc=QCConfig(min_chars=args.min_chars, max_chars=args.max_chars, min_cjk_share=args.min_cjk_share,
                    max_copy_ratio=args.max_copy_ratio, near_duplicate_jaccard=args.near_duplicate),
        data_root=args.data_root, inputs=_parse_inputs(args.input))
    teacher = None
    if args.teacher.lower() != "none":
        cache = TeacherCache(args.cache or out / "teacher_cache.jsonl")
        for bad in cache.bad_lines:
            console.print(f"[yellow]warning:[/yellow] {cache.path}:{bad.line}: damaged cache line skipped "
                          f"({bad.reason}); that call is made again", soft_wrap=True)
        if len(cache):
            console.print(f"resuming: {len(cache)} teacher calls already in {cache.path}", soft_wrap=True)
        plan = DecodingPlan(max_tokens=args.max_tokens, temperature=args.temperature,
                            retry_temperature=args.retry_temperature, seed=args.seed)
        teacher = Teacher(open_teacher(args), cache, plan)
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        try:
            report = Builder(cfg, teacher, _Bars(bar), judge=_judge(args.consistent, tasks)).run()
        finally:
            if teacher is not None:
                teacher.cache.close()
                teacher.backend.close()
    print_build_summary(_stdout(), report, out)
    return 0


def _stdout() -> Console:
    """Tables wide enough for their columns when stdout is a file or a pipe (rich would assume 80)."""
    return Console() if sys.stdout.isatty() else Console(width=140)


def print_build_summary(console: Console, report: dict, out: Path) -> None:
    table = Table(title=f"C-IMHI build → {out}  ({report['seconds']:.0f} s)")
    for col in ("task", "sampled", "kept", "dropped", "regenerated", "reused", "new calls", "cached calls",
                "prompt tokens", "completion tokens"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name, t in report["tasks"].items():
        sampled, kept = sum(t["sampled"].values()), sum(t["accepted"].values())
        regenerated = sum(v for k, v in t["tries_of_accepted"].items() if k != "1")
        usage = t["teacher"]
        table.add_row(name, str(sampled), str(kept), str(sampled - kept), str(regenerated),
                      str(t["reused_explanations"]), str(usage.get("calls", 0)), str(usage.get("cached_calls", 0)),
                      str(usage.get("prompt_tokens", 0)), str(usage.get("completion_tokens", 0)))
    console.print(table)
    reasons: dict[str, int] = {}
    for t in report["tasks"].values():
        for k, v in t["dropped"].items():
            reasons[k] = reasons.get(k, 0) + v
    if reasons:
        ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
        console.print("drop reasons: " + ", ".join(f"{k} {v}" for k, v in ranked))
    console.print(f"report: {out / 'qc_report.json'}   data card: {out / 'DATA_CARD.md'}")


# --------------------------------------------------------------------------------------------------- review
def _answer_text(spec, row) -> str:
    """What the rater reads: the answer as the model's label sentence and explanation, or its raw text when no
    label could be read from it."""
    if row.labels or row.valid:
        return spec.render_answer(row.labels, row.explanation) if row.explanation else spec.label_sentence(row.labels)
    return row.raw or "（无法读出标签的回答 / no readable answer）"


def _prediction_answers(args, tasks) -> dict[str, dict[str, dict]]:
    """{system: {task:id: sheet item}} from predictions files, each post with its text and gold labels."""
    from ..evaluate.predictions import gold_set, read_predictions
    from ..tasks import get_task
    from .eval import _named

    answers: dict[str, dict[str, dict]] = {}
    golds: dict[str, dict] = {}
    split = args.split or "validation"
    for source in args.sources:
        name, path = _named(source)
        if Path(path).is_dir():
            raise DataError(path, None, "give either one build folder or predictions files, not both")
        rows = read_predictions(path)
        spec = get_task(rows[0].task)
        if tasks and spec.name not in tasks:
            continue
        if spec.name not in golds:
            gold = gold_set(spec.name, split, gold_file=args.gold, root=args.data_root)
            golds[spec.name] = {e.id: e for e in gold.examples}
        name = name or rows[0].model or Path(path).stem
        mine = answers.setdefault(name, {})
        for row in rows:
            example = golds[spec.name].get(row.id)
            if example is None:
                raise DataError(path, row.line, f"id {row.id!r} is not a post of the {split} split of {spec.name} "
                                                "(pass the --split the predictions answered)")
            mine[f"{spec.name}:{row.id}"] = {"task": spec.name, "split": split, "post": example.text,
                                             "gold_labels": list(example.labels), "answer": _answer_text(spec, row)}
    if not answers:
        raise DataError(", ".join(args.sources), None, f"no predictions of tasks {tasks}")
    return answers


def run_review_sample(args) -> int:
    from ..data.builder import read_built
    from ..data.review import write_blinded_sample, write_review_sample

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    key_path = None
    if len(args.sources) == 1 and Path(args.sources[0]).is_dir():
        build, split = args.sources[0], args.split or "train"
        records = read_built(build, tasks)
        if split != "all":
            records = [r for r in records if r.get("split") == split]
        if not records:
            which = f"split {split!r}" + (f" and tasks {tasks}" if tasks else "")
            raise DataError(build, None, f"no records for {which}")
        csv_path, xlsx_path, rows = write_review_sample(records, args.out, n=args.n, seed=args.seed)
    else:
        answers = _prediction_answers(args, tasks)
        csv_path, xlsx_path, key_path, rows = write_blinded_sample(answers, args.out, n=args.n, seed=args.seed)
    console = _stdout()
    table = Table(title=f"review sample: {len(rows)} rows")
    table.add_column("task")
    table.add_column("rows", justify="right")
    for task in dict.fromkeys(r["task"] for r in rows):
        table.add_row(task, str(sum(r["task"] == task for r in rows)))
    console.print(table)
    console.print(f"wrote {csv_path} and {xlsx_path}; raters fill fluency, completeness, reliability, overall (0-3) "
                  "and label_correct (1/0), then run `mentalglm data review-stats`")
    if key_path:
        console.print(f"the key {key_path} maps each row to its system: keep it from the raters and pass it to "
                      f"`mentalglm data review-stats SHEETS --key {key_path}`")
    return 0


def run_review_stats(args) -> int:
    import json

    from ..data.review import CRITERIA, review_stats

    weights = None if args.weights == "none" else args.weights
    stats = review_stats(args.sheets, weights=weights, level=args.level, key=args.key)
    console = _stdout()
    table = Table(title=f"{len(stats['raters'])} raters, {stats['items']} items rated by all "
                        f"(Cohen: {args.weights} weights; Krippendorff: {args.level})")
    for col in ("criterion", "mean", "n", *stats["raters"], "Cohen κ (mean pair)", "Fleiss κ", "Krippendorff α"):
        table.add_column(col, justify="left" if col == "criterion" else "right")
    for crit in [*CRITERIA, "label_correct"]:
        c = stats["criteria"].get(crit)
        if not c:
            continue
        table.add_row(crit, _fmt(c["mean"]), str(c["n"]), *(_fmt(c["by_rater"].get(r)) for r in stats["raters"]),
                      _fmt(c["cohen_kappa"].get("mean")), _fmt(c["fleiss_kappa"]), _fmt(c["krippendorff_alpha"]))
    console.print(table)
    if "systems" in stats:
        per = Table(title="mean rating per system (over raters and items; label_correct: share judged right)")
        for col in ("system", "items", *CRITERIA, "label_correct"):
            per.add_column(col, justify="left" if col == "system" else "right")
        for system, values in stats["systems"].items():
            per.add_row(system, str(values["items"]), *(_fmt(values[c]) for c in (*CRITERIA, "label_correct")))
        console.print(per)
    if args.json:
        Path(args.json).write_text(json.dumps(stats, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"wrote {args.json}")
    return 0


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


# --------------------------------------------------------------------------------------------- export / mix
def run_export(args) -> int:
    from ..data.builder import read_built
    from ..data.export import export

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    records = [r for b in args.builds for r in read_built(b, tasks)]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    written = export(records, Path(args.out), args.name, formats)
    _print_written(written)
    return _check_llamafactory(Path(args.out))


def run_mix(args) -> int:
    from ..data.export import mix

    written, counts = mix(args.stage2, Path(args.out), stage1=args.stage1, data_root=args.data_root)
    console = _stdout()
    table = Table(title="training stages")
    for col in ("stage", "task", "train", "validation"):
        table.add_column(col, justify="right" if col in ("train", "validation") else "left")
    for stage in sorted({s for s, _ in counts}):
        rows = sorted((task, c) for (s, task), c in counts.items() if s == stage)
        for task, c in rows:
            table.add_row(stage, task, str(c.get("train", 0)), str(c.get("validation", 0)))
        tot = {sp: sum(c.get(sp, 0) for _, c in rows) for sp in ("train", "validation")}
        table.add_row(f"[b]{stage}[/b]", "[b]all[/b]", f"[b]{tot['train']}[/b]", f"[b]{tot['validation']}[/b]",
                      end_section=True)
    console.print(table)
    _print_written(written)
    return _check_llamafactory(Path(args.out))


def _check_llamafactory(folder: Path) -> int:
    from ..data.export import validate_dataset_info

    if not (folder / "dataset_info.json").exists():
        return 0
    problems = validate_dataset_info(folder)
    for p in problems:
        print(f"dataset_info.json: {p}", file=sys.stderr)
    if not problems:
        print(f"LLaMA-Factory: dataset_dir={folder} (dataset_info.json checked)", file=sys.stderr)
    return 1 if problems else 0


def _print_written(written: list[Path]) -> None:
    for path in written:
        print(path)
