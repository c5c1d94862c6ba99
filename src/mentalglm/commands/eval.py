"""`mentalglm eval`: predictions over a task's split, scores with intervals, baselines, explanation metrics,
an LLM judge, and a Markdown + HTML report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .. import DISCLAIMER
from ..baselines import BASELINES
from ..data.records import DataError
from ..evaluate.classification import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from ..data.sources import SPLITS
from ..evaluate.predictions import gold_set, read_predictions, write_predictions
from ..tasks import get_task
from .common import add_model_args, heads_options, model_settings, open_from_args

EXAMPLES = """examples:
  # an LLM over the 200-post stratified validation sample (seed 13), labels only, resumable
  mentalglm eval predict --task emotion --sample 200 --no-explain --out runs/qwen/emotion.jsonl --resume
  mentalglm eval predict --task suicide_risk --few-shot 4 --model qwen2.5-coder-0.5b-instruct-q4 --out fs.jsonl
  # scores with 95% bootstrap intervals, per-class scores and the confusion matrix
  mentalglm eval score runs/qwen/emotion.jsonl --sample 200
  mentalglm eval score runs/ngram/emotion.jsonl --json > emotion.scores.json
  # baselines trained on the train split, predicting the validation split
  mentalglm eval baseline ngram --task emotion --out runs/ngram/emotion.jsonl
  mentalglm eval baseline encoder --task emotion --model /models/bert-base-chinese --out runs/bert/emotion.jsonl
  # the publishers' test split (socialcd3k/test.tsv etc. beside the training files)
  mentalglm eval baseline ngram --task cognitive_distortion --split test --out runs/ngram/cd.test.jsonl
  mentalglm eval score runs/ngram/cd.test.jsonl --split test
  # explanations against SOS-4K's reference explanations; an LLM judge
  mentalglm eval explain runs/qwen/suicide_risk_levels.jsonl --sample 200 --control
  mentalglm eval explain runs/qwen/suicide_risk_levels.jsonl --sample 200 --bertscore-model /models/bert-base-chinese
  mentalglm eval judge runs/qwen/suicide_risk_levels.jsonl --sample 200 --limit 20 --out runs/qwen/judge.jsonl
  # explanations scored against the teacher explanations of a C-IMHI build (the posts both share)
  mentalglm eval predict --task emotion --out runs/qwen/emotion.val.jsonl
  mentalglm eval explain runs/qwen/emotion.val.jsonl --gold data/cimhi
  # one report from several prediction files (name=path sets the row name)
  mentalglm eval report ngram=runs/ngram/emotion.jsonl qwen=runs/qwen/emotion.jsonl --sample 200 --out runs/report
  # all of the above from one file: systems x tasks x split, cached, one report (see `eval suite --help`)
  mentalglm eval suite configs/eval/quick.yaml --split validation
"""


def register(sub, fmt):
    p = sub.add_parser("eval", help="evaluate: predict, score, baselines, explanations, judge, report, suite",
                       description="Evaluation suite. " + DISCLAIMER, epilog=EXAMPLES, formatter_class=fmt)
    verbs = p.add_subparsers(dest="eval_verb", required=True, metavar="STEP")

    q = verbs.add_parser("predict", help="run a model over a task's split into a predictions JSONL (resumable)",
                         epilog=_examples("predict"), formatter_class=fmt)
    _gold_args(q, task_required=True)
    q.add_argument("--out", required=True, help="predictions JSONL, written as results arrive")
    q.add_argument("--resume", action="store_true", help="continue an interrupted --out file")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q.add_argument("--no-explain", dest="explain", action="store_false", help="labels only (several times faster)")
    q.add_argument("--max-tokens", type=int, default=160, help="answer budget in tokens")
    q.add_argument("--few-shot", type=int, default=0, metavar="K",
                   help="K stratified training examples as earlier chat turns (0: zero-shot)")
    q.add_argument("--shots-seed", type=int, default=13, help="seed for drawing the few-shot examples")
    q.add_argument("--chunk", type=int, default=16, help="posts per backend call")
    add_model_args(q)
    q.set_defaults(func=run_predict)

    s = verbs.add_parser("score", help="score prediction files: metrics, intervals, per-class, confusion",
                         epilog=_examples("score"), formatter_class=fmt)
    s.add_argument("files", nargs="+", help="predictions JSONL files (one task each)")
    _gold_args(s)
    _boot_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=run_score)

    b = verbs.add_parser("baseline", help="train a baseline on the train split and predict a split",
                         epilog=_examples("baseline"), formatter_class=fmt)
    b.add_argument("kind", choices=list(BASELINES),
                   help="; ".join(f"{kind}: {what}" for kind, (what, _) in BASELINES.items()))
    _gold_args(b, task_required=True)
    b.add_argument("--out", required=True, help="predictions JSONL")
    b.add_argument("--model", default="bert-base-chinese", help="encoder: HF id or local folder")
    b.add_argument("--epochs", type=float, default=3.0, help="encoder: training epochs")
    b.add_argument("--max-steps", type=int, default=-1, help="encoder: stop after this many steps (smoke runs)")
    b.add_argument("--lr", type=float, default=2e-5, help="encoder: learning rate")
    b.add_argument("--batch-size", type=int, default=16, help="encoder: batch size")
    b.add_argument("--max-length", type=int, default=256, help="encoder: tokens per post")
    b.add_argument("--output-dir", default="runs/encoder", help="encoder: where the fine-tuned model is saved")
    b.set_defaults(func=run_baseline)

    x = verbs.add_parser("explain", help="explanation metrics against reference explanations",
                         epilog=_examples("explain"), formatter_class=fmt)
    x.add_argument("files", nargs="+", help="predictions JSONL files with explanations")
    _gold_args(x)
    x.add_argument("--bertscore-model", help="local encoder folder for BERTScore (skipped without one)")
    x.add_argument("--bertscore-layer", type=int, help="hidden layer for BERTScore (default: last)")
    x.add_argument("--bartscore-model", help="local facebook/bart-large-cnn folder (English IMHI only)")
    x.add_argument("--control", action="store_true",
                   help="also score each reference against another post's reference: the chance level")
    x.add_argument("--json", action="store_true", help="print JSON instead of a table")
    x.set_defaults(func=run_explain)

    j = verbs.add_parser("judge", help="rate explanations 0-3 with an LLM judge (rubric: see docs/evaluation.md)",
                         epilog=_examples("judge"), formatter_class=fmt)
    j.add_argument("file", help="predictions JSONL with explanations")
    _gold_args(j)
    j.add_argument("--out", required=True, help="judgements JSONL (resumable)")
    j.add_argument("--limit", type=int, help="judge at most this many predictions")
    j.add_argument("--judge-max-tokens", type=int, default=400, help="judge answer budget")
    add_model_args(j)
    j.set_defaults(func=run_judge)

    r = verbs.add_parser("report", help="several prediction files -> report.md + report.html with plots",
                         epilog=_examples("report"), formatter_class=fmt)
    r.add_argument("files", nargs="+", help="predictions files, optionally NAME=PATH to name the row")
    _gold_args(r)
    _boot_args(r)
    r.add_argument("--judge", action="append", default=[], metavar="NAME=PATH",
                   help="judgements of the predictions named NAME (from `eval judge`)")
    r.add_argument("--bertscore-model", help="local encoder folder for BERTScore of explanations")
    r.add_argument("--out", required=True, help="report folder")
    r.add_argument("--title", default="mentalglm evaluation report")
    r.set_defaults(func=run_report)

    from .eval_suite import register as register_suite

    register_suite(verbs, fmt)


def _examples(verb: str) -> str:
    return "examples:\n" + "\n".join(line for line in EXAMPLES.splitlines() if f"eval {verb}" in line)


def _gold_args(p, task_required: bool = False) -> None:
    g = p.add_argument_group("gold posts")
    g.add_argument("--task", required=task_required, help="task (default: the task named in the predictions file)")
    g.add_argument("--split", default="validation", choices=SPLITS,
                   help="split of the task's corpus: train, validation, or test (the publishers' test files, "
                        "read from beside the training files; see docs/data.md)")
    g.add_argument("--sample", type=int, help="score a stratified sample of this many posts of the split")
    g.add_argument("--seed", type=int, default=13, help="seed of --sample")
    g.add_argument("--gold", help="gold JSONL (id, labels, text, explanation), or a build folder (`mentalglm data "
                                  "build --out`) or its export, instead of the built-in corpus; with a build, "
                                  "the posts the build and the predictions share are scored")
    g.add_argument("--subset", action="store_true", help="score only the gold posts that have a prediction")
    g.add_argument("--data-root", help="folder holding the corpora (default: $MENTALGLM_DATA or ../shared/data)")


def _boot_args(p) -> None:
    p.add_argument("--resamples", type=int, default=BOOTSTRAP_RESAMPLES, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed")


def _gold(args, task: str):
    return gold_set(task, args.split, args.sample, args.seed, args.gold, args.data_root)


def _task_of(args, path: str) -> str:
    return get_task(args.task).name if args.task else read_predictions(path)[0].task


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def _err() -> Console:
    return Console(stderr=True)


# ----------------------------------------------------------------------------------------------- predict
def run_predict(args) -> int:
    from ..analyze import completed_pairs
    from ..baselines.llm import make_analyzer, predict_to_file

    from ..jsonl import check_settings, remove, save_settings

    console = _err()
    out = Path(args.out)
    if out.exists() and out.stat().st_size and not (args.resume or args.overwrite):
        console.print(f"[red]error:[/red] {out} exists; pass --resume to continue it or --overwrite to replace it")
        return 2
    if args.overwrite:
        remove(out)
    task = get_task(args.task).name
    # What makes rows of one file comparable: a resumed run with other settings would mix two systems.
    settings = {**model_settings(args), "tasks": [task], "split": args.split, "explain": args.explain,
                "few_shot": args.few_shot, "shots_seed": args.shots_seed if args.few_shot else None}
    check_settings(out, settings)  # before the model loads: a DataError naming the setting, exit 2
    gold = _gold(args, task)
    train = []
    if args.few_shot:  # examples come from the train split only, never from the posts being scored
        from ..data.sources import training_posts

        train = training_posts(gold.task, args.split, args.data_root)
    backend, style = open_from_args(args)
    analyzer = make_analyzer(backend, gold.task, style, args.explain, args.max_tokens, args.few_shot, train,
                             args.shots_seed, **heads_options(args))
    save_settings(out, settings)
    remaining = len(gold.examples) - len({i for i, _ in completed_pairs(out)} & {e.id for e in gold.examples})
    with _progress(console) as bar:
        job = bar.add_task(f"{gold.task} ({backend.name})", total=remaining)
        predict_to_file(analyzer, gold.examples, out, lambda a: bar.advance(job))
    backend.close()
    console.print(f"wrote {out} ({gold.description}); score it with: mentalglm eval score {shlex.quote(str(out))}"
                  + (f" --sample {args.sample} --seed {args.seed}" if args.sample else ""))
    return 0


# ------------------------------------------------------------------------------------------------- score
def _fmt(card, key: str) -> str:
    value = f"{100 * card.metrics[key]:.1f}"
    if key in card.intervals:
        lo, hi = card.intervals[key]
        value += f"  [{100 * lo:.1f}, {100 * hi:.1f}]"
    return value


def print_card(console: Console, path: str, entry) -> None:
    from ..evaluate.report import METRIC_NAMES, metric_columns

    card, spec = entry.card, get_task(entry.task)
    table = Table(title=f"{path}: {entry.system} on {entry.gold}, n={card.n} (percent, 95% bootstrap interval)")
    table.add_column("metric")
    table.add_column("score", justify="right")
    for key in metric_columns([entry]):
        table.add_row(METRIC_NAMES.get(key, key), _fmt(card, key))
    console.print(table)
    per = Table(title=f"per {'label' if spec.multi_label else 'class'}")
    for col in ("label", "precision", "recall", "F1", "support", "predicted"):
        per.add_column(col, justify="left" if col == "label" else "right")
    for name, pc in card.per_class.items():
        per.add_row(f"{name} {spec.label(name).en}", *(f"{100 * pc[k]:.1f}" for k in ("precision", "recall", "f1")),
                    str(pc["support"]), str(pc["predicted"]))
    console.print(per)
    if card.confusion:
        cm = Table(title="confusion matrix (rows gold, columns predicted)")
        cm.add_column("gold \\ pred")
        for col in card.confusion["columns"]:
            cm.add_column(col, justify="right")
        for name, row in zip(card.confusion["labels"], card.confusion["matrix"]):
            cm.add_row(name, *map(str, row))
        console.print(cm)
    if entry.explanations:
        ex = entry.explanations
        console.print("explanations: " + ", ".join(f"{k} {v:.1f}" for k, v in ex.means.items())
                      + f" (n={ex.n}, empty {ex.empty})")
    if entry.checks:
        from ..evaluate.predictions import CHECKS, check_rate

        console.print("explanation checks: " + ", ".join(f"{name.lower()} {check_rate(entry.checks.get(k))}"
                                                         for k, name in CHECKS.items()))


def _entries(args, specs: list[tuple[str | None, str]]):
    from ..evaluate.report import entry_from_file

    entries = []
    for name, path in specs:
        gold = _gold(args, _task_of(args, path))
        entries.append(entry_from_file(path, gold, name, args.subset, args.resamples, args.bootstrap_seed,
                                       getattr(args, "bertscore_model", None)))
    names = [(e.task, e.system) for e in entries]
    for e, (name, path) in zip(entries, specs):
        if name is None and names.count((e.task, e.system)) > 1:  # two runs of one model: tell the rows apart
            e.system = f"{e.system} ({path})"
    return entries


def run_score(args) -> int:
    entries = _entries(args, [(None, f) for f in args.files])
    if args.json:
        print(json.dumps([{"file": e.source, "system": e.system, "gold": e.gold, **e.card.to_dict(),
                           "explanations": e.explanations.to_dict() if e.explanations else None,
                           "explanation_checks": e.checks}
                          for e in entries], ensure_ascii=False, indent=2))
        return 0
    console = Console()
    for e in entries:
        print_card(console, e.source, e)
    return 0


# ---------------------------------------------------------------------------------------------- baseline
def run_baseline(args) -> int:
    from ..baselines import make_baseline
    from ..data.sources import training_posts

    console = _err()
    spec = get_task(args.task)
    train = training_posts(spec.name, args.split, args.data_root)
    target = _gold(args, spec.name).examples
    baseline = make_baseline(args.kind, spec, model=args.model, output_dir=args.output_dir, epochs=args.epochs,
                             max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length)
    with console.status(f"training the {args.kind} baseline on {len(train)} {spec.name} posts"):
        model = baseline.fit(train)
    if hasattr(model, "save"):  # a fine-tuned model worth keeping
        console.print(f"fine-tuned model saved to {model.save()}")
    path = write_predictions(model.predictions(target), args.out)
    console.print(f"wrote {len(target)} predictions to {path}; "
                  f"score with: mentalglm eval score {shlex.quote(str(path))}")
    return 0


# ----------------------------------------------------------------------------------------------- explain
def run_explain(args) -> int:
    from ..evaluate.explanations import other_post_control, score_explanations
    from ..evaluate.predictions import align

    results = []
    for path in args.files:
        task = _task_of(args, path)
        gold = _gold(args, task)
        aligned = align(gold, read_predictions(path, task), path, args.subset)
        pairs = [(r.explanation, e.explanation) for r, e in zip(aligned.rows, aligned.examples) if e.explanation]
        if not pairs:
            raise DataError(path, None, f"no reference explanations in the gold set ({gold.description}); pass "
                                        "--gold with a build folder or a JSONL with an `explanation` field "
                                        "(SOS-4K has them built in)")
        scores = score_explanations([c for c, _ in pairs], [r for _, r in pairs], bertscore_model=args.bertscore_model,
                                    bertscore_layer=args.bertscore_layer, bartscore_model=args.bartscore_model,
                                    language=get_task(task).language)
        results.append((path, scores))
        if args.control:
            results.append((f"{path} control (another post's reference)", other_post_control([r for _, r in pairs])))
    if args.json:
        print(json.dumps([{"file": p, **s.to_dict()} for p, s in results], ensure_ascii=False, indent=2))
        return 0
    console = Console()
    for path, s in results:
        table = Table(title=f"{path}: explanations vs references (n={s.n}, empty {s.empty}; mean, 95% interval)")
        table.add_column("metric")
        table.add_column("score", justify="right")
        for key, mean in s.means.items():
            lo, hi = s.intervals.get(key, (float("nan"), float("nan")))
            table.add_row(key, f"{mean:.1f}  [{lo:.1f}, {hi:.1f}]")
        console.print(table)
        for note in s.skipped:
            console.print(f"[yellow]skipped[/yellow] {note}")
    return 0


# ------------------------------------------------------------------------------------------------- judge
def run_judge(args) -> int:
    from ..evaluate.judge import CRITERIA, Judge, read_judgements, summarize
    from ..jsonl import check_settings, save_settings
    from ..evaluate.predictions import align
    from ..jsonl import write_rows

    console = _err()
    task = _task_of(args, args.file)
    spec = get_task(task)
    gold = _gold(args, task)
    aligned = align(gold, read_predictions(args.file, task), args.file, args.subset)
    items = [(e.id, e.text, r.labels, r.explanation) for r, e in zip(aligned.rows, aligned.examples)]
    items = items[: args.limit] if args.limit else items
    out = Path(args.out)
    # Judgements by another judge model, or of another predictions file, must not be mixed into one file.
    settings = {**model_settings(args), "judged_file": str(Path(args.file).resolve()), "tasks": [task]}
    check_settings(out, settings)
    done = read_judgements(out)
    todo = [it for it in items if it[0] not in done]
    backend, _ = open_from_args(args)
    save_settings(out, settings)
    judge = Judge(backend, args.judge_max_tokens)
    with _progress(console) as bar:
        job = bar.add_task(f"judging with {backend.name}", total=len(todo))

        def judged(result) -> None:
            done[result.id] = result
            bar.advance(job)

        write_rows(judge.stream(spec, todo), out, judged)
    backend.close()
    summary = summarize([done[i[0]] for i in items])
    table = Table(title=f"judge {backend.name} on {args.file}: n={summary['n']}, invalid "
                        f"{100 * summary['invalid_rate']:.1f}% (mean 0-3 over valid judgements)")
    for c in CRITERIA:
        table.add_column(c, justify="right")
    table.add_row(*("—" if summary["means"][c] is None else f"{summary['means'][c]:.2f}" for c in CRITERIA))
    Console().print(table)
    for r in [done[i[0]] for i in items if done[i[0]].status != "ok"][:3]:
        console.print(f"[yellow]invalid judgement for {r.id}:[/yellow] {r.error}")
    return 0


# ------------------------------------------------------------------------------------------------ report
def _named(spec: str) -> tuple[str | None, str]:
    name, sep, path = spec.partition("=")
    return (name, path) if sep and not Path(spec).exists() else (None, spec)


def run_report(args) -> int:
    from ..evaluate.judge import read_judgements, summarize
    from ..evaluate.report import write_report

    entries = _entries(args, [_named(f) for f in args.files])
    for spec in args.judge:
        name, path = _named(spec)
        if not Path(path).exists():
            raise DataError(path, None, "judgements file not found")
        rows = list(read_judgements(path).values())
        matched = [e for e in entries if e.system == name]
        if not matched:
            raise DataError(path, None, f"--judge names {name!r}, which is none of the report rows: "
                                        f"{', '.join(e.system for e in entries)}")
        for e in matched:
            e.judge = summarize(rows)
    command = "mentalglm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    md, page = write_report(entries, args.out, args.title, command)
    Console().print(f"wrote {md} and {page} ({len(entries)} result(s), "
                    f"{len({e.task for e in entries})} task(s))")
    return 0
