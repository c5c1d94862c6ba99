"""Label heads: closed-set label probabilities from a frozen GGUF model's hidden state and the post's characters.

A heads folder holds ``manifest.json`` (base model and its sha256, tasks, prompt, training data
hashes, recipe, validation scores, and the sha256 of every file) and per task ``<task>.npz`` +
``<task>.json`` (see ``model.py``). ``mentalglm-mini`` is such a folder shipped inside the package;
``mentalglm heads train`` makes new ones. An optional ``unsure.json`` (listed in the manifest; written by
``benchmarks/unsure_threshold.py``) holds each task's unsure threshold (``unsure.py``); an optional ``explainer/``
the trained explainer (``explainer.py``); an optional ``screen.json`` the screen (``screen.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..files import file_sha256
from ..llm.catalog import model_sha256
from .classifier import ClassifierSpec, read_classifier
from .explainer import ExplainerSpec, read_explainer
from .model import TaskHead
from .screen import TaskScreen, read_screen
from .unsure import default_threshold, read_thresholds

PACKAGED = "mentalglm-mini"


class HeadsError(RuntimeError):
    """A heads folder that cannot be used (missing, altered, or made for another base model)."""


def packaged_dir(name: str = PACKAGED) -> Path:
    return Path(str(resources.files("mentalglm").joinpath(f"resources/{name}")))


@dataclass
class HeadSet:
    folder: Path
    manifest: dict
    heads: dict[str, TaskHead]
    unsure: dict[str, float] = field(default_factory=dict)  # task -> unsure threshold (unsure.json)
    explainer: ExplainerSpec | None = None  # explainer/ (explainer.py)
    screens: dict[str, TaskScreen] = field(default_factory=dict)  # task -> screen.json's (screen.py)
    classifier: ClassifierSpec | None = None  # classifier/ (classifier.py): the model whose post states heads read

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def layers(self) -> int | None:
        """The base's blocks whose output the heads read (None: all; recipe.py)."""
        return self.manifest["base"].get("layers")

    def post_model(self, backend):
        """The folder's classifier (``classifier.py``), which heads with pool "post" read, opened once per process as
        ``backend`` decodes; None where the folder has none."""
        if self.classifier is None:
            return None
        from .classifier import open_classifier

        return open_classifier(self.classifier, parallel=backend.batch_size)

    def state_model(self, backend):
        """The model the other heads read states from: ``backend`` itself, or, for heads that read a middle block, the
        copy of its file cut after that block (``llm/truncate.py``), opened once per process as ``backend`` decodes."""
        if not self.layers:
            return backend
        from ..llm.registry import open_shared
        from ..llm.truncate import shallow_copy

        # check_base has verified the base's sha256 against the manifest's: the copy is named by it
        copy = shallow_copy(backend.path, self.layers, self.manifest["base"]["sha256"])
        return open_shared(str(copy), parallel=backend.batch_size, n_ctx=backend.context_length)

    def head(self, task: str) -> TaskHead:
        if task not in self.heads:
            raise HeadsError(f"{self.name} has no head for task {task!r}; it has: {', '.join(self.heads)}")
        return self.heads[task]

    def unsure_threshold(self, task: str) -> float:
        """The confidence under which a row of ``task`` is unsure (``unsure.py``): the folder's, else the default."""
        if task in self.unsure:
            return self.unsure[task]
        return default_threshold(self.head(task).multi_label)

    def check_base(self, model_path: str | Path) -> None:
        """Refuse a base model other than the one the heads were trained on: their weights read its hidden
        states, and another model's states are noise to them."""
        want = self.manifest["base"]["sha256"]
        path = Path(model_path)
        have = model_sha256(path)
        if have != want:
            raise HeadsError(f"{self.name} was trained on {self.manifest['base']['name']} (sha256 {want[:12]}…); "
                             f"{path.name} has sha256 {have[:12]}…. Use --model {self.manifest['base']['name']}, "
                             "or heads trained on this model")


def load_heads(folder: str | Path | None = None) -> HeadSet:
    """A heads folder (default: the packaged mentalglm-mini), with every file checked against its manifest."""
    folder = Path(folder) if folder else packaged_dir()
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise HeadsError(f"{folder} is not a heads folder (no manifest.json); make one with `mentalglm heads train`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, sha in manifest["files"].items():
        path = folder / name
        if not path.exists():
            raise HeadsError(f"{folder}: {name} listed in manifest.json is missing")
        if file_sha256(path) != sha:
            raise HeadsError(f"{folder}: {name} does not match its sha256 in manifest.json (altered or corrupt)")
    return HeadSet(folder, manifest, {t: TaskHead.load(folder, t) for t in manifest["tasks"]},
                   read_thresholds(folder, manifest), read_explainer(folder), read_screen(folder),
                   read_classifier(folder))


__all__ = ["HeadSet", "HeadsError", "TaskHead", "load_heads", "packaged_dir", "PACKAGED"]
