"""The classifier of a heads folder: a LoRA adapter trained to label (``train/classifier.py``), whose state of each
post the heads read (pool "post") instead of a frozen model's state at the end of every task's prompt.

A heads folder may hold ``classifier/``: ``adapter.gguf`` (for llama.cpp) and ``classifier.json`` (the base model by
registry name and sha256, the training recipe, how many posts it learned from), both listed in the folder's
manifest. One read of the post by the adapted small model serves every task; the folder's base model (the
manifest's ``base``) still writes the explanations, and never sees the adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .explainer import _check_base
from .manifest import list_files

FOLDER = "classifier"
SPEC = "classifier.json"
ADAPTER = "adapter.gguf"


@dataclass(frozen=True)
class ClassifierSpec:
    folder: Path
    base: str  # registry name of the model the adapter was trained on
    base_sha256: str
    info: dict  # the whole classifier.json

    @property
    def adapter(self) -> Path:
        return self.folder / ADAPTER


def read_classifier(heads_folder: Path) -> ClassifierSpec | None:
    """The folder's classifier, or None where it has none."""
    path = Path(heads_folder) / FOLDER / SPEC
    if not path.exists():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    return ClassifierSpec(path.parent, info["base"]["name"], info["base"]["sha256"], info)


def open_classifier(spec: ClassifierSpec, parallel: int = 1, threads: int | None = None):
    """The classifier's llama.cpp backend (its base with the adapter), opened once per process and setting."""
    from ..llm.registry import open_shared

    return open_shared(spec.base, lambda backend: _check_base(spec, backend), adapter=str(spec.adapter),
                       parallel=parallel, n_ctx=512, **({"n_threads": threads} if threads else {}))


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
