"""Training recipes: dataclasses with help text, loaded from YAML with ``key=value`` overrides.

    cfg = load_config("configs/cpu-0.5b.yaml", ["stage2.epochs=2", "lora.r=16"])

Every key is checked: an unknown key (in the file or an override) is an error that names the key and lists
the valid ones at that level. ``describe()`` prints all keys with their help (``mentalglm train --keys``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A recipe that cannot be used: says which key (dotted) and why."""


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class LoraSettings:
    r: int = _f(8, "LoRA rank (official GLM-4 default 8)")
    alpha: int = _f(32, "LoRA alpha; the update is scaled by alpha / r (official GLM-4 default 32)")
    dropout: float = _f(0.1, "dropout on the LoRA input (official GLM-4 default 0.1)")
    target_modules: Any = _f(
        "auto", "linear layers that get LoRA: a list of module names, 'all-linear', or 'auto' = the first "
                "entry of `layouts` whose modules all exist in the model")
    layouts: dict = _f(
        {"qwen2/llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "named target-module lists tried in order by target_modules=auto (one per model layout)")


@dataclass
class DataSettings:
    kind: str = _f("cimhi", "cimhi: Chinese C-IMHI tasks; imhi: the English IMHI instructions (stage 1)")
    path: str | list | None = _f(
        None, "built instruction data: a folder or file of Alpaca {instruction, input, output} JSON/JSONL "
              "(`mentalglm data build`), or a list of them; empty = build records straight from the raw corpora")
    tasks: list = _f([], "tasks to train on (C-IMHI task names, or IMHI set names such as DR, dreaddit, SAD)")
    splits: list = _f(["train"], "source splits to draw training records from (IMHI: train, val)")
    per_task: int = _f(0, "at most this many training records per task (stratified by label; 0 = all)")
    max_post_tokens: int = _f(128, "posts longer than this many tokens are cut (raw-corpus records only)")
    max_seq_len: int = _f(512, "records longer than this after templating are dropped (and counted)")
    explanation_chars: int = _f(
        80, "explanations are cut at a sentence end within this many characters (raw-corpus records; 0 = none)")
    eval_per_task: int = _f(8, "validation posts per task for the periodic generate-and-parse evaluation")


@dataclass
class StageSettings:
    enabled: bool = _f(True, "run this stage")
    data: DataSettings = _f(None, "what the stage trains on")
    epochs: float = _f(1.0, "passes over the stage's records")
    max_steps: int = _f(0, "stop after this many optimizer steps (0 = use epochs)")
    learning_rate: float = _f(5e-4, "peak learning rate (official GLM-4 LoRA default 5e-4)")
    lr_scheduler: str = _f("cosine", "transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = _f(0.03, "fraction of steps with a linear warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int = _f(4, "records per device per forward pass")
    grad_accum: int = _f(1, "forward passes per optimizer step (effective batch = batch_size * grad_accum * GPUs)")
    save_steps: int = _f(20, "write a resumable checkpoint every this many optimizer steps")
    save_total_limit: int = _f(2, "keep only this many checkpoints per stage")
    eval_steps: int = _f(0, "generate-and-parse evaluation every this many steps (0 = at the end of the stage only)")
    logging_steps: int = _f(5, "log loss, learning rate and tokens/s every this many steps")
    init: str = _f("continue", "stage 2 only: 'merge' = merge the stage-1 adapter into the base and train a new "
                               "adapter; 'continue' = keep training the stage-1 adapter")


@dataclass
class ExportSettings:
    gguf: bool = _f(False, "convert the final adapter to a GGUF LoRA for llama.cpp (`export/adapter.gguf`)")
    gguf_outtype: str = _f("f16", "GGUF adapter tensor type: f32, f16, bf16 or q8_0")
    merged: bool = _f(False, "also save base + adapter merged into one HF model (`export/merged/`)")


@dataclass
class TrainConfig:
    name: str = _f("run", "recipe name (used in the run folder name)")
    model: str = _f("qwen2.5-coder-0.5b-instruct-q4",
                    "base model: a registry name (packaged GGUFs are converted once to an HF checkpoint), a local "
                    "HF folder, or an HF id")
    trust_remote_code: bool = _f(False, "allow the model's own code (GLM-4 remote-code layout)")
    output_dir: str = _f("runs/train/{name}", "run folder; {name} is replaced by the recipe name")
    seed: int = _f(13, "seed for sampling records, data order, dropout and LoRA init")
    dtype: str = _f("auto", "auto = bf16 where the hardware computes it (CUDA with bf16, CPUs with AVX512-BF16/AMX), "
                            "else float32; or bf16, fp16, fp32")
    group_by_length: bool = _f(True, "batch records of similar length together (less padding)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, ~30% slower")
    eval_max_new_tokens: int = _f(40, "tokens generated per post in the periodic evaluation (labels only)")
    stage1: StageSettings = _f(None, "stage 1: English IMHI instructions")
    stage2: StageSettings = _f(None, "stage 2: Chinese C-IMHI")
    lora: LoraSettings = _f(None, "LoRA adapter shape and targets")
    export: ExportSettings = _f(None, "what the run writes to <run>/export/ at the end")

    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))

    def stages(self) -> list[tuple[str, StageSettings]]:
        return [(n, s) for n, s in (("stage1", self.stage1), ("stage2", self.stage2)) if s.enabled]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NESTED = {"stage1": StageSettings, "stage2": StageSettings, "lora": LoraSettings, "export": ExportSettings,
           "data": DataSettings}
_STAGE_DEFAULTS = {
    "stage1": {"enabled": False, "data": {"kind": "imhi", "tasks": ["DR", "dreaddit", "SAD"]}},
    "stage2": {"data": {"kind": "cimhi", "tasks": ["cognitive_distortion", "suicide_risk", "suicide_risk_levels",
                                                    "emotion"]}},
}


def _build(cls, values: dict, where: str):
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; valid keys"
                          f"{' under ' + where if where else ''}: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name in _NESTED:
            sub = values.get(f.name) or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{key} must be a mapping of keys, got {sub!r}")
            kwargs[f.name] = _build(_NESTED[f.name], sub, key)
        elif f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], key)
    return cls(**kwargs)


def _coerce(value, hint, key: str):
    """Check a value against the field type; ints are accepted where floats are expected."""
    options = get_args(hint) if get_origin(hint) is not None and get_origin(hint) is not list and \
        get_origin(hint) is not dict else (hint,)
    if value is None and type(None) in options:
        return None
    for t in options:
        base = get_origin(t) or t
        if base is Any:
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (bool, str, list, dict) and isinstance(value, base):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in options)
    raise ConfigError(f"{key} must be {names}, got {value!r}")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "layouts" \
            else v
    return out


def apply_override(values: dict, item: str) -> dict:
    """``stage2.epochs=2`` -> values["stage2"]["epochs"] = 2 (the value is read as YAML: 2, 5e-4, [a, b], true)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. stage2.epochs=2)")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r}: empty key part")
    value = yaml.safe_load(raw) if raw.strip() else None
    node = {path[-1]: value}
    for part in reversed(path[:-1]):
        node = {part: node}
    return _merge(values, node)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (recipes live in configs/: "
                              f"{', '.join(sorted(p.name for p in Path('configs').glob('*.yaml'))) or 'none here'})")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
    values = _merge(_STAGE_DEFAULTS, values)
    for item in overrides:
        values = apply_override(values, item)
    cfg = _build(TrainConfig, values, "")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if not cfg.stages():
        raise ConfigError("both stage1.enabled and stage2.enabled are false: nothing to train")
    if cfg.stage2.init not in ("merge", "continue"):
        raise ConfigError(f"stage2.init must be 'merge' or 'continue', got {cfg.stage2.init!r}")
    for name, stage in cfg.stages():
        if stage.data.kind not in ("cimhi", "imhi"):
            raise ConfigError(f"{name}.data.kind must be 'cimhi' or 'imhi', got {stage.data.kind!r}")
        if not stage.data.tasks and not stage.data.path:
            raise ConfigError(f"{name}.data.tasks is empty and {name}.data.path is not set: no training data")
        for key in ("batch_size", "grad_accum", "save_steps", "logging_steps"):
            if getattr(stage, key) < 1:
                raise ConfigError(f"{name}.{key} must be at least 1, got {getattr(stage, key)}")
        if stage.epochs <= 0 and stage.max_steps <= 0:
            raise ConfigError(f"{name}: set epochs > 0 or max_steps > 0")
    if cfg.dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"dtype must be auto, bf16, fp16 or fp32, got {cfg.dtype!r}")
    tm = cfg.lora.target_modules
    if not (tm in ("auto", "all-linear") or (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm))):
        raise ConfigError(f"lora.target_modules must be 'auto', 'all-linear' or a list of module names, got {tm!r}")


def describe(cls=TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every key, for `mentalglm train --keys`."""
    rows = []
    defaults = _merge(_STAGE_DEFAULTS, {})
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in _NESTED:
            rows.append((key, "", f.metadata.get("help", "")))
            rows.extend(describe(_NESTED[f.name], key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        top, _, rest = key.partition(".")
        if top in defaults and rest:  # stage-specific defaults
            node = defaults[top]
            for part in rest.split("."):
                node = node.get(part, default) if isinstance(node, dict) else default
            default = node
        rows.append((key, yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("..."),
                     f.metadata.get("help", "")))
    return rows
