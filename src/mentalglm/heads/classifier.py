"""The classifier of a heads folder: a LoRA adapter trained to label (``train/classifier.py``), whose state of each
post the heads read (pool "post") instead of a frozen model's state at the end of every task's prompt.

A heads folder may hold ``classifier/``: ``adapter.gguf`` (for llama.cpp) and ``classifier.json`` (the base model by
registry name and sha256, the training recipe, how many posts it learned from), both listed in the folder's
manifest. One read of the post by the adapted small model serves every task; the folder's base model (the
manifest's ``base``) still writes the explanations, and never sees the adapter.

A classifier run's recipe, its split of the training posts and its trained heads live here too: what building heads
on it needs (``heads train --classifier RUN``), without the training code (torch; ``train/classifier.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.records import Example
from ..data.sources import task_splits
from ..data.splits import stratified_sample
from .explainer import AdapterSpec, _check_base, read_spec
from .features import POST_TOKENS
from .manifest import list_files

FOLDER = "classifier"
SPEC = "classifier.json"
ADAPTER = "adapter.gguf"


class ClassifierSpec(AdapterSpec):
    """The folder's ``classifier/``: its adapter and ``classifier.json``."""


def read_classifier(heads_folder: Path) -> ClassifierSpec | None:
    """The folder's classifier, or None where it has none."""
    return read_spec(ClassifierSpec, heads_folder, FOLDER, SPEC)


def open_classifier(spec: ClassifierSpec, parallel: int = 1):
    """The classifier's llama.cpp backend (its base with the adapter), opened once per process and setting."""
    from ..llm.registry import open_shared

    return open_shared(spec.base, lambda backend: _check_base(spec, backend), adapter=str(spec.adapter),
                       parallel=parallel, n_ctx=512)


def install_classifier(adapter: Path, heads_folder: Path, base: str, info: dict) -> ClassifierSpec:
    """Copy a GGUF classifier adapter into a heads folder with its ``classifier.json`` (``info`` plus the base's
    name and sha256; ``base``: a registry name or a GGUF file) and list both in the folder's manifest."""
    import shutil

    from ..llm.catalog import REGISTRY, model_sha256

    folder = Path(heads_folder) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(adapter, folder / ADAPTER)
    sha = REGISTRY[base].packaged.sha256 if base in REGISTRY else model_sha256(Path(base))  # or a GGUF file
    (folder / SPEC).write_text(json.dumps({"base": {"name": base, "sha256": sha}, **info}, indent=1,
                                          ensure_ascii=False) + "\n", encoding="utf-8")
    list_files(Path(heads_folder), [f"{FOLDER}/{name}" for name in (ADAPTER, SPEC)], replace_prefix=f"{FOLDER}/")
    return read_classifier(heads_folder)


# ---------------------------------------------------------------- the run a classifier comes from
@dataclass(frozen=True)
class ClassifierRecipe:
    base: str = "qwen2.5-coder-0.5b-instruct-q4"
    tasks: tuple[str, ...] = ("suicide_risk", "cognitive_distortion", "suicide_risk_levels", "emotion")
    # Training posts per task (None: the whole training split; a number: a stratified sample; a dict: per source).
    # Emotion: every ordinary post (what users send) and a sample of epidemic ones; an epoch stays under an hour.
    posts: dict = field(default_factory=lambda: {
        "emotion": {"smp2020_ewect/usual_eval": None, "smp2020_ewect/virus_train": 1400}})
    holdout: float = 0.2  # of each task's training posts, kept from the LoRA for the stacker and thresholds
    max_tokens: int = POST_TOKENS  # what analyze reads of a post (features.py); longer posts keep their first tokens
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 3e-4
    # The base's final states have norms near 200 (some coordinates near 100): an Adam step of 2e-3 on the head moved
    # the logits by several units a step and the loss sat above chance (measured); the head starts at zero instead.
    head_lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 16
    warmup: int = 30
    # The 0-10 scale is trained toward a Gaussian around the gold level (sd in levels), not a single class.
    level_sd: float = 0.8
    seed: int = 13
    save_every: int = 100
    # A finished classifier run whose adapter and heads this one starts from (more epochs on the same split, with a
    # schedule of their own); None: the base with a new adapter.
    init: str | None = None
    # A second pass over the same posts from the first pass's weights, in RUN/second, with these settings (a fresh
    # optimiser, warm-up and cosine decay at half the rates); None: one pass. What it bought: docs/model-card.md.
    second: dict | None = field(default_factory=lambda: {"lr": 1.5e-4, "head_lr": 5e-5, "warmup": 10})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Named recipes (``heads train --classifier-recipe``): a new run folder starts with one of them, a started run keeps
# its own ``recipe.json``. "1.5b": the 1.5B with LoRA on its attention projections alone, an 8.7 MB GGUF that the
# package's 50 MB hold beside the explainer (every linear layer: 37 MB); a pass over every task is 90-120 minutes
# here, so it checkpoints more often, and it makes one pass (two would not fit a two-hour step; emotion alone after
# one pass was level with the frozen 1.5B's prompt state: docs/model-card.md, "a 1.5B classifier").
RECIPES = {
    "0.5b": ClassifierRecipe(),
    "1.5b": ClassifierRecipe(base="qwen2.5-coder-1.5b-instruct-q4", targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                             save_every=50, second=None),
}


def split_training(recipe: ClassifierRecipe, task: str, root=None) -> tuple[list[Example], list[Example]]:
    """The task's training posts cut into (LoRA part, held-out part), stratified by label, fixed by the seed."""
    examples = task_splits(task, root)["train"]
    wanted = recipe.posts.get(task)
    if isinstance(wanted, dict):
        examples = [e for source, k in wanted.items()
                    for e in _sample([x for x in examples if x.source == source], k, recipe.seed)]
    else:
        examples = _sample(examples, wanted, recipe.seed)
    held = stratified_sample(examples, round(len(examples) * recipe.holdout), seed=recipe.seed + 1)
    held_ids = {e.id for e in held}
    return [e for e in examples if e.id not in held_ids], held


def _sample(examples, n, seed):
    return list(examples) if n is None else stratified_sample(examples, n, seed=seed)


def load_recipe(run: Path) -> ClassifierRecipe:
    """The recipe a classifier run was made with (its ``recipe.json``)."""
    path = Path(run) / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a classifier run (no recipe.json); train one with "
                                "`mentalglm heads train --classifier RUN`")
    saved = json.loads(path.read_text())
    return ClassifierRecipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def second_pass(recipe: ClassifierRecipe, run: Path) -> ClassifierRecipe:
    """The recipe of ``run``'s second pass (in ``run/second``), started from its first pass's weights."""
    return replace(recipe, init=str(run), second=None, **recipe.second)


def last_pass(run: Path) -> Path:
    """The folder of a run's last pass: ``run``, or ``run/second`` where its recipe has a second pass."""
    return Path(run) / "second" if load_recipe(run).second else Path(run)


def held_out(run: Path, task: str, root=None) -> list[Example]:
    """The training posts of ``task`` that the run's LoRA never saw."""
    return split_training(load_recipe(run), task, root)[1]


def adapter_file(run: Path) -> Path:
    """Where a classifier run's GGUF adapter is (``train.classifier.export_classifier`` writes it)."""
    return last_pass(run) / "export" / "adapter.gguf"


def head_weights(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each task's trained head: (weight (labels, hidden), bias (labels,))."""
    from safetensors.numpy import load_file

    weights = load_file(str(last_pass(run) / "final" / "heads.safetensors"))
    tasks = {k.split(".")[0] for k in weights}
    return {t: (weights[f"{t}.weight"].astype(np.float64), weights[f"{t}.bias"].astype(np.float64)) for t in tasks}


def describe_run(run: Path) -> dict:
    """What a heads folder records of the classifier it reads: recipe, posts per task, the reproduction."""
    run = Path(run)
    passes = [run] + ([run / "second"] if load_recipe(run).second else [])

    def steps(folder: Path) -> int:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return len({json.loads(line)["step"] for line in lines if line.strip()})

    return {"recipe": load_recipe(run).to_dict(), "posts": json.loads((run / "data.json").read_text()),
            "steps": [steps(p) for p in passes], "run": str(run),
            "trained_by": "mentalglm heads train --classifier RUN (train/classifier.py; resumable)"}
