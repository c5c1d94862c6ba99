"""Fine-tune a transformer encoder (BERT family) as a classifier: the paper's discriminative baselines.

Any sequence-classification-capable encoder by HF id or local folder: ``bert-base-chinese``,
``hfl/chinese-macbert-base``, Chinese MentalBERT (``zwzzz/Chinese-MentalBERT``). Single-label tasks
use softmax cross-entropy; multi-label tasks use one sigmoid per label (BCE) and predict every
label above 0.5, or the top one when the task has no "no label" answer. No model hub is
reachable here: pass a folder downloaded elsewhere (``hf download <id> --local-dir DIR``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..data.records import Example
from ..errors import require
from ..evaluate.predictions import Prediction
from ..llm.base import ModelUnavailable
from ..tasks import OK, TaskSpec

log = logging.getLogger("mentalglm")

# What the encoder baseline imports, all in the 'train' extra (the Trainer of fit() needs accelerate).
NEEDS = ("torch", "transformers", "accelerate")
FEATURE = "the encoder baseline"


@dataclass(frozen=True)
class EncoderConfig:
    model: str = "bert-base-chinese"
    output_dir: str = "runs/encoder"
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (tests, smoke runs)
    learning_rate: float = 2e-5
    batch_size: int = 16
    max_length: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 13


class _Encoded:
    """A torch-style dataset of tokenised posts and their label targets."""

    def __init__(self, encodings: dict, targets: list):
        self.encodings, self.targets = encodings, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        import torch

        item = {k: torch.tensor(v[i]) for k, v in self.encodings.items()}
        target = self.targets[i]
        item["labels"] = torch.tensor(target, dtype=torch.float if isinstance(target, list) else torch.long)
        return item


def _load(spec: TaskSpec, model: str):
    for module in NEEDS:
        require(module, "train", FEATURE)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = spec.label_names
    kwargs = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                  problem_type="multi_label_classification" if spec.multi_label else "single_label_classification")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForSequenceClassification.from_pretrained(model, **kwargs)
    except OSError as e:
        raise ModelUnavailable(f"encoder {model!r} could not be loaded ({str(e).splitlines()[0]}). No model hub is "
                               f"reachable here: run `hf download {model} --local-dir DIR` on a connected machine, "
                               "copy DIR here and pass it as the model") from None
    return tokenizer, network


class EncoderBaseline:
    def __init__(self, spec: TaskSpec, config: EncoderConfig = EncoderConfig()):
        self.spec, self.config = spec, config
        self.tokenizer, self.model = _load(spec, config.model)

    def _targets(self, examples: Sequence[Example]) -> list:
        index = {n: i for i, n in enumerate(self.spec.label_names)}
        if self.spec.multi_label:
            return [[1.0 if n in e.labels else 0.0 for n in self.spec.label_names] for e in examples]
        return [index[e.labels[0]] for e in examples]

    def _dataset(self, examples: Sequence[Example]) -> _Encoded:
        enc = self.tokenizer([e.text for e in examples], truncation=True, max_length=self.config.max_length)
        return _Encoded(dict(enc), self._targets(examples))

    def fit(self, examples: Sequence[Example]) -> "EncoderBaseline":
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        import torch

        c = self.config
        # A GPU when there is one (a base-size encoder is slow to fine-tune on a CPU); transformers 5 dropped
        # no_cuda, and use_cpu=True would force the CPU even beside a GPU.
        args = TrainingArguments(
            output_dir=c.output_dir, num_train_epochs=c.epochs, max_steps=c.max_steps, learning_rate=c.learning_rate,
            per_device_train_batch_size=c.batch_size, weight_decay=c.weight_decay,
            warmup_steps=c.warmup_ratio, seed=c.seed, data_seed=c.seed, save_strategy="no", eval_strategy="no",
            logging_steps=10, report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=False)
        trainer = Trainer(model=self.model, args=args, train_dataset=self._dataset(examples),
                          data_collator=DataCollatorWithPadding(self.tokenizer))
        trainer.train()
        self.model = trainer.model
        return self

    def save(self, folder: str | Path | None = None) -> Path:
        """The fine-tuned model and tokenizer, loadable later as ``EncoderConfig(model=folder)``."""
        folder = Path(folder or Path(self.config.output_dir) / "model")
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[tuple[str, ...]]:
        import torch

        names = self.spec.label_names
        self.model.eval()
        device = next(self.model.parameters()).device  # where Trainer left it (a GPU when there is one)
        out: list[tuple[str, ...]] = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start:start + batch_size]), truncation=True, padding=True,
                                   max_length=self.config.max_length, return_tensors="pt").to(device)
            with torch.no_grad():
                logits = self.model(**batch).logits
            for row in logits:
                if not self.spec.multi_label:
                    out.append((names[int(row.argmax())],))
                    continue
                chosen = [n for n, p in zip(names, torch.sigmoid(row).tolist()) if p > 0.5]
                if not chosen and not self.spec.empty_sentence:
                    chosen = [names[int(row.argmax())]]
                out.append(self.spec.normalize_labels(chosen))
        return out

    def predictions(self, examples: Sequence[Example]) -> list[Prediction]:
        name = f"encoder:{Path(self.config.model).name}"
        return [Prediction(e.id, self.spec.name, labels, OK, model=name)
                for e, labels in zip(examples, self.predict([e.text for e in examples]))]
