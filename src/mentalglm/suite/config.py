"""The suite file: which systems, on which tasks, on which split, compared against which reference.

```yaml
name: quick
split: validation            # or test (the publishers' test files); `--split` overrides it
sample: 40                   # a stratified sample of each task's split (seed below); null: the whole split
tasks: [suicide_risk, emotion]
reference: ngram             # paired differences are taken against this system
systems:
  - {name: ngram, kind: ngram, family: discriminative}
  - {name: mentalglm-mini, kind: llm, model: mentalglm-mini, family: fine-tuned LLM}
  - {name: qwen-4shot, kind: llm, model: qwen2.5-coder-1.5b-instruct-q4, few_shot: 4, family: general LLM}
```

Every field of a system is checked here, with the file and the system named in the error, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..baselines import BASELINES
from ..data.records import DataError
from ..data.sources import SPLITS
from ..llm import registry
from ..tasks import get_task

KINDS = (*BASELINES, "llm")
DEFAULT_TASKS = ("cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion")


@dataclass(frozen=True)
class SystemSpec:
    """One row of the comparison. ``kind``: ngram (char TF-IDF + linear SVM), encoder (a BERT-family fine-tune)
    or llm (any model `mentalglm analyze` opens: registry name, .gguf, HF folder or id, openai:<name>)."""

    name: str
    kind: str
    family: str = ""  # the paper's grouping: discriminative, general LLM, fine-tuned LLM
    tasks: tuple[str, ...] | None = None  # None: every task of the suite
    how_to_get: str = ""  # shown when the system is skipped because its weights are not here
    # llm
    model: str | None = None
    adapter: str | None = None
    weights: str | None = None
    base_url: str | None = None
    prompt_style: str | None = None
    heads: str | None = None
    few_shot: int = 0
    shots_seed: int = 13
    explain: bool = False
    max_tokens: int = 160
    # the backend's options (llm.registry declares them, their defaults and the machine-chosen ones; None: the
    # registry's default). Only those of the model's scheme apply: n_ctx, threads, parallel for llama.cpp,
    # concurrency for an OpenAI-compatible server, tensor_parallel_size for vLLM.
    n_ctx: int = registry.N_CTX.default
    threads: int | None = None
    parallel: int | None = None
    concurrency: int | None = None
    tensor_parallel_size: int | None = None
    # encoder
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 256

    # Fields that do not change a prediction: left out of the cache key, so renaming a row or raising the
    # thread count reuses what was computed.
    _NOT_IN_KEY = ("name", "family", "tasks", "how_to_get", "threads", "concurrency")
    # Fields in the key only when the file sets them: sequences decoded together round differently, which can
    # change a label; unset (the machine's choice) they leave the keys of earlier runs as they were.
    _KEY_WHEN_SET = ("parallel", "tensor_parallel_size")

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if k not in self._NOT_IN_KEY and not (k in self._KEY_WHEN_SET and v is None)}

    @property
    def fitted_on_train(self) -> bool:
        """Whether the system reads the train split (to fit, or for few-shot examples)."""
        return self.kind in ("ngram", "encoder") or self.few_shot > 0


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    systems: tuple[SystemSpec, ...]
    tasks: tuple[str, ...] = DEFAULT_TASKS
    split: str = "validation"
    sample: int | None = None
    seed: int = 13
    reference: str | None = None
    resamples: int = 1000
    bootstrap_seed: int = 13
    title: str = ""
    source: str = ""  # the YAML file

    def systems_for(self, task: str) -> list[SystemSpec]:
        return [s for s in self.systems if s.tasks is None or task in s.tasks]


def cache_key(system: SystemSpec, task: str, split: str, sample: int | None, seed: int, gold_ids) -> str:
    """What a system's predictions on a task depend on: its settings and the exact posts asked."""
    ids = hashlib.sha256("\n".join(sorted(gold_ids)).encode()).hexdigest()
    blob = json.dumps({"system": system.settings(), "task": task, "split": split, "sample": sample, "seed": seed,
                       "posts": ids}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


_SYSTEM_FIELDS = {f.name: f for f in fields(SystemSpec)}
_BACKEND_OPTIONS = {option.name for option in registry.options()}
_SUITE_KEYS = {"name", "systems", "tasks", "split", "sample", "seed", "reference", "resamples", "bootstrap_seed",
               "title"}


def _task_names(path, where: str, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(path, None, f"{where}: a list of task names, found {value!r}")
    try:
        return tuple(get_task(str(t)).name for t in value)
    except KeyError as e:
        raise DataError(path, None, f"{where}: {e.args[0]}") from None


def _system(path, k: int, raw) -> SystemSpec:
    if not isinstance(raw, dict):
        raise DataError(path, None, f"systems[{k}]: a mapping with at least name and kind, found {raw!r}")
    where = f"systems[{k}] ({raw.get('name', 'no name')})"
    unknown = sorted(set(raw) - set(_SYSTEM_FIELDS))
    if unknown:
        raise DataError(path, None, f"{where}: unknown key(s) {unknown}; known: {', '.join(_SYSTEM_FIELDS)}")
    for key in ("name", "kind"):
        if not raw.get(key):
            raise DataError(path, None, f"{where}: `{key}` is required")
    if raw["kind"] not in KINDS:
        raise DataError(path, None, f"{where}: kind {raw['kind']!r} is not one of {', '.join(KINDS)}")
    if raw["kind"] in ("llm", "encoder") and not raw.get("model"):
        raise DataError(path, None, f"{where}: kind {raw['kind']} needs a `model`")
    values = dict(raw)
    if "tasks" in values and values["tasks"] is not None:
        values["tasks"] = _task_names(path, f"{where}.tasks", values["tasks"])
    for key, value in values.items():
        default = _SYSTEM_FIELDS[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(path, None, f"{where}.{key}: a number, found {value!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise DataError(path, None, f"{where}.{key}: true or false, found {value!r}")
        if key in _BACKEND_OPTIONS and value is not None and (type(value) is not int or value < 1):
            raise DataError(path, None, f"{where}.{key}: a whole number of at least 1, found {value!r}")
    for key in ("name", "family", "how_to_get", "model", "adapter", "weights", "base_url", "prompt_style", "heads"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    return SystemSpec(**values)


def load_suite(path: str | Path) -> SuiteConfig:
    """A suite file, checked: unknown keys, kinds, tasks, splits and duplicate names are errors naming the file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "suite file not found (the shipped ones are configs/eval/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, mark.line + 1 if mark else None, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise DataError(path, None, "a suite file is a mapping with `systems` (and name, tasks, split, ...)")
    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        raise DataError(path, None, f"unknown key(s) {unknown}; known: {', '.join(sorted(_SUITE_KEYS))}")
    systems = raw.get("systems")
    if not isinstance(systems, list) or not systems:
        raise DataError(path, None, "`systems` must list at least one system")
    specs = tuple(_system(path, k, s) for k, s in enumerate(systems))
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise DataError(path, None, f"two systems are named {duplicate!r}; names label the report rows")
    split = str(raw.get("split", "validation"))
    if split not in SPLITS:
        raise DataError(path, None, f"split {split!r} is not one of {', '.join(SPLITS)}")
    reference = raw.get("reference")
    if reference is not None and reference not in names:
        raise DataError(path, None, f"reference {reference!r} is none of the systems: {', '.join(names)}")
    sample = raw.get("sample")
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample <= 0):
        raise DataError(path, None, f"sample: a positive number of posts or null, found {sample!r}")
    tasks = _task_names(path, "tasks", raw["tasks"]) if "tasks" in raw else DEFAULT_TASKS
    return SuiteConfig(name=str(raw.get("name") or path.stem), systems=specs, tasks=tasks, split=split, sample=sample,
                       seed=int(raw.get("seed", 13)), reference=reference, resamples=int(raw.get("resamples", 1000)),
                       bootstrap_seed=int(raw.get("bootstrap_seed", 13)), title=str(raw.get("title") or ""),
                       source=str(path))


__all__ = ["SystemSpec", "SuiteConfig", "load_suite", "cache_key", "KINDS", "DEFAULT_TASKS"]
