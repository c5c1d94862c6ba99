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


SOURCES = {s.name: s for s in [
    Source("socialcd3k", "cognitive_distortion", {"train": "socialcd3k/train.tsv"}, load_socialcd3k,
           "github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval data/SocialCD-3k"),
    Source("sos_hl_1k", "suicide_risk", {"train": "sos_hl_1k/train.tsv"}, load_sos_hl_1k,
           "github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval data/suicide"),
    Source("sos4k", "suicide_risk_levels", {"train": "sos4k/train.tsv", "val": "sos4k/val.tsv"}, load_sos4k,
           "github.com/HongzhiQ/RSLF-Framework-and-SOS4K-Dataset data_final"),
    Source("smp2020_ewect", "emotion", {"train": "smp2020_ewect/virus_train.json",
                                        "eval": "smp2020_ewect/virus_eval.json",
                                        "usual_eval": "smp2020_ewect/usual_eval.json"}, load_smp2020,
           "github.com/BrownSweater/BERT_SMP2020-EWECT data/raw"),
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
    pattern = src.files[split]
    files = sorted(data_root(root).glob(pattern))
    if not files:
        raise DataError(data_root(root) / pattern, None,
                        f"no file for source {name!r} split {split!r}; get it from {src.origin} "
                        "and point --data-root (or MENTALGLM_DATA) at the folder that holds it")
    return files


def load_source(name: str, splits: list[str] | None = None, root=None) -> list[Example]:
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    out: list[Example] = []
    for split in splits or list(src.files):
        for path in source_files(name, split, root):
            out.extend(src.loader(path, split=split))
    return out


def load_task(task: str, splits: list[str] | None = None, root=None) -> list[Example]:
    """The Chinese training corpus of a C-IMHI task."""
    if task not in TASK_SOURCES:
        raise KeyError(f"no built-in source for task {task!r}; sources exist for {', '.join(TASK_SOURCES)}")
    return load_source(TASK_SOURCES[task], splits, root)


__all__ = ["Source", "SOURCES", "TASK_SOURCES", "FORMAT_LOADERS", "load_source", "load_task", "data_root",
           "source_files", "task_splits", "DataError", "Example"]


VALIDATION_SEED = 13
VALIDATION_FRACTION = 0.2


def task_splits(task: str, root=None) -> dict[str, list[Example]]:
    """``train`` and ``validation`` of a C-IMHI task: the source's own validation file where it has
    one (SOS-4K ``val.tsv``), else a stratified 20% carved from the training file with seed 13.
    Official test splits are held back by the publishers and are not used here."""
    from ..splits import stratified_split

    src = SOURCES[TASK_SOURCES[task]]
    train = load_source(src.name, ["train"], root)
    if "val" in src.files:
        return {"train": train, "validation": [e for e in load_source(src.name, ["val"], root)]}
    rest, val = stratified_split(train, VALIDATION_FRACTION, seed=VALIDATION_SEED, name="validation")
    return {"train": rest, "validation": val}
