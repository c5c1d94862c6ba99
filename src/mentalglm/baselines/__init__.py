"""Baselines scored by the same code as the LLMs: character n-gram TF-IDF + linear model, fine-tuned
transformer encoders, and zero-/few-shot LLMs. Each writes the predictions JSONL convention.

``make_baseline`` is the one place a fitted baseline's kind becomes its class, for ``mentalglm eval baseline``
and the suite's ngram and encoder systems alike."""

from __future__ import annotations

from dataclasses import fields
from typing import Callable

from ..tasks import TaskSpec


def _config(cls, settings: dict):
    return cls(**{f.name: settings[f.name] for f in fields(cls) if settings.get(f.name) is not None})


def _ngram(spec: TaskSpec, settings: dict):
    from .ngram import NgramBaseline, NgramConfig

    return NgramBaseline(spec, _config(NgramConfig, settings))


def _encoder(spec: TaskSpec, settings: dict):
    from .encoder import EncoderBaseline, EncoderConfig

    return EncoderBaseline(spec, _config(EncoderConfig, settings))


# kind -> (what it is, builder(spec, settings) -> an unfitted baseline with fit(train) and predictions(posts))
BASELINES: dict[str, tuple[str, Callable]] = {
    "ngram": ("char TF-IDF + linear SVM", _ngram),
    "encoder": ("BERT-family fine-tune", _encoder),
}


def make_baseline(kind: str, spec: TaskSpec, **settings):
    """An unfitted baseline of ``kind`` for ``spec``, configured by the ``settings`` that are fields of its config
    (NgramConfig, EncoderConfig; None keeps the config's default). Callers hand every kind the same settings and
    each takes its own. Nothing heavy is imported before it is asked for."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    return BASELINES[kind][1](spec, settings)


__all__ = ["BASELINES", "make_baseline"]
