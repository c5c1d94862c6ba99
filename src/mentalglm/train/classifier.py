"""A LoRA classifier: the packaged 0.5B trained to label, the MentalQLM route of the labels issue (#21).

One LoRA adapter shared by every task and one linear head per task, read at the post's last token (the base's
final normalised hidden state; llama.cpp returns the same state with the adapter loaded). The post alone is the
input: one pass of the 0.5B per post serves every task, against a 1.5B pass per task for the frozen heads.

Each task's training split is cut in two (``ClassifierRecipe.holdout``, stratified): the LoRA learns from the
larger part; the held-out part never reaches it, so its scores are honest, and it is where the shipped head's
stacker, calibration and thresholds are fitted (``heads train --classifier``, heads/build.py). Training checkpoints
every ``save_every`` steps into the run folder and ``--resume`` continues from the last one (the batch order is a
function of the seed; steps after the last checkpoint are redone, and logged again in metrics.jsonl).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np

from ..data.records import Example
from ..heads.classifier import ClassifierRecipe, adapter_file, last_pass, load_recipe, second_pass, split_training
from ..tasks import get_task

log = logging.getLogger(__name__)


def targets(recipe: ClassifierRecipe, task: str, examples: list[Example]) -> np.ndarray:
    """Training targets: multi-hot for multi-label tasks, a distribution over labels otherwise."""
    spec = get_task(task)
    names = list(spec.label_names)
    y = np.zeros((len(examples), len(names)), dtype=np.float32)
    for i, e in enumerate(examples):
        for label in e.labels:
            y[i, names.index(label)] = 1.0
    if task == "suicide_risk_levels" and recipe.level_sd > 0:
        levels = np.arange(len(names), dtype=np.float32)
        gold = y.argmax(1)[:, None]
        y = np.exp(-0.5 * ((levels[None, :] - gold) / recipe.level_sd) ** 2)
        y /= y.sum(1, keepdims=True)
    return y


class _Model:
    """The base with a LoRA adapter and one linear head per task; ``states`` gives the last-token states."""

    def __init__(self, recipe: ClassifierRecipe, base_dir: str):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel

        base = AutoModel.from_pretrained(base_dir, dtype=torch.float32)
        config = LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                            target_modules=list(recipe.targets), bias="none")
        self.body = get_peft_model(base, config)
        hidden = base.config.hidden_size
        torch.manual_seed(recipe.seed)
        self.heads = torch.nn.ModuleDict({
            t: torch.nn.Linear(hidden, len(get_task(t).label_names)) for t in recipe.tasks})
        for head in self.heads.values():  # every label equally likely at first
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        if recipe.init:
            self.start_from(Path(recipe.init) / "final")

    def start_from(self, final: Path) -> None:
        """The adapter and heads of a finished run (``final``)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not (final / "heads.safetensors").is_file():
            raise FileNotFoundError(f"{final.parent} has no finished classifier to start from")
        set_peft_model_state_dict(self.body, load_file(str(final / "adapter" / "adapter_model.safetensors")))
        self.heads.load_state_dict(load_file(str(final / "heads.safetensors")))

    def states(self, ids, mask):
        import torch

        out = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1
        return out[torch.arange(out.shape[0]), last]


def _batches(items: list[tuple[str, list[int], np.ndarray]], size: int, rng: random.Random) -> list[list[int]]:
    """Batches of one task each and of similar length (little padding), in a random order."""
    by_task: dict[str, list[int]] = {}
    for i, (task, _, _) in enumerate(items):
        by_task.setdefault(task, []).append(i)
    batches = []
    for idx in by_task.values():
        idx = sorted(idx, key=lambda i: (len(items[i][1]), rng.random()))
        batches += [idx[k:k + size] for k in range(0, len(idx), size)]
    rng.shuffle(batches)
    return batches


def _collate(items, batch, pad_id: int):
    import torch

    width = max(len(items[i][1]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):
        tokens = items[i][1]
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    y = torch.tensor(np.stack([items[i][2] for i in batch]))
    return ids, mask, y


def train_classifier(recipe: ClassifierRecipe, run: Path, resume: bool = False, root=None,
                     threads: int | None = None, max_steps: int | None = None) -> Path | None:
    """Train (or continue) the classifier in ``run``; returns ``run/final`` (PEFT adapter + heads.safetensors), or
    None where ``max_steps`` (steps in this call, a time budget) stopped it first: ``resume`` continues it."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from .models import resolve_base

    run = Path(run)
    saved = run / "recipe.json"
    if saved.exists() and not resume:
        raise FileExistsError(f"{run} already holds a classifier run; continue it with --resume")
    if resume and saved.exists() and json.loads(saved.read_text()) != recipe.to_dict():
        raise ValueError(f"{run} was started with another recipe ({saved}); start a new run folder")
    run.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(recipe.to_dict(), indent=1, ensure_ascii=False))
    if threads:
        torch.set_num_threads(threads)

    base_dir = resolve_base(recipe.base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    items, counts = [], {}
    for task in recipe.tasks:
        part, held = split_training(recipe, task, root)
        counts[task] = {"lora": len(part), "held_out": len(held)}
        y = targets(recipe, task, part)
        for e, target in zip(part, y):
            items.append((task, tokenizer(e.text).input_ids[:recipe.max_tokens], target))
    (run / "data.json").write_text(json.dumps(counts, indent=1))

    model = _Model(recipe, base_dir)
    lora = [p for p in model.body.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([{"params": lora, "lr": recipe.lr},
                               {"params": model.heads.parameters(), "lr": recipe.head_lr}], weight_decay=0.0)
    rng = random.Random(recipe.seed)
    plan = [b for _ in range(recipe.epochs) for b in _batches(items, recipe.batch_size, rng)]
    total = len(plan)

    def scale(step):  # linear warm-up, cosine decay
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - recipe.warmup) / max(1, total - recipe.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, scale)
    start = 0
    ckpt = run / "checkpoint"
    if resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        trainable = load_file(str(ckpt / "trainable.safetensors"))
        model.body.load_state_dict({k: v for k, v in trainable.items() if not k.startswith("heads.")}, strict=False)
        model.heads.load_state_dict({k[6:]: v for k, v in trainable.items() if k.startswith("heads.")})
        optim.load_state_dict(torch.load(ckpt / "optim.pt", weights_only=True))
        sched.load_state_dict(state["sched"])
        start = state["step"]
        log.info("resumed at step %d of %d", start, total)

    model.body.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0, tokens_done = time.time(), 0
    with (run / "metrics.jsonl").open("a") as metrics:
        for step in range(start, total):
            if max_steps is not None and step - start >= max_steps:
                _checkpoint(model, optim, sched, step, ckpt, save_file)
                return None
            batch = plan[step]
            task = items[batch[0]][0]
            ids, mask, y = _collate(items, batch, pad)
            logits = model.heads[task](model.states(ids, mask))
            if get_task(task).multi_label:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            else:
                loss = -(y * torch.log_softmax(logits, -1)).sum(-1).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora + list(model.heads.parameters()), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            tokens_done += int(mask.sum())
            metrics.write(json.dumps({"step": step + 1, "task": task, "loss": round(loss.item(), 4)}) + "\n")
            if (step + 1) % 10 == 0:
                rate = tokens_done / (time.time() - t0)
                eta = (total - step - 1) * (time.time() - t0) / (step + 1 - start)
                log.info("step %d/%d %s loss %.4f %.0f tok/s ETA %s", step + 1, total, task, loss.item(), rate,
                         time.strftime("%H:%M:%S", time.gmtime(eta)))
                metrics.flush()
            if (step + 1) % recipe.save_every == 0 or step + 1 == total:
                _checkpoint(model, optim, sched, step + 1, ckpt, save_file)
    return _export(model, run / "final", save_file)


def _export(model, folder: Path, save_file) -> Path:
    """The PEFT adapter and ``heads.safetensors`` (one weight and bias per task) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.body.save_pretrained(str(folder / "adapter"))
    save_file({k: v.detach().contiguous() for k, v in model.heads.state_dict().items()},
              str(folder / "heads.safetensors"))
    return folder


def _checkpoint(model, optim, sched, step, ckpt: Path, save_file) -> None:
    """Trainable weights, optimiser and schedule, written to a temporary folder and swapped in (kill -9 safe)."""
    import shutil

    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {k: v.detach().contiguous() for k, v in model.body.named_parameters() if v.requires_grad}
    trainable.update({"heads." + k: v.detach().contiguous() for k, v in model.heads.state_dict().items()})
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optim.state_dict(), tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "sched": sched.state_dict()}))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def export_classifier(run: Path) -> Path:
    """``run/export/adapter.gguf``: the finished run's adapter for llama.cpp (made once). The LoRA was trained on the
    base's decoder alone, so its weights are renamed to where they sit in the causal LM that the converter maps."""
    from safetensors.numpy import load_file, save_file

    from .export import export_gguf
    from .models import resolve_base

    run = Path(run)
    out = adapter_file(run)
    if out.is_file():
        return out
    final = last_pass(run) / "final" / "adapter"
    if not (final / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{run} has no finished classifier ({final}); continue it with --resume")
    peft = out.parent / "adapter"
    peft.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(final / "adapter_model.safetensors"))
    save_file({k.replace("base_model.model.layers.", "base_model.model.model.layers."): v for k, v in weights.items()},
              str(peft / "adapter_model.safetensors"))
    (peft / "adapter_config.json").write_text((final / "adapter_config.json").read_text())
    tmp = out.with_suffix(".tmp")
    export_gguf(peft, resolve_base(load_recipe(run).base), tmp, "f16")
    tmp.rename(out)
    return out


def ensure_trained(run: Path, root=None, threads: int | None = None, recipe: ClassifierRecipe | None = None) -> Path:
    """The run's finished classifier (its last pass's ``final``): trained, or its training continued, where needed
    (a new run folder gets ``recipe``, by default the default recipe; a started one keeps its own)."""
    run = Path(run)
    recipe = load_recipe(run) if (run / "recipe.json").is_file() else recipe or ClassifierRecipe()
    passes = [(recipe, run)] + ([(second_pass(recipe, run), run / "second")] if recipe.second else [])
    for r, folder in passes:
        if not (folder / "final" / "heads.safetensors").is_file():
            train_classifier(r, folder, resume=True, root=root, threads=threads)
    return passes[-1][1] / "final"
