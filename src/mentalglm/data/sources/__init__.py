"""One loader per raw format, and a registry of the known corpora and where their files sit.

``load_source("socialcd3k")`` reads the files under the data root (``--data-root``, the
``MENTALGLM_DATA`` environment variable, or ``../shared/data`` next to the project).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..records import DataError, Example
from .chinese import load_smp2020, load_socialcd3k, load_sos4k, load_sos_hl_1k
from .english import load_imhi
from .pathway import load_pathway_sentences, load_pathway_spans


@dataclass(frozen=True)
class Source:
    name: str
    task: str | None  # None: several tasks (English IMHI)
    files: dict[str, str]  # split -> path relative to the data root (globs allowed)
    loader: Callable[..., list[Example]]
    origin: str
    # The publishers' test files (same format as the training file), read only for ``--split test`` and never
    # by ``load_source(name)`` without splits: a user who has them must not train on them by accident.
    test: tuple[str, ...] = ()
    # Other labelled files of ``files`` that join the training file in ``task_splits``, each carved into train and
    # validation on its own (SMP2020's ordinary-post file: the domain users send, beside the epidemic one).
    also_train: tuple[str, ...] = ()


SOURCES = {s.name: s for s in [
    Source("socialcd3k", "cognitive_distortion", {"train": "socialcd3k/train.tsv"}, load_socialcd3k,
           "github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval data/SocialCD-3k", test=("socialcd3k/test.tsv",)),
    Source("sos_hl_1k", "suicide_risk", {"train": "sos_hl_1k/train.tsv"}, load_sos_hl_1k,
           "github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval data/suicide", test=("sos_hl_1k/test.tsv",)),
    Source("sos4k", "suicide_risk_levels", {"train": "sos4k/train.tsv", "val": "sos4k/val.tsv"}, load_sos4k,
           "github.com/HongzhiQ/RSLF-Framework-and-SOS4K-Dataset data_final", test=("sos4k/test.tsv",)),
    Source("smp2020_ewect", "emotion", {"train": "smp2020_ewect/virus_train.json",
                                        "eval": "smp2020_ewect/virus_eval.json",
                                        "usual_eval": "smp2020_ewect/usual_eval.json"}, load_smp2020,
           "github.com/BrownSweater/BERT_SMP2020-EWECT data/raw",
           test=("smp2020_ewect/usual_test.json", "smp2020_ewect/virus_test.json"), also_train=("usual_eval",)),
    Source("imhi", None, {"train": "imhi/train/*/train.csv", "val": "imhi/train/*/val.csv",
                          "test": "imhi/test/*.csv", "expert": "imhi/expert/*.csv"}, load_imhi,
           "github.com/SteveKGYang/MentalLLaMA"),
]}

# The Chinese training file of each C-IMHI task (the official test splits are held back).
TASK_SOURCES = {"cognitive_distortion": "socialcd3k", "suicide_risk": "sos_hl_1k",
                "suicide_risk_levels": "sos4k", "emotion": "smp2020_ewect"}

FORMAT_LOADERS = {
    "socialcd3k": load_socialcd3k, "sos_hl_1k": load_sos_hl_1k, "sos4k": load_sos4k, "smp2020": load_smp2020,
    "imhi": load_imhi, "pathway_spans": load_pathway_spans, "pathway_sentences": load_pathway_sentences,
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root)
    if os.environ.get("MENTALGLM_DATA"):
        return Path(os.environ["MENTALGLM_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents:  # a source checkout: <repo>/../shared/data
        candidate = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and candidate.exists():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def source_files(name: str, split: str, root=None) -> list[Path]:
    src = SOURCES[name]
    if split == "test" and src.test:
        return [_test_file(src, relative, root) for relative in src.test]
    pattern = src.files[split]
    files = sorted(data_root(root).glob(pattern))
    if not files:
        raise DataError(data_root(root) / pattern, None,
                        f"no file for source {name!r} split {split!r}; get it from {src.origin} "
                        "and point --data-root (or MENTALGLM_DATA) at the folder that holds it")
    return files


def _test_file(src: Source, relative: str, root) -> Path:
    path = data_root(root) / relative
    if not path.exists():
        raise DataError(path, None, f"no test file for source {src.name!r}: the publishers' test split is not "
                        f"here. Get it from {src.origin} (see docs/data.md), put it beside the training file in "
                        "the same format, or score on --split validation")
    return path


def load_source(name: str, splits: list[str] | None = None, root=None) -> list[Example]:
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    out: list[Example] = []
    for split in splits or list(src.files):  # without splits: never the held-out test files
        for path in source_files(name, split, root):
            out.extend(src.loader(path, split=split))
    return out


def load_task(task: str, splits: list[str] | None = None, root=None) -> list[Example]:
    """The Chinese training corpus of a C-IMHI task."""
    if task not in TASK_SOURCES:
        raise KeyError(f"no built-in source for task {task!r}; sources exist for {', '.join(TASK_SOURCES)}")
    return load_source(TASK_SOURCES[task], splits, root)


__all__ = ["Source", "SOURCES", "TASK_SOURCES", "FORMAT_LOADERS", "SPLITS", "load_source", "load_task", "data_root",
           "source_files", "task_splits", "training_posts", "DataError", "Example"]


VALIDATION_SEED = 13
VALIDATION_FRACTION = 0.2
SPLITS = ("train", "validation", "test")  # what --split accepts


def task_splits(task: str, root=None, test: bool = False) -> dict[str, list[Example]]:
    """``train`` and ``validation`` of a C-IMHI task: the source's own validation file where it has
    one (SOS-4K ``val.tsv``), else a stratified 20% carved from the training file with seed 13 (and from each of
    the source's ``also_train`` files, on its own: the training file's carve does not move when one is added).

    ``test=True`` adds ``test``, the publishers' test files (a DataError naming the file when one is
    absent), and removes from train and validation every post whose normalised text is also a test
    post: a model scored on the test split has then never been fitted, tuned or selected on one of its
    posts, even where the released files overlap."""
    from ..splits import normalize_text, stratified_split

    src = SOURCES[TASK_SOURCES[task]]
    held = load_source(src.name, ["test"], root) if test else []
    if "val" in src.files:
        splits = {"train": load_source(src.name, ["train", *src.also_train], root),
                  "validation": load_source(src.name, ["val"], root)}
    else:
        splits = {"train": [], "validation": []}
        for part in ("train", *src.also_train):
            rest, val = stratified_split(load_source(src.name, [part], root), VALIDATION_FRACTION,
                                         seed=VALIDATION_SEED, name="validation")
            splits["train"] += rest
            splits["validation"] += val
    if test:
        # Dropped after the validation carve, so the validation split stays the same posts with or without test files.
        seen = {normalize_text(e.text) for e in held}
        splits = {k: [e for e in v if normalize_text(e.text) not in seen] for k, v in splits.items()}
        splits["test"] = held
    return splits


def training_posts(task: str, scored_split: str, root=None) -> list[Example]:
    """The posts a model may be fitted on (baselines, few-shot examples) when it is scored on ``scored_split``:
    the train split, without any post of the test files when the test split is what is scored."""
    return task_splits(task, root, test=scored_split == "test")["train"]
