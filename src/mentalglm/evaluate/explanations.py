"""Explanation quality against reference explanations.

- ROUGE-1/2/L (F1) over *characters* for Chinese and words for Latin script. Never use
  ``rouge-score``'s default tokenizer here: it keeps only [a-z0-9] and turns every Chinese
  explanation into zero tokens, so every score is 0.
- chrF (sacrebleu), character n-grams, language-independent.
- BLEU (sacrebleu, sentence level with effective order, smoothed ``exp``), with sacrebleu's Chinese
  tokenizer ``zh`` (every CJK character a token) for Chinese and ``13a`` otherwise; its default
  ``13a`` would leave a Chinese explanation as a few long "words" and score it near 0.
- BERTScore (Zhang et al. 2020: greedy cosine matching of contextual token embeddings),
  computed with transformers from a *local* encoder folder, since no model hub is reachable.
- BARTScore (Yuan et al. 2021: mean token log-likelihood under BART, both directions), for
  English IMHI where a BART checkpoint folder (facebook/bart-large-cnn) is present;
  skipped with a message otherwise.

All scores are per post, then averaged; an empty candidate explanation scores 0.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import require
from ..llm.base import ModelUnavailable

_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])")
_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Chinese (and kana) one character per token; other scripts by words, lower-cased; no punctuation."""
    return _WORD.findall(_CJK.sub(r" \1 ", text.lower()))


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _prf(overlap: float, hyp: float, ref: float) -> float:
    if overlap == 0 or hyp == 0 or ref == 0:
        return 0.0
    p, r = overlap / hyp, overlap / ref
    return 2 * p * r / (p + r)


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    return _prf(sum((h & r).values()), sum(h.values()), sum(r.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyrö): O(len(b)) big-int
    operations instead of the O(len(a) * len(b)) table, which matters for thousands of explanations."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> float:
    return _prf(lcs_length(hyp, ref), len(hyp), len(ref))


_METRICS: dict = {}


def _sacrebleu(language: str):
    """(BLEU, chrF) scorers, made once per language: building them per post costs more than scoring."""
    if language not in _METRICS:
        from sacrebleu.metrics import BLEU, CHRF

        _METRICS[language] = (BLEU(tokenize="zh" if language == "zh" else "13a", effective_order=True), CHRF())
    return _METRICS[language]


def lexical_scores(candidate: str, reference: str, language: str = "zh") -> dict[str, float]:
    """ROUGE-1/2/L F1 (x100, like chrF and BLEU), BLEU and chrF of one explanation against its reference."""
    bleu, chrf = _sacrebleu(language)
    hyp, ref = tokenize(candidate), tokenize(reference)
    empty = not candidate.strip()
    return {"rouge1": 100 * rouge_n(hyp, ref, 1), "rouge2": 100 * rouge_n(hyp, ref, 2),
            "rougeL": 100 * rouge_l(hyp, ref), "bleu": 0.0 if empty else bleu.sentence_score(candidate, [reference]).score,
            "chrf": 0.0 if empty else chrf.sentence_score(candidate, [reference]).score}


def _local_folder(path: str | Path | None, what: str, example: str) -> Path:
    if not path or not Path(path).is_dir():
        raise ModelUnavailable(f"{what} needs a local model folder, got {str(path)!r}; no model hub is reachable "
                               f"here, so copy one in (e.g. `hf download {example} --local-dir DIR` on a "
                               f"connected machine) and pass DIR")
    return Path(path)


class BertScorer:
    """BERTScore P/R/F1 with any local encoder folder (no IDF weighting, no baseline rescaling).

    ``layer``: which hidden layer to embed with (default: the last). The ``bert_score`` package
    uses a tuned layer per model; pass it here to reproduce its numbers."""

    def __init__(self, model_path: str | Path, layer: int | None = None, batch_size: int = 16,
                 max_length: int = 512):
        for module in ("torch", "transformers"):
            require(module, "train", "BERTScore")
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = _local_folder(model_path, "BERTScore", "bert-base-chinese")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.layer, self.batch_size, self.max_length = layer, batch_size, max_length
        self._torch = torch

    def _embed(self, texts: Sequence[str]) -> list:
        torch = self._torch
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt",
                                   return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            with torch.no_grad():
                result = self.model(**batch, output_hidden_states=self.layer is not None)
            hidden = result.hidden_states[self.layer] if self.layer is not None else result.last_hidden_state
            keep = batch["attention_mask"].bool() & ~special  # [CLS]/[SEP]/padding carry no content
            for row in range(hidden.shape[0]):
                vectors = hidden[row][keep[row]]
                out.append(torch.nn.functional.normalize(vectors, dim=-1))
        return out

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        return self.score_embedded(self._embed(candidates), self._embed(references))

    def score_embedded(self, candidates: list, references: list) -> list[dict[str, float]]:
        """``score`` of texts already embedded (``_embed``): several candidate sets against references embedded once."""
        scores = []
        for c, r in zip(candidates, references):
            if len(c) == 0 or len(r) == 0:
                scores.append({"bertscore_p": 0.0, "bertscore_r": 0.0, "bertscore_f1": 0.0})
                continue
            sim = c @ r.T
            p, rec = float(sim.max(1).values.mean()), float(sim.max(0).values.mean())
            f1 = 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
            scores.append({"bertscore_p": 100 * p, "bertscore_r": 100 * rec, "bertscore_f1": 100 * f1})
        return scores


class BartScorer:
    """BARTScore: mean log-likelihood per target token under a seq2seq model, reference -> candidate
    (precision), candidate -> reference (recall), and their mean (F, as in the BARTScore paper)."""

    def __init__(self, model_path: str | Path, batch_size: int = 8, max_length: int = 1024):
        for module in ("torch", "transformers"):
            require(module, "train", "BARTScore")
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        folder = _local_folder(model_path, "BARTScore", "facebook/bart-large-cnn")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder, local_files_only=True).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self._torch = torch

    def _loglik(self, sources: Sequence[str], targets: Sequence[str]) -> list[float]:
        torch = self._torch
        out = []
        for start in range(0, len(sources), self.batch_size):
            src = self.tokenizer(list(sources[start:start + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            tgt = self.tokenizer(text_target=list(targets[start:start + self.batch_size]), padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
            with torch.no_grad():
                logits = self.model(input_ids=src["input_ids"], attention_mask=src["attention_mask"],
                                    labels=labels).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            mask = labels != -100
            picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
            out.extend((picked.sum(1) / mask.sum(1).clamp(min=1)).tolist())
        return out

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        precision = self._loglik(references, candidates)
        recall = self._loglik(candidates, references)
        return [{"bartscore_p": p, "bartscore_r": r, "bartscore_f": (p + r) / 2} for p, r in zip(precision, recall)]


@dataclass
class ExplanationScores:
    n: int  # pairs scored (posts with a reference explanation)
    empty: int  # of those, candidates without an explanation (scored 0)
    means: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    skipped: list[str] = field(default_factory=list)  # metrics not computed, and why
    per_item: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self, items: bool = False) -> dict:
        d = {"n": self.n, "empty": self.empty, "means": self.means,
             "intervals": {k: list(v) for k, v in self.intervals.items()}, "skipped": self.skipped}
        if items:
            d["per_item"] = self.per_item
        return d


def _mean_intervals(per_item: list[dict[str, float]], resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    if not per_item or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_item), size=(resamples, len(per_item)))
    out = {}
    for key in per_item[0]:
        values = np.array([row[key] for row in per_item])
        means = values[idx].mean(1)
        out[key] = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    return out


def score_explanations(candidates: Sequence[str], references: Sequence[str], *,
                       bertscore_model: str | None = None, bertscore_layer: int | None = None,
                       bartscore_model: str | None = None, language: str = "zh",
                       resamples: int = 1000, seed: int = 13) -> ExplanationScores:
    """Every explanation metric that can run here; the others are listed in ``skipped`` with the reason."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    per_item = [lexical_scores(c, r, language) for c, r in zip(candidates, references)]
    skipped = []
    if bertscore_model:
        for row, extra in zip(per_item, BertScorer(bertscore_model, bertscore_layer).score(candidates, references)):
            row.update(extra)
    else:
        skipped.append("BERTScore: no --bertscore-model folder given (any local encoder, e.g. bert-base-chinese)")
    if language != "en":
        skipped.append("BARTScore: English only (BART is an English model); used for English IMHI")
    elif bartscore_model and Path(bartscore_model).is_dir():
        scores = BartScorer(bartscore_model).score(candidates, references)
        for row, extra in zip(per_item, scores):
            row.update(extra)
    else:
        skipped.append(f"BARTScore: checkpoint folder {bartscore_model or '(none given)'} not found; pass "
                       "--bartscore-model with a local copy of facebook/bart-large-cnn")
    means = {k: float(np.mean([row[k] for row in per_item])) for k in (per_item[0] if per_item else {})}
    return ExplanationScores(len(per_item), sum(1 for c in candidates if not c.strip()), means,
                             _mean_intervals(per_item, resamples, seed), skipped, per_item)


def other_post_control(references: Sequence[str], resamples: int = 1000, seed: int = 13) -> ExplanationScores:
    """Lexical scores of each reference against the reference of *another* post (the next one): the level
    that templated wording reaches without being about the post. Read every candidate score against it."""
    refs = list(references)
    if len(refs) < 2:
        raise ValueError("the control needs at least two reference explanations")
    return score_explanations(refs[1:] + refs[:1], refs, resamples=resamples, seed=seed)
