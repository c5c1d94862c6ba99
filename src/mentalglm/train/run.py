"""The run folder: everything needed to know what a training run did and to continue it.

    <run>/config.yaml         the resolved recipe (file + overrides + defaults)
    <run>/environment.json    library versions, Python, machine, git commit (and whether the tree was dirty)
    <run>/mentalglm-adapter.json  base model, prompt style, tasks (also in export/adapter/; see llm/manifest.py)
    <run>/data.json           per stage: record counts, records dropped for length, sha256 of the records and
                              of the raw files they came from
    <run>/metrics.jsonl       one JSON object per log step and per evaluation
    <run>/metrics.png         loss and evaluation F1 over steps
    <run>/stage1/, stage2/    Trainer checkpoints (resumable) and the stage's final ``adapter/`` + ``DONE``
    <run>/export/             adapter/ (PEFT), adapter.gguf (llama.cpp), merged/ (on request)
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

from ..llm.manifest import AdapterManifest
from .config import TrainConfig

log = logging.getLogger(__name__)

LIBRARIES = ("mentalglm", "torch", "transformers", "peft", "accelerate", "tokenizers", "llama_cpp_python", "gguf",
             "deepspeed")


class RunFolder:
    def __init__(self, path: Path):
        self.dir = Path(path)
        self.is_main = True  # the process that writes files (rank 0 under accelerate launch)

    @classmethod
    def open(cls, cfg: TrainConfig, resume: bool) -> "RunFolder":
        """Check and set up the run folder. Under ``accelerate launch`` every process checks, the main one writes."""
        from accelerate import PartialState

        from .trainer import TrainError

        state = PartialState()
        run = cls(cfg.run_dir())
        run.is_main = state.is_main_process
        saved = run.dir / "config.yaml"
        if saved.exists() and not resume:
            raise TrainError(f"run folder {run.dir} already holds a run. Continue it with --resume, or start a "
                             f"new one with output_dir=runs/train/<new-name>.")
        state.wait_for_everyone()  # nobody writes before every process has checked
        if run.is_main:
            if resume and saved.exists():
                before = yaml.safe_load(saved.read_text(encoding="utf-8"))
                changed = _diff(before, cfg.to_dict())
                if changed:
                    log.warning("resuming with a changed recipe (%s); checkpoints of finished steps are kept",
                                ", ".join(changed))
            run.dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")
            (run.dir / "environment.json").write_text(json.dumps(environment(), indent=2), encoding="utf-8")
            manifest(cfg).write(run.dir)  # what the model loader reads: base model, prompt style, tasks
        state.wait_for_everyone()
        return run

    # ------------------------------------------------------------ stages
    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def stage_done(self, name: str, stage) -> bool:
        """Finished with the length the recipe asks for now. A longer recipe (``stage2.epochs=2 --resume`` on a
        finished one-epoch run) reopens the stage, and training goes on from its last checkpoint."""
        done = self.dir / name / "DONE"
        if not (done.is_file() and (self.dir / name / "adapter" / "adapter_config.json").is_file()):
            return False
        trained = json.loads(done.read_text(encoding="utf-8")).get("length")
        if trained is not None and _shorter(_length(stage), trained):
            from .trainer import TrainError

            raise TrainError(f"{name} of {self.dir} was trained for {trained}; the recipe now asks for less "
                             f"({_length(stage)}). Train a shorter run in a new output_dir.")
        if trained is not None and trained != _length(stage):
            log.info("%s finished with %s; the recipe now asks for %s, so it trains on from its last checkpoint",
                     name, trained, _length(stage))
            return False
        return True

    def mark_done(self, name: str, stage, seconds: float) -> None:
        if self.is_main:
            (self.dir / name / "DONE").write_text(json.dumps(
                {"seconds": round(seconds, 1), "finished": _now(), "length": _length(stage)}))

    # ------------------------------------------------------------ records
    def record_data(self, stage: str, info: dict) -> None:
        if not self.is_main:
            return
        path = self.dir / "data.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        data[stage] = info
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")

    def log_metrics(self, row: dict) -> None:
        if not self.is_main:
            return
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": _now(), **row}, ensure_ascii=False) + "\n")

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if path.exists() else []

    def plot(self) -> Path | None:
        """Loss per step (both stages, one after the other) and evaluation F1 per task."""
        rows = self.metrics()
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        offset, last_stage, stage_end = 0, None, {}
        fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
        series: dict[str, list] = {}
        for r in rows:
            stage = r.get("stage")
            if stage != last_stage and last_stage is not None:
                offset = stage_end.get(last_stage, offset)
            last_stage = stage
            x = offset + r.get("step", 0)
            stage_end[stage] = max(stage_end.get(stage, 0), x)
            if "loss" in r:
                series.setdefault(f"loss {stage}", []).append((x, r["loss"]))
            for k, v in r.items():
                if k.startswith("eval/") and k.endswith("weighted_f1"):
                    series.setdefault(k.removeprefix("eval/").removesuffix("/weighted_f1"), []).append((x, v))
        for name, points in series.items():
            xs, ys = zip(*sorted(points))
            (ax_loss if name.startswith("loss") else ax_f1).plot(xs, ys, marker="." if len(xs) < 30 else None,
                                                                 label=name)
        ax_loss.set(xlabel="optimizer step (stages in sequence)", ylabel="training loss (answer tokens)",
                    title="loss")
        ax_f1.set(xlabel="optimizer step", ylabel="weighted F1", title="evaluation on validation sample",
                  ylim=(0, 1))
        for ax in (ax_loss, ax_f1):
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        out = self.dir / "metrics.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if a != b else []


def environment() -> dict:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "libraries": versions, "git": git_state(), "command": sys.argv, "started": _now()}


def git_state() -> dict:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _length(stage) -> dict:
    return {"epochs": stage.epochs, "max_steps": stage.max_steps}


def _shorter(new: dict, old: dict) -> bool:
    """Whether the ``new`` length stops before ``old`` did (max_steps, when set, overrides epochs)."""
    if new["max_steps"] or old["max_steps"]:
        return bool(new["max_steps"] and old["max_steps"] and new["max_steps"] < old["max_steps"])
    return new["epochs"] < old["epochs"]


def manifest(cfg: TrainConfig) -> AdapterManifest:
    """Every record is rendered with its task's instruction prompt, so the adapter learns the instruction style."""
    tasks = [t for _, stage in cfg.stages() for t in stage.data.tasks]
    return AdapterManifest(cfg.model, "instruction", tuple(dict.fromkeys(tasks)))
