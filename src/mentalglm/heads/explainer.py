"""The trained explainer of a heads folder: a LoRA adapter on a smaller model that writes the explanation of a label
the heads have already chosen.

A heads folder may hold ``explainer/``: ``adapter.gguf`` (for llama.cpp) and ``explainer.json`` (the base model by
registry name and sha256, the prompt the adapter learned, how it was made and how it scored), both listed in the
folder's manifest. The explainer is asked the C-IMHI question of the task with the answer prefilled: the chosen
label's sentence, ``理由：`` and, for an unsure row, the lead that names the runner-up, so the label it explains
is never its own choice. The heads read their states from their own model without any adapter: loading the
explainer cannot change a probability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..llm.base import Request
from .manifest import list_files
from ..tasks import TaskSpec

FOLDER = "explainer"
SPEC = "explainer.json"
ADAPTER = "adapter.gguf"


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter that a heads folder carries in a subfolder: ``adapter.gguf`` and a JSON naming its base."""

    folder: Path
    base: str  # registry name (or GGUF file) of the model the adapter was trained on
    base_sha256: str
    info: dict  # the whole JSON

    @property
    def adapter(self) -> Path:
        return self.folder / ADAPTER


def read_spec(cls, heads_folder: Path, folder: str, spec: str):
    """``cls`` of the heads folder's ``folder/spec``, or None where it has none."""
    path = Path(heads_folder) / folder / spec
    if not path.exists():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    return cls(path.parent, info["base"]["name"], info["base"]["sha256"], info)


class ExplainerSpec(AdapterSpec):
    @property
    def tasks(self) -> list[str]:
        """The tasks it writes by default: where it beat the heads' own model on validation."""
        return list(self.info.get("default_tasks", self.info.get("tasks", [])))


def read_explainer(heads_folder: Path) -> ExplainerSpec | None:
    """The folder's explainer, or None where it has none."""
    return read_spec(ExplainerSpec, heads_folder, FOLDER, SPEC)


def explainer_request(spec: TaskSpec, text: str, labels: tuple[str, ...], lead: str = "") -> Request:
    """What the explainer is asked: the post in the C-IMHI question (the prompt it was trained on), the answer
    prefilled up to the explanation."""
    return Request(({"role": "user", "content": spec.instruction_prompt(text)},),
                   f"{spec.label_sentence(labels)}{spec.reason_marker}{lead}")


def open_explainer(explainer: ExplainerSpec, parallel: int = 1):
    """The explainer's llama.cpp backend (all cores, ``parallel`` sequences, as the heads' model decodes), opened
    once per process and setting: the service's analyzers share it."""
    from ..llm.registry import open_shared

    return open_shared(explainer.base, lambda backend: _check_base(explainer, backend), adapter=str(explainer.adapter),
                       prompt_style="instruction", parallel=parallel, n_ctx=2048)


def _check_base(explainer: ExplainerSpec, backend) -> None:
    from . import HeadsError, model_sha256

    have = model_sha256(Path(backend.path))
    if have != explainer.base_sha256:
        raise HeadsError(f"the explainer in {explainer.folder} was trained on {explainer.base} (sha256 "
                         f"{explainer.base_sha256[:12]}…); the model found has sha256 {have[:12]}…")


def install_explainer(run: Path, heads_folder: Path, command: str, scores: dict | None = None,
                      default_tasks: list[str] | None = None) -> ExplainerSpec:
    """Put a `mentalglm train` run's GGUF adapter into a heads folder as its explainer: ``explainer/adapter.gguf``,
    ``explainer/explainer.json`` (base model and sha256, what it was trained on, ``scores``, the ``default_tasks`` it
    writes unless told otherwise: default, every task it learned), both listed with their sha256 in the folder's
    manifest. The run's records (data.json) and settings (config.yaml) go in with it."""
    import shutil

    import yaml

    from ..llm.catalog import REGISTRY, assemble_packaged
    from ..llm.manifest import read_manifest
    from . import HeadsError, model_sha256

    run, heads_folder = Path(run), Path(heads_folder)
    adapter, trained = run / "export" / ADAPTER, read_manifest(run)
    if not adapter.is_file() or trained is None:
        raise HeadsError(f"{run} is not a finished `mentalglm train` run with a GGUF adapter (export/{ADAPTER}); "
                         f"run `mentalglm train export-gguf {run}`")
    entry = REGISTRY.get(trained.base_model)
    if entry is not None and entry.packaged is not None:
        base = assemble_packaged(entry)
    elif Path(trained.base_model).suffix == ".gguf" and Path(trained.base_model).is_file():
        base = Path(trained.base_model)  # a GGUF of your own: the folder runs where that file is
    else:
        raise HeadsError(f"the explainer's base {trained.base_model!r} is neither a packaged model nor a GGUF file; "
                         "llama.cpp runs the explainer, so its base must be one")
    folder = heads_folder / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(adapter, folder / ADAPTER)
    info = {"base": {"name": trained.base_model, "sha256": model_sha256(base)},
            "prompt_style": trained.prompt_style, "tasks": list(trained.tasks),
            "default_tasks": list(trained.tasks if default_tasks is None else default_tasks), "command": command,
            "reproduce": "scripts/build_explainer.sh (data, training, measurement, this install; resumable)",
            "config": yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")),
            "training_data": json.loads((run / "data.json").read_text(encoding="utf-8")),
            "validation": scores or {}}
    (folder / SPEC).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _list(heads_folder)
    return read_explainer(heads_folder)


def carry_explainer(old_heads: Path, new_heads: Path) -> bool:
    """Copy ``old_heads``' explainer into ``new_heads`` (rebuilt heads keep the explainer: it does not read their
    states); whether there was one."""
    import shutil

    if not (Path(old_heads) / FOLDER / SPEC).is_file():
        return False
    shutil.copytree(Path(old_heads) / FOLDER, Path(new_heads) / FOLDER, dirs_exist_ok=True)
    _list(Path(new_heads))
    return True


def _list(heads_folder: Path) -> None:
    """List the explainer's files (and no earlier ones) with their sha256 in the heads folder's manifest."""
    list_files(heads_folder, [f"{FOLDER}/{name}" for name in (ADAPTER, SPEC)], replace_prefix=f"{FOLDER}/")
