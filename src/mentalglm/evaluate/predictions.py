"""Predictions files (one JSON object per line: id, task, labels, explanation, raw, parse_status),
the gold set they are scored against, and the check that the two fit together.

A file that does not fit its gold set is an error that names the line, never a silent
re-alignment: a missing id, an unknown label, a row of another task or a duplicate id
would each change the scores without anyone noticing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..data.records import DataError, Example
from ..data.sources.io import read_jsonl
from ..tasks import FALLBACK, INVALID, OK, TaskSpec, get_task

ERROR = "error"  # the backend failed on the row (see mentalglm.analyze)
# The explanation checks analyze rows carry (true, false, or null without an explanation), as reports name them.
CHECKS = {"evidence_ok": "Quotes in the post", "explanation_consistent": "Argues for its label"}
STATUSES = (OK, FALLBACK, INVALID, ERROR)
REQUIRED = ("id", "task", "labels", "parse_status")


@dataclass(frozen=True)
class Prediction:
    id: str
    task: str
    labels: tuple[str, ...]
    parse_status: str
    explanation: str = ""
    raw: str = ""
    model: str = ""
    line: int = 0  # where it sits in its file (1-based), for messages
    evidence_ok: bool | None = None  # analyze rows: every quote in the post (after near-miss repair)
    explanation_consistent: bool | None = None  # analyze rows: the explanation argues for the row's label

    @property
    def valid(self) -> bool:
        return self.parse_status in (OK, FALLBACK)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("line")
        for check in CHECKS:  # only analyze rows have them
            if d[check] is None:
                d.pop(check)
        d["labels"] = list(self.labels)
        return json.dumps(d, ensure_ascii=False)


def write_predictions(rows: Iterable[Prediction], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row.to_json() + "\n")
    return path


def _row(path: Path, line: int, obj: dict, expected: TaskSpec | None) -> Prediction:
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise DataError(path, line, f"missing field(s) {', '.join(missing)}; every row needs {', '.join(REQUIRED)}")
    try:
        spec = get_task(str(obj["task"]))
    except KeyError as e:
        raise DataError(path, line, str(e.args[0])) from None
    if expected is not None and spec.name != expected.name:
        raise DataError(path, line, f"task mismatch: the row is for task {spec.name!r}, expected {expected.name!r}")
    labels = obj["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DataError(path, line, f"labels must be a list of label names, found {labels!r}")
    unknown = [x for x in labels if x not in spec.label_names]
    if unknown:
        raise DataError(path, line, f"unknown label(s) {unknown} for task {spec.name!r}; "
                                    f"labels are {', '.join(spec.label_names)}")
    if not spec.multi_label and len(labels) > 1:
        raise DataError(path, line, f"task {spec.name!r} is single-label, the row has {len(labels)} labels")
    status = obj["parse_status"]
    if status not in STATUSES:
        raise DataError(path, line, f"parse_status {status!r} is not one of {', '.join(STATUSES)}")
    if status in (OK, FALLBACK) and not labels and not spec.empty_sentence:
        raise DataError(path, line, f"parse_status {status!r} but no labels; an answer without a label is "
                                    f"'{INVALID}' for task {spec.name!r}")
    checks = [obj.get(k) if isinstance(obj.get(k), bool) else None for k in CHECKS]
    return Prediction(str(obj["id"]), spec.name, tuple(labels), status, str(obj.get("explanation") or ""),
                      str(obj.get("raw") or ""), str(obj.get("model") or ""), line, *checks)


def explanation_checks(rows: Iterable[Prediction]) -> dict[str, list[int]]:
    """[true, checked] of ``evidence_ok`` and ``explanation_consistent`` over the rows that carry them (analyze rows
    with an explanation); a check no row carries is left out."""
    rows = list(rows)
    out = {}
    for check in CHECKS:
        values = [getattr(r, check) for r in rows if getattr(r, check) is not None]
        if values:
            out[check] = [sum(values), len(values)]
    return out


def check_rate(counts: Sequence[int] | None) -> str:
    """"k/n (x%)" of a check's [true, checked] counts, or "—" when nothing was checked."""
    if not counts or not counts[1]:
        return "—"
    k, n = counts
    return f"{k}/{n} ({100 * k / n:.1f}%)"


def read_predictions(path: str | Path, task: str | None = None) -> list[Prediction]:
    """Every row of a predictions file, checked: one task per file, known labels, unique ids."""
    path = Path(path)
    expected = get_task(task) if task else None
    rows: list[Prediction] = []
    first_line: dict[str, int] = {}
    for line, obj in read_jsonl(path):
        row = _row(path, line, obj, expected)
        if expected is None:
            expected = get_task(row.task)  # the first row fixes the task of the file
        if row.id in first_line:
            raise DataError(path, line, f"duplicate id {row.id!r} (first on line {first_line[row.id]})")
        first_line[row.id] = line
        rows.append(row)
    if not rows:
        raise DataError(path, None, "no predictions in the file")
    return rows


def read_gold(path: str | Path, task: str) -> list[Example]:
    """Gold examples from a JSONL file of records (``id``, ``labels``; ``text``, ``explanation`` optional),
    for tasks without a built-in corpus (cognitive pathway, your own data)."""
    path, spec = Path(path), get_task(task)
    out, seen = [], {}
    for line, obj in read_jsonl(path):
        if "id" not in obj or not isinstance(obj.get("labels"), list):
            raise DataError(path, line, "a gold row needs an id and a labels list")
        unknown = [x for x in obj["labels"] if x not in spec.label_names]
        if unknown:
            raise DataError(path, line, f"unknown gold label(s) {unknown} for task {spec.name!r}")
        pid = str(obj["id"])
        if pid in seen:
            raise DataError(path, line, f"duplicate gold id {pid!r} (first on line {seen[pid]})")
        seen[pid] = line
        out.append(Example(pid, spec.name, str(obj.get("text") or ""), tuple(obj["labels"]),
                           str(obj.get("split") or "gold"), str(obj.get("source") or path.name),
                           obj.get("explanation")))
    if not out:
        raise DataError(path, None, "no gold rows in the file")
    return out


def is_build(path: str | Path) -> bool:
    """A build folder (``mentalglm data build --out``) or an export of one (``data export``: its ``hf/``)."""
    return Path(path).is_dir()


def read_build_gold(folder: str | Path, task: str) -> list[Example]:
    """Gold examples from the records of a build folder or of its export's ``hf/`` folder: labels and
    the reference explanation as built, the post taken back out of the instruction."""
    from ..data.builder import read_built
    from ..data.review import post_of

    folder, spec = Path(folder), get_task(task)
    if (folder / "hf").is_dir() and not (folder / spec.name).is_dir():
        folder = folder / "hf"  # an export: the HF layout holds the full records
    records = read_built(folder, [spec.name])
    if not records:
        raise DataError(folder, None, f"no records of task {spec.name!r} in this build; it holds "
                                      f"{', '.join(sorted({r['task'] for r in read_built(folder)}))}")
    out, seen = [], set()
    for r in records:
        if r["id"] in seen:  # the same post in two splits of a build cannot happen; in two folders it can
            continue
        seen.add(r["id"])
        out.append(Example(str(r["id"]), spec.name, post_of(r), tuple(r.get("labels") or ()), str(r.get("split", "")),
                           str(r.get("source") or folder.name), r.get("explanation") or None))
    return out


@dataclass(frozen=True)
class GoldSet:
    """The posts a score is computed on. ``pool`` holds every id of the split the set was drawn from:
    predictions for pooled ids outside the set (a full-split file scored on a sample) are left out,
    ids outside the pool are errors.

    ``shared_only``: a build used as gold covers some posts of a split, and predictions some others;
    scores are then over the posts both have, and neither side's extra posts is an error."""

    task: str
    examples: tuple[Example, ...]
    pool: frozenset[str]
    description: str
    split: str = "validation"
    shared_only: bool = False


def gold_set(task: str, split: str = "validation", sample: int | None = None, seed: int = 13,
             gold_file: str | Path | None = None, root=None) -> GoldSet:
    """The gold posts of a task: a split of its built-in corpus (``task_splits``; ``test`` reads the
    publishers' test files), a gold JSONL, or a build folder (or export), optionally a stratified
    sample of ``sample`` posts drawn with ``seed``."""
    from ..data.sources import SPLITS, task_splits
    from ..data.splits import stratified_sample

    spec = get_task(task)
    shared = False
    if gold_file and is_build(gold_file):
        examples, where, shared = read_build_gold(gold_file, spec.name), f"build {gold_file}", True
        split = "gold"
    elif gold_file:
        examples, where, split = read_gold(gold_file, spec.name), str(gold_file), "gold"
    else:
        if split not in SPLITS:
            raise DataError(f"--split {split}", None, f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        examples, where = task_splits(spec.name, root, test=split == "test")[split], f"{split} split"
    pool = frozenset(e.id for e in examples)
    if sample:
        examples = stratified_sample(examples, sample, seed=seed)
        where += f", stratified sample of {len(examples)} (seed {seed})"
    return GoldSet(spec.name, tuple(examples), pool, f"{spec.name}: {where}", split, shared)


@dataclass(frozen=True)
class Aligned:
    ids: list[str]
    gold: list[tuple[str, ...]]
    pred: list[tuple[str, ...]]
    valid: list[bool]
    rows: list[Prediction]
    examples: list[Example]


def align(gold: GoldSet, preds: Sequence[Prediction], path: str | Path, subset: bool = False) -> Aligned:
    """Pair each gold post with its prediction, in gold order.

    ``subset``: score only the gold posts that have a prediction (a partial run) instead of
    failing on the missing ones."""
    path = Path(path)
    if gold.shared_only:  # a build as gold: the posts both sides have
        preds = [p for p in preds if p.id in gold.pool or p.task != gold.task]
        subset = True
    by_id = {p.id: p for p in preds}
    for p in preds:
        if p.task != gold.task:
            raise DataError(path, p.line, f"task mismatch: the row is for task {p.task!r}, the gold set is "
                                          f"{gold.description}")
        if p.id not in gold.pool:
            raise DataError(path, p.line, f"id {p.id!r} is not in the gold set ({gold.description})")
    missing = [e.id for e in gold.examples if e.id not in by_id]
    if missing and not subset:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(path, None, f"{len(missing)} of {len(gold.examples)} gold posts have no prediction "
                                    f"(ids {shown}); finish the run (--resume) or pass --subset to score only "
                                    f"the predicted posts")
    examples = [e for e in gold.examples if e.id in by_id]
    if not examples:
        hint = " (a build's ids are those of the split it was built from: predict that split)" if gold.shared_only else ""
        raise DataError(path, None, f"no prediction matches a post of the gold set ({gold.description}){hint}")
    rows = [by_id[e.id] for e in examples]
    return Aligned([e.id for e in examples], [e.labels for e in examples], [r.labels for r in rows],
                   [r.valid for r in rows], rows, examples)
