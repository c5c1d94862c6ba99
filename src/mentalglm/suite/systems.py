"""Running one system of a suite on one task: fit (n-gram, encoder) or prompt (LLM) and write a predictions file.

Whether a system can run here is decided before anything loads, without touching the network: a model that is
neither a local folder nor in the Hugging Face cache, a missing adapter or GGUF, an `openai:` model without a
server address, or vLLM without its package make the system *skipped*, with the reason and how to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..data.records import Example
from ..data.sources import training_posts
from ..errors import missing
from ..evaluate.predictions import GoldSet, write_predictions
from ..llm import registry
from ..llm.base import ModelUnavailable
from .config import SystemSpec


class Skipped(Exception):
    """The system cannot run here; the message says why and how to get what it needs."""


def availability(system: SystemSpec) -> str | None:
    """None when the system can run here, else why not (and how to get what it needs): an LLM's model as the
    registry's check for its scheme says (a Hugging Face model needs the [train] extra), an encoder when the
    [train] extra is installed and the model is a folder or in the Hugging Face cache."""
    advice = f" {system.how_to_get}" if system.how_to_get else ""
    if system.adapter and not Path(system.adapter).exists():
        return f"adapter {system.adapter} not found (train it with `mentalglm train`).{advice}"
    if system.kind == "ngram":
        return None
    model = system.model or ""
    if system.kind == "encoder":
        from ..baselines.encoder import FEATURE, NEEDS

        if absent := missing(NEEDS, "train", FEATURE):
            return f"{absent}.{advice}"
        if Path(model).is_dir() or registry.in_hf_cache(model):
            return None
        return (f"encoder {model!r} is neither a local folder nor in the Hugging Face cache. "
                f"{registry.download_advice(model, 'model')}{advice}")
    reason = registry.availability(model, system.base_url, system.weights)
    return f"{reason}{advice}" if reason else None


def backend_options(system: SystemSpec) -> dict:
    """The registry's options for the system's model, as the system sets them or by default (``parallel``
    chosen from the machine as on the command line)."""
    given = {option.name: getattr(system, option.name) for option in registry.options()}
    return registry.backend_options(system.model, system.base_url, system.adapter, **given)


class SystemRunner:
    """Predicts every task of one system; an LLM backend is opened once, on first use, and shared by the tasks."""

    def __init__(self, system: SystemSpec, data_root=None, work_dir: Path | None = None):
        self.system, self.data_root, self.work_dir = system, data_root, work_dir
        self.backend, self.style = None, None

    def _train(self, task: str, split: str) -> list[Example]:
        return training_posts(task, split, self.data_root)

    def predict(self, gold: GoldSet, out: Path, on_result: Callable[[object], None] | None = None) -> None:
        """Write (or, for an LLM, finish) the predictions of ``gold``'s posts into ``out``."""
        s = self.system
        if s.kind == "llm":
            self._predict_llm(gold, out, on_result)
            return
        from ..baselines import make_baseline
        from ..tasks import get_task

        spec = get_task(gold.task)
        train = self._train(gold.task, gold.split)
        folder = (self.work_dir or Path("runs/suite")) / s.kind / gold.task
        model = make_baseline(s.kind, spec, model=s.model, output_dir=str(folder), epochs=s.epochs,
                              max_steps=s.max_steps, learning_rate=s.learning_rate, batch_size=s.batch_size,
                              max_length=s.max_length).fit(train)
        rows = model.predictions(list(gold.examples))
        partial = out.with_suffix(".partial")  # whole or absent: a stopped fit leaves nothing that looks finished
        write_predictions(rows, partial)
        partial.replace(out)
        if on_result:
            for row in rows:
                on_result(row)

    def _open(self) -> None:
        s = self.system
        try:
            self.backend, self.style = registry.open_backend(s.model, adapter=s.adapter, base_url=s.base_url,
                                                             prompt_style=s.prompt_style, weights=s.weights,
                                                             **backend_options(s))
        except ModelUnavailable as e:
            raise Skipped(str(e) + (f" {s.how_to_get}" if s.how_to_get else "")) from None

    def _predict_llm(self, gold: GoldSet, out: Path, on_result) -> None:
        from ..baselines.llm import make_analyzer, predict_to_file

        s = self.system
        if self.backend is None:
            self._open()
        train = self._train(gold.task, gold.split) if s.few_shot else []
        analyzer = make_analyzer(self.backend, gold.task, self.style, s.explain, s.max_tokens, s.few_shot, train,
                                 s.shots_seed, heads=s.heads, risk_threshold=None)
        predict_to_file(analyzer, gold.examples, out, on_result)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


__all__ = ["SystemRunner", "Skipped", "availability"]
