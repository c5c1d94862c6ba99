"""One LoRA SFT stage with the transformers Trainer: model loading, target checks, progress, evaluation, errors.

The Trainer brings gradient accumulation, length-grouped batches (``train_sampling_strategy=group_by_length``),
checkpoints with optimizer/scheduler/RNG state (so a resumed run continues exactly where it stopped) and
multi-GPU via ``accelerate launch``. This module adds what a user of mentalglm needs around it: answer-only
loss, a target-module check that lists the model's real linear layers, clear out-of-memory advice, a progress
line with tokens/s and ETA, and a periodic generate-and-parse evaluation whose F1 goes into the metrics log.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path

from ..tasks import INVALID, get_task, parse_answer
from .config import LoraSettings, StageSettings, TrainConfig
from .data import IGNORE_INDEX, PadCollator, SFTRecord, prompt_text

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """A training problem the user can fix; the message says how."""


# ---------------------------------------------------------------- precision and loading
def pick_dtype(setting: str) -> str:
    """'bf16', 'fp16' or 'fp32' for this machine: bf16 only where the hardware computes it."""
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    from ..llm.hf import _cpu_has_bf16

    return "bf16" if _cpu_has_bf16() else "fp32"  # emulated bf16 on CPU is several times slower than fp32


def load_model(source: str, dtype: str, trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float32, "fp32": torch.float32}[dtype]  # fp16: AMP
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    # A model loaded with gguf_file= carries a quantizer marker that makes the Trainer refuse it; its weights
    # are dequantized already, so the marker is dropped.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
    return model


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ---------------------------------------------------------------- LoRA targets
def linear_module_names(model) -> list[str]:
    """The distinct last-name parts of the model's linear layers (what LoRA ``target_modules`` matches)."""
    import torch

    names = set()
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear", "Conv1D"):
            names.add(full.rsplit(".", 1)[-1])
    names.discard("lm_head")
    return sorted(names)


def resolve_targets(model, lora: LoraSettings) -> list[str] | str:
    present = linear_module_names(model)
    arch = type(model).__name__
    if lora.target_modules == "all-linear":
        return "all-linear"
    if lora.target_modules == "auto":
        for layout, modules in lora.layouts.items():
            if modules and all(m in present for m in modules):
                log.info("LoRA targets (layout %s): %s", layout, ", ".join(modules))
                return list(modules)
        raise TrainError(f"no layout in lora.layouts fits {arch} (layouts: "
                         f"{ {k: v for k, v in lora.layouts.items()} }). The model's linear layers are: "
                         f"{', '.join(present)}. Set lora.target_modules=[...] to some of them.")
    missing = [m for m in lora.target_modules if m not in present]
    if missing:
        raise TrainError(f"lora.target_modules {missing} do not exist in {arch}. Its linear layers are: "
                         f"{', '.join(present)}. Example: lora.target_modules=[{','.join(present[:3])}]")
    return list(lora.target_modules)


def add_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    targets = resolve_targets(model, lora)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


# ---------------------------------------------------------------- evaluation by generation
def generate_answers(model, tokenizer, records: list[SFTRecord], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers of ``model`` to the records' prompts (left-padded batches, shortest first)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    prompts = [prompt_text(tokenizer, r.prompt) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                for i, row in zip(idx, gen[:, enc["input_ids"].shape[1]:]):
                    out[i] = tokenizer.decode(row, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return out


def evaluate_generation(model, tokenizer, records: list[SFTRecord], max_new_tokens: int) -> dict:
    """Per-task weighted F1 (and parse rate) of the model's generated labels on ``records``."""
    from ..evaluate.classification import score

    scored = [r for r in records if r.gold and r.task != "unknown"]
    if not scored:
        return {}
    answers = generate_answers(model, tokenizer, scored, max_new_tokens)
    by_task: dict[str, list] = defaultdict(list)
    for r, a in zip(scored, answers):
        by_task[r.task].append((r.gold, parse_answer(get_task(r.task), a)))
    metrics = {}
    for task, rows in by_task.items():
        s = score(get_task(task), [g for g, _ in rows], [p.labels for _, p in rows],
                  [p.status != INVALID for _, p in rows])
        metrics[f"eval/{task}/weighted_f1"] = round(s["weighted_f1"], 4)
        metrics[f"eval/{task}/parse_rate"] = round(1 - s["invalid_rate"], 4)
    f1s = [v for k, v in metrics.items() if k.endswith("weighted_f1")]
    metrics["eval/mean_weighted_f1"] = round(sum(f1s) / len(f1s), 4)
    return metrics


# ---------------------------------------------------------------- callbacks
def _callback_classes():
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        """Progress with tokens/s and ETA: a rich bar on a terminal, log lines otherwise; metrics to JSONL."""

        def __init__(self, stage: str, collator: PadCollator, metrics_log, records_eval, tokenizer, cfg, every):
            self.stage, self.collator, self.metrics_log = stage, collator, metrics_log
            self.records_eval, self.tokenizer, self.cfg, self.every = records_eval, tokenizer, cfg, every
            self.bar = None

        def on_train_begin(self, args, state, control, **kw):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.t0, self.step0, self.tok0 = time.perf_counter(), state.global_step, self.collator.real_tokens
            if Console(stderr=True).is_terminal:
                self.bar = Progress(TextColumn(f"{self.stage}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
                self.task = self.bar.add_task(self.stage, total=state.max_steps, completed=state.global_step,
                                              info="")
                self.bar.start()

        def _rates(self, state):
            elapsed = time.perf_counter() - self.t0
            done = state.global_step - self.step0
            tok_s = (self.collator.real_tokens - self.tok0) / elapsed if elapsed else 0.0
            eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            return tok_s, eta

        def on_step_end(self, args, state, control, **kw):
            if self.bar:
                tok_s, _ = self._rates(state)
                self.bar.update(self.task, completed=state.global_step, info=f"{tok_s:.0f} tok/s")
            if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
                self._evaluate(state, kw["model"])

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            tok_s, eta = self._rates(state)
            row = {"stage": self.stage, "step": state.global_step, "max_steps": state.max_steps,
                   "epoch": round(state.epoch or 0, 4), "tokens_per_s": round(tok_s, 1),
                   "real_tokens": self.collator.real_tokens, "padded_tokens": self.collator.padded_tokens, **logs}
            self.metrics_log(row)
            if "loss" in logs:
                eta_txt = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
                message = (f"{self.stage} step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                           f"lr {logs.get('learning_rate', 0):.2e} {tok_s:.0f} tok/s ETA {eta_txt}")
                if self.bar:
                    self.bar.console.log(message)
                else:
                    log.info(message)

        def on_train_end(self, args, state, control, **kw):
            if self.bar:
                self.bar.stop()
            self._evaluate(state, kw["model"])

        def _evaluate(self, state, model):
            if not self.records_eval:
                return
            t = time.perf_counter()
            try:
                metrics = evaluate_generation(model, self.tokenizer, self.records_eval, self.cfg.eval_max_new_tokens)
            except Exception as exc:  # an evaluation problem must not cost the training run
                log.error("%s step %d: evaluation failed (%s: %s); training goes on", self.stage, state.global_step,
                          type(exc).__name__, exc)
                return
            metrics.update(stage=self.stage, step=state.global_step, eval_seconds=round(time.perf_counter() - t, 1))
            self.metrics_log(metrics)
            log.info("%s step %d evaluation (%d posts): %s", self.stage, state.global_step, len(self.records_eval),
                     ", ".join(f"{k.removeprefix('eval/')} {v}" for k, v in metrics.items()
                               if k.endswith("weighted_f1")))
            self.t0 += time.perf_counter() - t  # evaluation time is not training time

    return ProgressLog


# ---------------------------------------------------------------- answer-only output layer
def _trainer_class():
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        """Computes the output layer only where the loss is taken (answer tokens).

        The vocabulary projection of a 0.5B Qwen is a quarter of its weights; prompts are two thirds of the
        tokens here, so skipping their logits saves about a fifth of the training compute and the memory of
        the full logits. Same loss as the model's own (sum over answer tokens / answer tokens in the batch).
        Used on one process only: sharded setups (FSDP, ZeRO-3) need the wrapped model's own forward.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            self._split = (self.accelerator.num_processes == 1 and hasattr(base, "get_decoder")
                           and base.get_output_embeddings() is not None)
            if self._split:
                self.model_accepts_loss_kwargs = True  # the loss below is normalised by num_items_in_batch

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self._split or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            import torch.nn.functional as F

            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            hidden = base.get_decoder()(input_ids=inputs["input_ids"],
                                        attention_mask=inputs["attention_mask"]).last_hidden_state
            labels = inputs["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            logits = base.get_output_embeddings()(hidden[:, :-1][mask]).float()
            loss = F.cross_entropy(logits, labels[mask], reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
            return loss / count

    return AnswerOnlyTrainer


# ---------------------------------------------------------------- one stage
def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text \
        or "cannot allocate memory" in text


def oom_advice(stage_name: str, stage: StageSettings, max_seq_len: int) -> str:
    half = max(1, stage.batch_size // 2)
    return (f"out of memory in {stage_name} (batch_size {stage.batch_size}, max_seq_len {max_seq_len}). Try "
            f"{stage_name}.batch_size={half} {stage_name}.grad_accum={stage.grad_accum * stage.batch_size // half} "
            f"(same effective batch), a smaller {stage_name}.data.max_seq_len / max_post_tokens, or "
            f"gradient_checkpointing=true; then rerun with --resume to continue from the last checkpoint.")


def train_stage(cfg: TrainConfig, stage_name: str, stage: StageSettings, model, tokenizer, train_items: list[dict],
                eval_set: list[SFTRecord], out_dir: Path, metrics_log, resume: bool, adapter_dir: Path, callbacks=()):
    """Train ``model`` (a PeftModel) on ``train_items`` with checkpoints under ``out_dir``; save the adapter to
    ``adapter_dir`` (``Trainer.save_model`` gathers sharded FSDP / ZeRO-3 weights first)."""
    import torch
    from transformers import PrinterCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    if not train_items:
        raise TrainError(f"{stage_name}: no training records left (check {stage_name}.data.tasks/path, per_task "
                         f"and max_seq_len)")
    dtype = pick_dtype(cfg.dtype)
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum, num_train_epochs=stage.epochs,
        max_steps=stage.max_steps or -1, learning_rate=stage.learning_rate, lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio, weight_decay=stage.weight_decay, logging_steps=stage.logging_steps,
        save_strategy="steps", save_steps=stage.save_steps, save_total_limit=stage.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed, bf16=dtype == "bf16", fp16=dtype == "fp16",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        report_to="none", remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # transformers >= 5.2x refuses bf16 without a GPU unless told the CPU is meant (CPUs with AMX compute it).
        use_cpu=not torch.cuda.is_available(),
        **({"activation_checkpointing": True} if cfg.gradient_checkpointing else {}),
    )
    collator = PadCollator(tokenizer.pad_token_id)
    if eval_set and args.world_size > 1:
        log.info("%s: generate-and-parse evaluation is skipped with %d processes; evaluate the exported adapter "
                 "with `mentalglm eval` instead", stage_name, args.world_size)
        eval_set = []
    progress = _callback_classes()(stage_name, collator, metrics_log, eval_set, tokenizer, cfg, stage.eval_steps)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_items, data_collator=collator,
                      processing_class=tokenizer, callbacks=[progress, *callbacks])
    trainer.remove_callback(PrinterCallback)  # ProgressLog reports instead of raw dict prints
    last = get_last_checkpoint(str(out_dir)) if resume and out_dir.is_dir() else None
    if last:
        log.info("%s: resuming from %s", stage_name, last)
    try:
        trainer.train(resume_from_checkpoint=last)
    except (RuntimeError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise TrainError(oom_advice(stage_name, stage, stage.data.max_seq_len)) from exc
        raise
    trainer.save_model(str(adapter_dir))
