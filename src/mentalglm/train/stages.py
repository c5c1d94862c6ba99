"""Stage 1 (English IMHI) then stage 2 (Chinese C-IMHI), as MentalGLM was trained, from one recipe.

How stage 2 starts is the recipe key ``stage2.init``:

- ``continue``: stage 2 keeps training the stage-1 adapter (same rank and targets). The final adapter is
  the stage-2 adapter.
- ``merge``: the stage-1 adapter is merged into the base weights and stage 2 trains a fresh adapter on top.
  The final exported adapter is the exact sum of both (rank r1 + r2, see ``export.combine_adapters``), so
  it applies to the original base model, e.g. the packaged GGUF in llama.cpp.

A finished stage leaves ``<run>/<stage>/adapter`` and ``DONE``; ``--resume`` skips finished stages and
continues an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import TrainConfig
from .data import data_paths, eval_records, instruction_files, records_hash, tokenize_all, training_records
from .export import combine_adapters, copy_adapter, export_gguf, export_merged
from .models import resolve_base
from ..files import file_sha256
from .run import RunFolder, manifest
from .trainer import TrainError, add_lora, load_model, load_tokenizer, pick_dtype, train_stage

log = logging.getLogger(__name__)


def run_training(cfg: TrainConfig, resume: bool = False, callbacks=()) -> Path:
    """Train every enabled stage, export, plot; returns the run folder."""
    from peft import PeftModel
    from transformers import set_seed

    run = RunFolder.open(cfg, resume)
    base = resolve_base(cfg.model)
    tokenizer = load_tokenizer(base, cfg.trust_remote_code)
    dtype = pick_dtype(cfg.dtype)
    log.info("run %s: base %s, precision %s", run.dir, base, dtype)
    previous: Path | None = None
    finished: dict[str, Path] = {}
    for name, stage in cfg.stages():
        adapter_dir = run.stage_dir(name) / "adapter"
        if run.stage_done(name, stage):
            log.info("%s finished earlier; using %s", name, adapter_dir)
            previous = finished[name] = adapter_dir
            continue
        records = training_records(stage.data, cfg.seed, tokenizer)
        items, dropped = tokenize_all(tokenizer, records, stage.data.max_seq_len)
        run.record_data(name, _data_info(stage.data, records, items, dropped))
        if dropped:
            log.warning("%s: %d of %d records are longer than %s.data.max_seq_len=%d and were dropped", name,
                        dropped, len(records), name, stage.data.max_seq_len)
        eval_set = eval_records(stage.data, cfg.seed, tokenizer)
        model = load_model(base, dtype, cfg.trust_remote_code)
        set_seed(cfg.seed)  # LoRA initialisation is random
        if previous is None:
            model = add_lora(model, cfg.lora)
        elif stage.init == "continue":
            model = PeftModel.from_pretrained(model, str(previous), is_trainable=True)
        else:
            model = PeftModel.from_pretrained(model, str(previous)).merge_and_unload()
            model = add_lora(model, cfg.lora)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        start = time.perf_counter()
        train_stage(cfg, name, stage, model, tokenizer, items, eval_set, run.stage_dir(name), run.log_metrics,
                    resume, adapter_dir, callbacks)
        run.mark_done(name, stage, time.perf_counter() - start)
        _barrier()  # the next stage (on every process) reads this stage's adapter
        previous = finished[name] = adapter_dir
        del model
    if run.is_main:
        _export(cfg, run, base, finished)
        run.plot()
    _barrier()
    return run.dir


def _barrier() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _export(cfg: TrainConfig, run: RunFolder, base: str, finished: dict[str, Path]) -> None:
    out = run.dir / "export" / "adapter"
    if cfg.stage2.enabled and cfg.stage2.init == "merge" and len(finished) == 2:
        combine_adapters(finished["stage1"], finished["stage2"], out)
    else:
        copy_adapter(list(finished.values())[-1], out)
    manifest(cfg).write(out)  # the adapter folder may be copied away from its run: it carries its own
    log.info("PEFT adapter: %s", out)
    if cfg.export.merged:
        log.info("merged model: %s", export_merged(base, out, run.dir / "export" / "merged", cfg.trust_remote_code))
    if cfg.export.gguf:
        gguf = export_gguf(out, base, run.dir / "export" / "adapter.gguf", cfg.export.gguf_outtype,
                           cfg.trust_remote_code)
        log.info("GGUF adapter for llama.cpp: %s", gguf)


def _data_info(data, records, items, dropped) -> dict:
    from collections import Counter

    info = {"records": len(records), "dropped_for_length": dropped, "records_sha256": records_hash(records),
            "per_task": dict(Counter(r.task for r in records)),
            "tokens": sum(len(i["input_ids"]) for i in items),
            "answer_tokens": sum(sum(1 for x in i["labels"] if x != -100) for i in items),
            # Which splits the stage read: records from these, held-out evaluation from validation; never test.
            "splits_read": {"training": list(data.splits), "evaluation": ["validation"]}}
    if data.path:
        info["files"] = {str(p): file_sha256(p) for root in data_paths(data) for p in instruction_files(root)}
    else:
        info["files"] = _source_files(data)
    return info


def _source_files(data) -> dict[str, str]:
    from ..data.sources import SOURCES, TASK_SOURCES, data_root, source_files
    from ..errors import DataError

    names = {TASK_SOURCES[t] for t in data.tasks if t in TASK_SOURCES} if data.kind == "cimhi" else {"imhi"}
    splits = {*data.splits, "val"} if data.kind == "imhi" else {"train", "val"}  # what training and evaluation read
    root, out = data_root(), {}
    for name in sorted(names):
        for split in sorted(splits & set(SOURCES[name].files)):
            try:
                files = source_files(name, split)
            except DataError:  # a split that is not present here (e.g. IMHI expert files) is simply not used
                continue
            for p in files:  # named inside the data folder: the same on every machine
                out[str(p.relative_to(root))] = file_sha256(p)
    return out


__all__ = ["run_training", "TrainError"]
