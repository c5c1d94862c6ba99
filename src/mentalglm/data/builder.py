"""The C-IMHI builder: Example records -> instruction records with a teacher's explanation, quality-controlled.

For each task: load the source's splits (``task_splits``: train + validation, the validation carved
with a fixed seed where the source has none), drop posts that sit in two splits and duplicates,
optionally cap a stratified sample, then get an explanation per post (reused from the source or
written by the teacher), render the answer with the task spec and check it (``quality.check``).
A failing sample is regenerated with another seed and temperature, up to ``retries`` times, then
dropped with its reason. Output, per task: ``<out>/<task>/{train,validation}.jsonl`` and
``dropped.jsonl``; for the build: ``qc_report.json``, ``DATA_CARD.md`` and the length histogram.

An instruction record (the C-IMHI style of the released Alpaca files)::

    {"id", "task", "split", "instruction": "考虑以下这个帖子：“…” 问题：…", "input": "",
     "output": "这篇帖子体现了…。理由：…", "labels", "explanation", "source", "teacher", "prompt_hash"}
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..safety import redact
from ..tasks import get_task
from .quality import DEDUP_KINDS, RULES, QCConfig, check, dedupe
from .records import DataError, Example
from .sources.io import read_jsonl
from .sources import FORMAT_LOADERS, TASK_SOURCES, VALIDATION_FRACTION, VALIDATION_SEED, task_splits
from .splits import leaks, normalize_text, stratified_sample, stratified_split
from .teacher import Answer, Job, Teacher, reused_answer

log = logging.getLogger("mentalglm.data")

BUILD_TASKS = ("cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion", "cognitive_pathway")
SPLITS = ("train", "validation")
NO_TEACHER = "no_teacher"  # drop reason: nothing to reuse and no teacher to ask


@dataclass
class BuildConfig:
    tasks: tuple[str, ...]
    out: Path
    max_per_task: int | None = None
    # Splits to explain: ("train",) spends the teacher only on posts a model will train on. Near-duplicates are
    # still removed against every split first, so no training post repeats a validation one.
    splits: tuple[str, ...] = SPLITS
    retries: int = 2
    reuse_explanations: bool = False
    redact_posts: bool = False
    seed: int = 13
    command: str = ""  # the command line, for the data card
    qc: QCConfig = QCConfig()
    data_root: str | None = None
    # Tasks without a built-in corpus (cognitive_pathway): task -> [(format, path)], formats of FORMAT_LOADERS.
    inputs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


class Progress(Protocol):
    """Counts explanations checked: ``start`` with the sample count, ``grow`` by each round of regenerations."""

    def start(self, task: str, total: int) -> None: ...

    def grow(self, task: str, n: int) -> None: ...

    def advance(self, task: str, n: int = 1) -> None: ...


class _Silent:
    def start(self, task: str, total: int) -> None:
        pass

    def grow(self, task: str, n: int) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        pass


def load_splits(task: str, cfg: BuildConfig) -> dict[str, list[Example]]:
    """train + validation of a task, from a built-in source or from files given for it."""
    if task in cfg.inputs:
        examples: list[Example] = []
        for fmt, path in cfg.inputs[task]:
            if fmt not in FORMAT_LOADERS:
                raise DataError(path, None, f"unknown format {fmt!r}; known: {', '.join(FORMAT_LOADERS)}")
            examples.extend(e for e in FORMAT_LOADERS[fmt](Path(path)) if e.task == task)
        if not examples:
            raise DataError(cfg.inputs[task][0][1], None, f"no examples of task {task!r} in the given file(s)")
        rest, val = stratified_split(examples, VALIDATION_FRACTION, seed=VALIDATION_SEED, name="validation")
        return {"train": rest, "validation": val}
    if task not in TASK_SOURCES:
        raise DataError(task, None, f"task {task!r} has no built-in corpus; give its file, e.g. "
                        f"--input {task}=pathway_spans:FILE.jsonl (formats: {', '.join(FORMAT_LOADERS)})")
    return task_splits(task, cfg.data_root)


def cap(splits: dict[str, list[Example]], n: int | None, seed: int) -> dict[str, list[Example]]:
    """A stratified sample of ``n`` posts over the splits, in proportion to their sizes (at least one each)."""
    total = sum(len(v) for v in splits.values())
    if n is None or n >= total:
        return splits
    out, left = {}, n
    names = list(splits)
    for k, name in enumerate(names):
        share = left if k == len(names) - 1 else max(1, round(n * len(splits[name]) / total))
        share = min(share, len(splits[name]), left)
        out[name] = stratified_sample(splits[name], share, seed=seed)
        left -= share
    return out


def instruction_record(spec, example: Example, split: str, explanation: str, teacher: str, key: str | None,
                       redact_posts: bool) -> dict:
    text = redact(example.text) if redact_posts else example.text
    return {"id": example.id, "task": spec.name, "split": split, "instruction": spec.instruction_prompt(text),
            "input": "", "output": spec.render_answer(example.labels, explanation), "labels": list(example.labels),
            "explanation": explanation, "source": example.source, "teacher": teacher, "prompt_hash": key}


@dataclass
class _Pending:
    example: Example
    split: str
    calls: int = 0  # teacher calls made for it so far
    tries: int = 0  # explanations checked so far (reused or generated)
    reasons: list[list[str]] = field(default_factory=list)
    last: str = ""


class Builder:
    """``judge(task, explanation, gold labels)``: whether a consistency reader finds the explanation arguing for the
    gold labels (None: it cannot tell); a sample it finds arguing for another label fails QC and is regenerated."""

    def __init__(self, cfg: BuildConfig, teacher: Teacher | None, progress: Progress | None = None,
                 judge: Callable[[str, str, list[str]], bool | None] | None = None):
        self.cfg = cfg
        self.teacher = teacher
        self.progress = progress or _Silent()
        self.judge = judge

    # ------------------------------------------------------------------ one task
    def build_task(self, task: str) -> dict:
        t0 = time.perf_counter()
        spec = get_task(task)
        loaded = load_splits(task, self.cfg)
        found = leaks(loaded)
        for example_id, first, other in found:
            log.warning("%s: post %s is in both %s and %s; dropped from %s", task, example_id, first, other, other)
        kept, removed = dedupe(loaded, self.cfg.qc)
        assert not leaks(kept), "dedupe must leave no post in two splits"
        sample = cap({s: kept[s] for s in kept if s in self.cfg.splits}, self.cfg.max_per_task, self.cfg.seed)
        pending = [_Pending(e, split) for split in sample for e in sample[split]]
        order = {p.example.id: k for k, p in enumerate(pending)}
        self.progress.start(task, len(pending))

        accepted: dict[str, dict] = {}
        dropped: list[dict] = []
        seen_explanations: set[str] = set()
        checks: Counter = Counter()
        attempts_hist: Counter = Counter()
        reused = 0
        max_tries = self.cfg.retries + 1
        while pending:
            answers = self._answers(spec, pending)
            by_id = {p.example.id: p for p in pending}
            nxt = []
            for ans in sorted(answers, key=lambda a: order[a.job.example.id]):  # deterministic under concurrency
                p = by_id[ans.job.example.id]
                p.tries += 1
                if ans.prompt_hash:
                    p.calls += 1
                output = spec.render_answer(p.example.labels, ans.explanation) if ans.explanation else ""
                consistent = self.judge(task, ans.explanation, list(p.example.labels)) \
                    if self.judge and ans.explanation else None
                failed = check(spec, p.example, ans.explanation, output, self.cfg.qc, ans.finish_reason,
                               seen_explanations, consistent)
                checks.update(failed)
                if not failed:
                    teacher = self.teacher.name if ans.prompt_hash else f"{p.example.source} (source explanation)"
                    reused += not ans.prompt_hash
                    accepted[p.example.id] = instruction_record(spec, p.example, p.split, ans.explanation, teacher,
                                                                ans.prompt_hash or None, self.cfg.redact_posts)
                    seen_explanations.add(normalize_text(ans.explanation))
                    attempts_hist[p.tries] += 1
                    continue
                p.reasons.append(failed)
                p.last = ans.explanation or ans.raw
                if p.tries < max_tries and self.teacher is not None:
                    nxt.append(p)
                else:
                    dropped.append(self._drop(p, failed[0]))
            answered = {a.job.example.id for a in answers}
            unanswerable = [p for p in pending if p.example.id not in answered]
            dropped.extend(self._drop(p, NO_TEACHER) for p in unanswerable)
            self.progress.advance(task, len(unanswerable))
            self.progress.grow(task, len(nxt))
            pending = nxt

        records = {split: [accepted[e.id] for e in sample[split] if e.id in accepted] for split in sample}
        self._write_task(task, records, dropped)
        return self._task_report(spec, loaded, found, kept, removed, sample, records, dropped, checks, attempts_hist,
                                 reused, time.perf_counter() - t0)

    def _answers(self, spec, pending: list[_Pending]) -> list[Answer]:
        """One explanation per pending sample: the source's on the first try when asked, else the teacher's."""
        answers, ask = [], []
        for p in pending:
            if p.tries == 0 and self.cfg.reuse_explanations and p.example.explanation:
                answers.append(reused_answer(Job(p.example, 0), spec))
            elif self.teacher is not None:
                ask.append(Job(p.example, p.calls))
        self.progress.advance(spec.name, len(answers))
        for answer in self.teacher.explain(spec, ask) if ask else ():
            answers.append(answer)
            self.progress.advance(spec.name)
        return answers

    def _drop(self, p: _Pending, reason: str) -> dict:
        return {"id": p.example.id, "split": p.split, "reason": reason, "tries": p.tries,
                "failed_rules": p.reasons, "last_explanation": p.last}

    def _write_task(self, task: str, records: dict[str, list[dict]], dropped: list[dict]) -> None:
        folder = self.cfg.out / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in records.items():
            _write_jsonl(folder / f"{split}.jsonl", rows)
        _write_jsonl(folder / "dropped.jsonl", dropped)

    def _task_report(self, spec, loaded, found, kept, removed, sample, records, dropped, checks, attempts_hist, reused,
                     seconds) -> dict:
        lengths = [len(r["explanation"]) for rows in records.values() for r in rows]
        usage = asdict(self.teacher.usage[spec.name]) if self.teacher else {}
        return {
            "task": spec.name,
            "source": spec.source,
            "loaded": {s: len(v) for s, v in loaded.items()},
            "leaks": [{"id": i, "first_split": a, "other_split": b} for i, a, b in found],
            "after_dedup": {s: len(v) for s, v in kept.items()},
            "removed": {kind: sum(r.kind == kind for r in removed) for kind in DEDUP_KINDS},
            "removed_ids": [asdict(r) for r in removed],
            "sampled": {s: len(v) for s, v in sample.items()},
            "accepted": {s: len(v) for s, v in records.items()},
            "reused_explanations": reused,
            "checks_failed": {rule: checks.get(rule, 0) for rule in RULES},
            "tries_of_accepted": {str(k): v for k, v in sorted(attempts_hist.items())},
            "dropped": dict(Counter(d["reason"] for d in dropped).most_common()),
            "labels": {s: _label_counts(spec, rows) for s, rows in records.items()},
            "explanation_chars": _stats(lengths),
            "explanation_lengths": lengths,
            "teacher": usage,
            "seconds": round(seconds, 2),
        }

    # ------------------------------------------------------------------ the build
    def run(self) -> dict:
        t0 = time.perf_counter()
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        tasks = [self.build_task(t) for t in self.cfg.tasks]
        cache = self.teacher.cache if self.teacher else None
        report = {
            "config": {"command": self.cfg.command, "tasks": list(self.cfg.tasks),
                       "max_per_task": self.cfg.max_per_task,
                       "retries": self.cfg.retries, "reuse_explanations": self.cfg.reuse_explanations,
                       "redact_posts": self.cfg.redact_posts, "seed": self.cfg.seed, "qc": asdict(self.cfg.qc),
                       "teacher": self.teacher.name if self.teacher else None,
                       "decoding": asdict(self.teacher.plan) if self.teacher else None},
            "rules": RULES,
            "dedup_kinds": DEDUP_KINDS,
            "tasks": {t["task"]: t for t in tasks},
            "cache": {"path": str(cache.path) if cache else None, "entries": len(cache) if cache else 0,
                      "bad_lines": [asdict(b) for b in cache.bad_lines] if cache else []},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (self.cfg.out / "qc_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        from .card import write_card  # matplotlib is imported only here

        write_card(report, self.cfg.out)
        return report


def _label_counts(spec, rows: list[dict]) -> dict[str, int]:
    counts = Counter(n for r in rows for n in (r["labels"] or ["(none)"]))
    return {n: counts[n] for n in [*spec.label_names, "(none)"] if counts.get(n)}


def _stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": round(statistics.mean(values), 1), "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)  # readers never see a half-written split


def read_built(folder: str | Path, tasks: list[str] | None = None) -> list[dict]:
    """The instruction records of a build folder (``<folder>/<task>/<split>.jsonl``), train first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "not a build folder (run `mentalglm data build --out DIR` first)")
    records = []
    task_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and any((p / f"{s}.jsonl").exists() for s in SPLITS))
    if not task_dirs:
        raise DataError(folder, None, "no <task>/train.jsonl or <task>/validation.jsonl inside")
    for task_dir in task_dirs:
        if tasks and task_dir.name not in tasks:
            continue
        for split in SPLITS:
            path = task_dir / f"{split}.jsonl"
            if not path.exists():
                continue
            records.extend(row for _, row in read_jsonl(path, ["id", "task", "instruction", "output"]))
    return records
