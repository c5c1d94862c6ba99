"""Run a suite: every system on every task's gold posts, predictions cached by their settings, then one report.

The run folder:

    <out>/predictions/<system>/<task>-<key>.jsonl   predictions; <key> hashes the system's settings, the task,
                                                    the split, the sample and the posts asked (see cache_key)
    <out>/predictions/<system>/<task>-<key>.jsonl.meta.json    those settings, readable
    <out>/report/report.{md,html}, plots/           the comparison
    <out>/suite.json                                what ran, what was skipped and why, which splits each
                                                    system read (fit on train; scored on the split), timings

A rerun reuses every finished predictions file whose key still matches and finishes an LLM file that was cut off;
changing a system's settings gives it a new key, so stale predictions are never scored.
"""

from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..analyze import completed_pairs
from ..evaluate.predictions import GoldSet, gold_set
from ..jsonl import save_settings
from ..evaluate.report import Entry, entry_from_file, write_report
from .config import SuiteConfig, SystemSpec, cache_key
from .systems import Skipped, SystemRunner, availability


@dataclass
class SystemRecord:
    name: str
    kind: str
    family: str
    status: str = "ok"  # ok | skipped | failed
    message: str = ""
    splits_read: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # task -> predictions file
    cached: list[str] = field(default_factory=list)  # tasks whose predictions were reused
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class SuiteResult:
    config: SuiteConfig
    split: str
    out: Path
    systems: list[SystemRecord]
    entries: list[Entry]
    report: tuple[Path, Path] | None = None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "system"


class Events:
    """What a run reports while it goes (the command draws progress bars from it); the default says nothing."""

    def system_start(self, system: SystemSpec, task: str, todo: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def system_done(self, record: SystemRecord) -> None: ...


def run_suite(config: SuiteConfig, out: str | Path, split: str | None = None, only: list[str] | None = None,
              sample: int | None = None, data_root=None, events: Events | None = None,
              command: str = "", threads: int | None = None) -> SuiteResult:
    """``threads``: llama.cpp threads of every LLM system (not part of the cache key: it changes speed only)."""
    events = events or Events()
    split = split or config.split
    if sample is not None:
        config = replace(config, sample=sample)
    if threads is not None:
        config = replace(config, systems=tuple(replace(s, threads=threads) for s in config.systems))
    out = Path(out)
    systems = [s for s in config.systems if not only or s.name in only]
    if only:
        unknown = sorted(set(only) - {s.name for s in config.systems})
        if unknown:
            raise KeyError(f"--only names unknown system(s) {unknown}; the suite has "
                           f"{', '.join(s.name for s in config.systems)}")
    golds = {task: gold_set(task, split, config.sample, config.seed, root=data_root) for task in config.tasks}
    records, entries = [], []
    for system in systems:
        record = SystemRecord(system.name, system.kind, system.family)
        records.append(record)
        reason = availability(system)
        if reason:
            record.status, record.message = "skipped", reason
            events.system_done(record)
            continue
        record.splits_read = sorted({*(["train"] if system.fitted_on_train else []), split})
        runner = SystemRunner(system, data_root, out / "work" / _slug(system.name))
        try:
            for task in config.tasks:
                if system not in config.systems_for(task):
                    continue
                gold = golds[task]
                key = cache_key(system, task, split, config.sample, config.seed, [e.id for e in gold.examples])
                path = out / "predictions" / _slug(system.name) / f"{task}-{key}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                record.files[task] = str(path)
                # The shared resume reader: a torn last line is cut and error rows are dropped to be redone.
                done = {i for i, _ in completed_pairs(path)}
                todo = sum(e.id not in done for e in gold.examples)
                if not todo:
                    record.cached.append(task)
                    continue
                save_settings(path, {"system": system.name, "settings": system.settings(), "task": task,
                                     "split": split, "sample": config.sample, "seed": config.seed,
                                     "gold": gold.description})
                events.system_start(system, task, todo)
                start = time.perf_counter()
                runner.predict(gold, path, lambda _row: events.advance())
                record.seconds[task] = round(time.perf_counter() - start, 1)
        except Skipped as e:
            record.status, record.message, record.files = "skipped", str(e), {}
        except Exception as e:  # one broken system must not lose the others' work; the command exits non-zero
            record.status, record.message = "failed", f"{type(e).__name__}: {e}"
        finally:
            runner.close()
        events.system_done(record)
    for task in config.tasks:
        for record, system in zip(records, systems):
            if record.status == "ok" and task in record.files:
                entry = entry_from_file(record.files[task], golds[task], system.name, False, config.resamples,
                                        config.bootstrap_seed)
                entry.family = system.family
                entries.append(entry)
    result = SuiteResult(config, split, out, records, entries)
    if entries:
        result.report = write_report(entries, out / "report", config.title or f"mentalglm evaluation suite "
                                     f"{config.name!r}, {split} split", command, _notes(result),
                                     reference=config.reference, split=split)
    _write_record(result, golds, command)
    return result


def _notes(result: SuiteResult) -> list[str]:
    notes = [f"Suite `{result.config.source or result.config.name}` on the **{result.split}** split"
             + (f" (a stratified sample of {result.config.sample} posts per task, seed {result.config.seed})"
                if result.config.sample else " (every post)") + ". Systems that read training data read only the "
             "train split" + (", with every post that is also in a test file removed." if result.split == "test"
                              else "; the validation split is carved from the training files (docs/data.md).")]
    for r in result.systems:
        if r.status != "ok":
            notes.append(f"Not run: {r.name} ({r.status}): {r.message}")
    return notes


def _write_record(result: SuiteResult, golds: dict[str, GoldSet], command: str) -> Path:
    path = result.out / "suite.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "suite": result.config.source or result.config.name, "command": command, "split": result.split,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()}, python {platform.python_version()}",
        "gold": {task: {"description": g.description, "n": len(g.examples)} for task, g in golds.items()},
        "reference": result.config.reference,
        "systems": [vars(r) for r in result.systems],
        "report": [str(p) for p in result.report] if result.report else None,
    }
    path.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


__all__ = ["run_suite", "SuiteResult", "SystemRecord", "Events"]
