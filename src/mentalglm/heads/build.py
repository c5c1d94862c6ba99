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

from ..evaluate.classification import expected_calibration_error, score
from ..prompts import SYSTEM_HEADS_ZH
from .model import StateScorer, TaskHead, to_probabilities
from .features import POST_CHARS, POST_TOKENS, StateCache, extract_states, head_text
from .recipe import Recipe
from .screen import fit_screens, write_screen
from .unsure import fit_thresholds, write_thresholds


def prompt_fingerprint() -> str:
    """Changes whenever the heads prompt changes, which makes cached states stale."""
    return hashlib.sha256(f"{SYSTEM_HEADS_ZH}|{POST_CHARS}".encode()).hexdigest()[:16]


# Where a run keeps the states of each model its heads read (``Recipe.reader``): the frozen base's, the classifier's.
STATE_FOLDERS = {"base": "states", "classifier": "classifier-states"}


def head_reader(head: TaskHead) -> str:
    """The model a head reads its state from: the classifier (pool "post") or the base."""
    return "classifier" if head.pool == "post" else "base"


def open_model(recipe: Recipe, reader: str = "base", threads: int | None = None):
    """The model whose states ``reader`` names for the recipe: the base (cut after ``layers``), or the classifier."""
    from ..llm.catalog import REGISTRY, assemble_packaged
    from ..llm.llamacpp import LlamaCppBackend
    from ..llm.truncate import shallow_copy

    if reader == "classifier":
        from .classifier import adapter_file, load_recipe

        return _open_classifier(load_recipe(recipe.classifier).base, adapter_file(recipe.classifier), threads)
    entry = REGISTRY[recipe.base]
    path = shallow_copy(assemble_packaged(entry), recipe.layers)
    return LlamaCppBackend(path, name=entry.name, n_ctx=2048, n_threads=threads)


def state_settings(recipe: Recipe, reader: str = "base") -> dict:
    """What a state cache is made with: states read with other settings are refused (``StateCache``)."""
    from ..llm.catalog import REGISTRY

    if reader == "classifier":
        from .classifier import adapter_file, load_recipe

        return _classifier_settings(load_recipe(recipe.classifier).base, adapter_file(recipe.classifier))
    entry = REGISTRY[recipe.base]
    return {"base": entry.name, "base_sha256": entry.packaged.sha256, "prompt": prompt_fingerprint(),
            **({"layers": recipe.layers} if recipe.layers else {})}


def reader_settings(headset, reader: str = "base") -> dict:
    """The settings of the states a heads folder reads from ``reader`` (those its build's cache holds)."""
    if reader == "base":
        return state_settings(Recipe(base=headset.manifest["base"]["name"], layers=headset.layers))
    return _classifier_settings(headset.classifier.base, headset.classifier.adapter)


def open_reader(headset, reader: str = "base", threads: int | None = None):
    """The model a heads folder reads states from: its base (cut after its block), or its classifier."""
    if reader == "base":
        return open_model(Recipe(base=headset.manifest["base"]["name"], layers=headset.layers), threads=threads)
    return _open_classifier(headset.classifier.base, headset.classifier.adapter, threads)


def _classifier_settings(base: str, adapter: Path) -> dict:
    from ..files import file_sha256
    from ..llm.catalog import REGISTRY

    return {"base": base, "base_sha256": REGISTRY[base].packaged.sha256, "post_tokens": POST_TOKENS,
            "adapter_sha256": file_sha256(adapter)}


def _open_classifier(base: str, adapter: Path, threads: int | None):
    """The classifier's packaged base with its GGUF adapter (contexts of 512: it reads posts alone)."""
    from ..llm.catalog import REGISTRY, assemble_packaged
    from ..llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend(assemble_packaged(REGISTRY[base]), name=base, n_ctx=512, n_threads=threads,
                           lora_path=str(adapter))


def read_states(recipe: Recipe, out: Path, threads: int | None = None, root=None, kept=()) -> dict[str, StateCache]:
    """Step 1: every hidden state the recipe needs, cached under ``out/states`` (and ``out/classifier-states`` for
    the tasks that read a classifier); of a ``kept`` task, whose head is taken from an earlier build, only the
    validation states that score it. Returns each reader's cache."""
    caches = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    started = time.time()
    for reader in dict.fromkeys(recipe.reader(t) for t in recipe.tasks):
        backend = open_model(recipe, reader, threads)
        caches[reader] = cache = StateCache(out / STATE_FOLDERS[reader], state_settings(recipe, reader))
        jobs = []
        for task in (t for t in recipe.tasks if recipe.reader(t) == reader):
            jobs += [(task, "validation", recipe.validation_examples(task, root))]
            if task not in kept:
                jobs += [(task, "train", recipe.state_examples(task, root))]
        with Progress(*columns) as bar:
            for task, split, examples in jobs:
                job = bar.add_task(f"hidden states {task}/{split}", total=len(examples))
                extract_states(backend, cache, task, split, examples, pool=recipe.pool(task),
                               progress=lambda done, total, job=job: bar.update(job, completed=done))
        backend.close()
    log = out / "states" / "timing.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": "states", "seconds": round(time.time() - started, 1),
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return caches


def fit_task(recipe: Recipe, cache: StateCache, task: str, root=None, keep=None) -> tuple[TaskHead, dict]:
    """Step 2 for one task: the head, and its scores on the validation sample beside each part alone.
    ``keep(example)`` narrows the training posts (the ablations of benchmarks/heads_ablation.py)."""
    from ..data.sources import task_splits
    from ..tasks import get_task
    from .fit import fit_head, label_matrix

    train = [e for e in task_splits(task, root)["train"] if keep is None or keep(e)]
    state_posts = [e for e in recipe.state_examples(task, root) if keep is None or keep(e)]
    have = _states(cache, task, "train", recipe.pool(task), state_posts)
    if recipe.reader(task) == "classifier":  # the state part learns from the trained head's scores (a few per post)
        from .classifier import head_weights

        weight, bias = head_weights(recipe.classifier)[task]
        have = have @ weight.T + bias
    fitted = fit_head(task, [head_text(e.text) for e in train], [e.labels for e in train],
                      [head_text(e.text) for e in state_posts], have, [e.labels for e in state_posts],
                      folds=recipe.folds, seed=recipe.seed, ngram_C_grid=recipe.ngram_C_grid,
                      C_grid=recipe.classifier_C_grid if recipe.reader(task) == "classifier" else
                      recipe.ordinal_C_grid if task in recipe.ordinal else recipe.C_grid,
                      risk_recall=recipe.risk_recall, balanced=task in recipe.balanced,
                      decision_metric=recipe.decision_metric.get(task),
                      state_model="ordinal" if task in recipe.ordinal else "logistic")
    fitted.head.pool = recipe.pool(task)
    if recipe.reader(task) == "classifier":
        fitted.head.state = _through(fitted.head.state, weight, bias)
    gold_s = [e.labels for e in state_posts]
    oof = {"ece_out_of_fold": expected_calibration_error(fitted.oof, label_matrix(get_task(task), gold_s),
                                                         fitted.head.multi_label),
           # the whole head's out-of-fold answers on its training posts: what choices between recipes rest on
           "scores_out_of_fold": score(get_task(task), gold_s, [tuple(fitted.head.decide(p)) for p in fitted.oof])}
    return fitted.head, validate_head(recipe, cache, fitted.head, root, {
        "state_posts": len(state_posts), "train_posts": len(train), **oof})


def _through(part: StateScorer, weight: np.ndarray, bias: np.ndarray) -> StateScorer:
    """``part``, fitted on the scores ``weight @ state + bias``, as one linear model of the state itself (the shipped
    format: the trained head is folded in, nothing new to load)."""
    coef = part.coef / part.scale
    return StateScorer(np.zeros(weight.shape[1]), np.ones(weight.shape[1]), coef @ weight,
                       coef @ (bias - part.mean) + part.intercept)


def _states(cache: StateCache, task: str, split: str, pool: str, examples) -> np.ndarray:
    have = cache.load(task, split, pool)
    missing = [e.id for e in examples if e.id not in have]
    if missing:
        raise RuntimeError(f"{task}: {len(missing)} hidden states ({split}) are missing from {cache.folder}; "
                           "run the states step first")
    return np.stack([have[e.id] for e in examples])


def validate_head(recipe: Recipe, cache: StateCache, head: TaskHead, root=None, facts: dict | None = None) -> dict:
    """A head's scores on the recipe's validation sample, beside each of its parts alone, its calibration and risk
    operating point there, and its answers (``predictions``); it is stored in ``head.info["validation"]``."""
    from ..evaluate.classification import bootstrap_intervals
    from ..tasks import get_task
    from .fit import label_matrix

    task, spec = head.task, get_task(head.task)
    val = recipe.validation_examples(task, root)
    gold = [e.labels for e in val]
    y_val = label_matrix(spec, gold)
    ngram_scores = np.stack([head.ngram.scores(head_text(e.text)) for e in val])
    state_scores = np.stack([head.state.scores(x) for x in _states(cache, task, "validation", head.pool, val)])
    probs = head.probabilities_from_scores(ngram_scores, state_scores)
    # Each part alone beside the head, for the record of what the stacking buys.
    parts = {"ngram": to_probabilities(ngram_scores, spec.multi_label),
             "state": to_probabilities(state_scores, spec.multi_label)}
    decided = {"stack": [tuple(head.decide(p)) for p in probs],
               **{name: [tuple(_part_decision(head, p)) for p in ps] for name, ps in parts.items()}}
    report = {"validation_posts": len(val), **(facts or {}),
              "scores": {name: score(spec, gold, pred) for name, pred in decided.items()},
              "intervals": {k: list(v) for k, v in bootstrap_intervals(spec, gold, decided["stack"]).items()},
              "ece_validation": expected_calibration_error(probs, y_val, spec.multi_label)}
    flagged = np.array([head.flagged(p) for p in probs])
    if head.high_labels:
        is_high = y_val[:, [head.labels.index(h) for h in head.high_labels]].sum(1) > 0
        tp = int((flagged & is_high).sum())
        report["risk_operating_point"] = {
            "threshold": head.risk_threshold, "recall": tp / max(1, is_high.sum()),
            "precision": tp / max(1, flagged.sum()), "flagged": int(flagged.sum()), "high_posts": int(is_high.sum())}
    head.info["validation"] = dict(report)
    # The validation answers as a predictions file (the format of `mentalglm eval predict`), to score and compare.
    report["predictions"] = [
        {"id": e.id, "task": task, "labels": list(lab), "parse_status": "ok", "model": recipe.name,
         "scores": {n: round(float(x), 4) for n, x in zip(head.labels, p)},
         "high_risk": bool(flag)}
        for e, lab, p, flag in zip(val, decided["stack"], probs, flagged)]
    return report


def _part_decision(head: TaskHead, p: np.ndarray) -> list[str]:
    """A part alone: its most probable label, or (multi-label) every label at 0.5 or more, at least one."""
    chosen = [lab for lab, x in zip(head.labels, p) if x >= 0.5] if head.multi_label else []
    return chosen or [head.labels[int(np.argmax(p))]]


def keep_head(recipe: Recipe, cache: StateCache, task: str, root, folder: Path) -> tuple[TaskHead, dict]:
    """Step 2 for a task whose head is taken as it is from an earlier heads folder: scored again on this validation
    sample; ``info["kept_from"]`` names the build (date, command, files' sha256) it comes from."""
    head = TaskHead.load(folder, task)
    if head.pool != recipe.pool(task):
        raise ValueError(f"--keep {task}={folder}: that head reads pool {head.pool!r}, this recipe "
                         f"{recipe.pool(task)!r} (a kept head must read the states the recipe reads for it)")
    earlier = head.info.get("validation", {})
    report = validate_head(recipe, cache, head, root, {
        k: earlier[k] for k in ("state_posts", "train_posts", "ece_out_of_fold", "scores_out_of_fold") if k in earlier})
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    head.info["kept_from"] = {k: manifest.get(k) for k in ("name", "built", "command")} | {
        "files": {name: sha for name, sha in manifest.get("files", {}).items() if name.startswith(f"{task}.")}}
    return head, report


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


def fit_heads(recipe: Recipe, caches: dict[str, StateCache], root=None, kept: dict | None = None):
    """Step 2 for every task, each from the cache of the model it reads (``Recipe.reader``): heads and reports."""
    heads, reports = {}, {}
    for task in recipe.tasks:
        cache = caches[recipe.reader(task)]
        heads[task], reports[task] = keep_head(recipe, cache, task, root, Path(kept[task])) if task in (kept or {}) \
            else fit_task(recipe, cache, task, root)
    return heads, reports


def train_heads(recipe: Recipe, out: Path, threads: int | None = None, root=None, command: str = "",
                kept: dict[str, Path] | None = None) -> Path:
    """The whole build: states (resumable), heads, ``out/model`` with its manifest, ``out/report.json``.

    ``kept`` maps tasks to earlier heads folders whose head is taken as it is instead of refitted (what a long
    build can skip when a task's recipe and data have not changed): it is scored again on this validation sample,
    and its manifest entry says where it came from."""
    started = time.time()
    kept = kept or {}
    caches = read_states(recipe, out, threads, root, kept)
    heads, reports = fit_heads(recipe, caches, root, kept)
    from ..llm.catalog import REGISTRY

    base = REGISTRY[recipe.base]
    manifest = {
        "name": recipe.name, "format": "mentalglm-heads/1",
        "base": {"name": base.name, "sha256": base.packaged.sha256, "size": base.packaged.size,
                 **({"layers": recipe.layers} if recipe.layers else {})},
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
    predictions = {task: report.pop("predictions") for task, report in reports.items()}
    for task, rows in predictions.items():
        path = out / "validation" / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # Where a decision is too close to call, rows name the runner-up: the threshold is chosen on these predictions.
    gold = {task: {e.id: e.labels for e in recipe.validation_examples(task, root)} for task in predictions}
    write_thresholds(folder, fit_thresholds(heads, predictions, gold, source=str(out / "validation"),
                                            command=manifest["command"]))
    write_screen(folder, fit_screens(heads, root))  # the screen's calibration follows the heads' n-gram parts
    if "classifier" in caches:
        from .classifier import adapter_file, describe_run, install_classifier, load_recipe

        install_classifier(adapter_file(recipe.classifier), folder, load_recipe(recipe.classifier).base,
                           describe_run(recipe.classifier))
    (out / "report.json").write_text(json.dumps(reports, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder
