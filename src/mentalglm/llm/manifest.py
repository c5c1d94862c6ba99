"""The small file that says what a trained adapter is: its base model, the prompt style it learned, its tasks.

``mentalglm train`` writes ``mentalglm-adapter.json`` into the run folder and into ``export/adapter``; the model
loader reads it to ask the adapter the way it was trained (the instruction prompt: the zero-shot prompt makes it
answer off-format). It lives here, beside the loader, so that ``llm`` never imports ``train``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST = "mentalglm-adapter.json"


@dataclass(frozen=True)
class AdapterManifest:
    base_model: str
    prompt_style: str
    tasks: tuple[str, ...] = ()

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(self), "tasks": list(self.tasks)}, indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        return path


def read_manifest(adapter: str | Path) -> AdapterManifest | None:
    """The manifest of an adapter given as a run folder, its ``export/adapter`` folder or ``export/adapter.gguf``
    (the manifest is in that folder or up to two levels above it), else None.

    Run folders written before manifests existed are recognised by the two files every run writes first
    (``config.yaml`` and ``environment.json``); every such run was trained on the instruction prompt."""
    path = Path(adapter).resolve()
    for folder in (path, *list(path.parents)[:2]):
        manifest = folder / MANIFEST
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return AdapterManifest(data["base_model"], data["prompt_style"], tuple(data.get("tasks", ())))
        if (folder / "config.yaml").is_file() and (folder / "environment.json").is_file():
            return _legacy_run(folder)
    return None


def _legacy_run(folder: Path) -> AdapterManifest:
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    stages = [config.get(s) or {} for s in ("stage1", "stage2")]
    tasks = [t for s in stages if s.get("enabled", True) for t in (s.get("data") or {}).get("tasks", [])]
    return AdapterManifest(str(config.get("model", "")), "instruction", tuple(tasks))
