"""``mentalglm heads train``: the whole reproduction of a heads model, resumable at every step.

1. read the base model's hidden state for the recipe's training and validation posts
   (``<out>/states``, cached chunk by chunk: an interrupted run continues where it stopped);
2. fit each task's head out of fold (``fit.py``) and score it on the validation sample;
3. write the shippable folder ``<out>/model`` (arrays, JSON, manifest), the validation answers as predictions
   files ``<out>/validation/<task>.jsonl`` and the scores of each part in ``<out>/report.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..prompts import SYSTEM_HEADS_ZH
from .model import TaskHead, to_probabilities
from .features import POST_CHARS, StateCache, extract_states, head_text
from .recipe import Recipe


def prompt_fingerprint() -> str:
    """Changes whenever the heads prompt changes, which makes cached states stale."""
    return hashlib.sha256(f"{SYSTEM_HEADS_ZH}|{POST_CHARS}".encode()).hexdigest()[:16]


def open_base(recipe: Recipe, threads: int | None = None):
    from ..llm.catalog import REGISTRY, assemble_packaged
    from ..llm.llamacpp import LlamaCppBackend

    entry = REGISTRY[recipe.base]
    return LlamaCppBackend(assemble_packaged(entry), name=entry.name, n_ctx=2048, n_threads=threads), entry


def read_states(recipe: Recipe, out: Path, threads: int | None = None, root=None) -> StateCache:
    """Step 1: every hidden state the recipe needs, cached under ``out/states``."""
    backend, entry = open_base(recipe, threads)
    cache = StateCache(out / "states", {"base": entry.name, "base_sha256": entry.packaged.sha256,
                                        "prompt": prompt_fingerprint()})
    jobs = []
    for task in recipe.tasks:
        jobs += [(task, "validation", recipe.validation_examples(task, root)),
                 (task, "train", recipe.state_examples(task, root))]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    started = time.time()
    with Progress(*columns) as bar:
        for task, split, examples in jobs:
            job = bar.add_task(f"hidden states {task}/{split}", total=len(examples))
            extract_states(backend, cache, task, split, examples, pool=recipe.pool(task),
                           progress=lambda done, total, job=job: bar.update(job, completed=done))
    backend.close()
    log = out / "states" / "timing.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": "states", "seconds": round(time.time() - started, 1),
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return cache


def fit_task(recipe: Recipe, cache: StateCache, task: str, root=None) -> tuple[TaskHead, dict]:
    """Step 2 for one task: the head, and its scores on the validation sample beside each part alone."""
    from ..data.sources import task_splits
    from ..evaluate.classification import bootstrap_intervals, expected_calibration_error, score
    from ..tasks import get_task
    from .fit import fit_head, label_matrix

    spec = get_task(task)
    train = task_splits(task, root)["train"]
    state_posts = recipe.state_examples(task, root)
    val = recipe.validation_examples(task, root)
    pool = recipe.pool(task)
    have_train, have_val = cache.load(task, "train", pool), cache.load(task, "validation", pool)
    missing = [e.id for e in state_posts if e.id not in have_train] + [e.id for e in val if e.id not in have_val]
    if missing:
        raise RuntimeError(f"{task}: {len(missing)} hidden states are missing from {cache.folder}; "
                           "run the states step first")
    fitted = fit_head(task, [head_text(e.text) for e in train], [e.labels for e in train],
                      [head_text(e.text) for e in state_posts], np.stack([have_train[e.id] for e in state_posts]),
                      [e.labels for e in state_posts], folds=recipe.folds, seed=recipe.seed, C_grid=recipe.C_grid,
                      ngram_C_grid=recipe.ngram_C_grid, risk_recall=recipe.risk_recall,
                      balanced=task in recipe.balanced, decision_metric=recipe.decision_metric.get(task))
    head = fitted.head
    head.pool = pool
    gold = [e.labels for e in val]
    y_val = label_matrix(spec, gold)
    ngram_scores = np.stack([head.ngram.scores(head_text(e.text)) for e in val])
    state_scores = np.stack([head.state.scores(have_val[e.id]) for e in val])
    probs = head.probabilities_from_scores(ngram_scores, state_scores)
    # Each part alone beside the head, for the record of what the stacking buys.
    parts = {"ngram": to_probabilities(ngram_scores, spec.multi_label),
             "state": to_probabilities(state_scores, spec.multi_label)}
    decided = {"stack": [tuple(head.decide(p)) for p in probs],
               **{name: [tuple(_part_decision(head, p)) for p in ps] for name, ps in parts.items()}}
    report = {"validation_posts": len(val), "state_posts": len(state_posts), "train_posts": len(train),
              "scores": {name: score(spec, gold, pred) for name, pred in decided.items()},
              "intervals": {k: list(v) for k, v in bootstrap_intervals(spec, gold, decided["stack"]).items()},
              "ece_validation": expected_calibration_error(probs, y_val, spec.multi_label),
              "ece_out_of_fold": expected_calibration_error(fitted.oof, label_matrix(
                  spec, [e.labels for e in state_posts]), spec.multi_label)}
    flagged = np.array([head.flagged(p) for p in probs])
    if head.high_labels:
        is_high = y_val[:, [head.labels.index(h) for h in head.high_labels]].sum(1) > 0
        tp = int((flagged & is_high).sum())
        report["risk_operating_point"] = {
            "threshold": head.risk_threshold, "recall": tp / max(1, is_high.sum()),
            "precision": tp / max(1, flagged.sum()), "flagged": int(flagged.sum()), "high_posts": int(is_high.sum())}
    # The validation answers as a predictions file (the format of `mentalglm eval predict`), to score and compare.
    report["predictions"] = [
        {"id": e.id, "task": task, "labels": list(lab), "parse_status": "ok", "model": recipe.name,
         "scores": {n: round(float(x), 4) for n, x in zip(head.labels, p)},
         "high_risk": bool(flag)}
        for e, lab, p, flag in zip(val, decided["stack"], probs, flagged)]
    head.info["validation"] = {k: v for k, v in report.items() if k != "predictions"}
    return head, report


def _part_decision(head: TaskHead, p: np.ndarray) -> list[str]:
    """A part alone: its most probable label, or (multi-label) every label at 0.5 or more, at least one."""
    chosen = [lab for lab, x in zip(head.labels, p) if x >= 0.5] if head.multi_label else []
    return chosen or [head.labels[int(np.argmax(p))]]


def write_heads_folder(folder: Path, heads: dict, manifest: dict) -> Path:
    """``folder`` with every head's files and ``manifest.json`` listing them with their sha256."""
    from . import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    files = [path for head in heads.values() for path in head.save(folder)]
    manifest = {**manifest, "tasks": list(heads), "files": {p.name: file_sha256(p) for p in files}}
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def training_data_hashes(recipe: Recipe, root=None) -> dict[str, str]:
    """sha256 of every corpus file the heads were fitted or scored on (SOS-4K's validation is its own file)."""
    from ..data.sources import SOURCES, TASK_SOURCES, data_root, source_files
    from . import file_sha256

    base = data_root(root)
    return {str(p.relative_to(base)): file_sha256(p) for task in recipe.tasks
            for split in ("train", "val") if split in SOURCES[TASK_SOURCES[task]].files
            for p in source_files(TASK_SOURCES[task], split, root)}


def train_heads(recipe: Recipe, out: Path, threads: int | None = None, root=None, command: str = "") -> Path:
    """The whole build: states (resumable), heads, ``out/model`` with its manifest, ``out/report.json``."""
    started = time.time()
    cache = read_states(recipe, out, threads, root)
    heads, reports = {}, {}
    for task in recipe.tasks:
        heads[task], reports[task] = fit_task(recipe, cache, task, root)
    from ..llm.catalog import REGISTRY

    base = REGISTRY[recipe.base]
    manifest = {
        "name": recipe.name, "format": "mentalglm-heads/1",
        "base": {"name": base.name, "sha256": base.packaged.sha256, "size": base.packaged.size},
        "prompt": {"style": "heads", "system": SYSTEM_HEADS_ZH, "post_chars": POST_CHARS,
                   "fingerprint": prompt_fingerprint()},
        "recipe": {k: v for k, v in recipe.__dict__.items()},
        "training_data": training_data_hashes(recipe, root),
        "validation": {t: heads[t].info["validation"] for t in heads},
        "command": command or f"mentalglm heads train --out {out}",
        "built": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - started, 1),
    }
    folder = write_heads_folder(out / "model", heads, manifest)
    for task, report in reports.items():
        predictions = out / "validation" / f"{task}.jsonl"
        predictions.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.pop("predictions")),
                               encoding="utf-8")
    (out / "report.json").write_text(json.dumps(reports, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder
