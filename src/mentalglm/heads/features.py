"""Hidden states of the frozen base model at the end of the ``heads`` prompt, cached as they are made.

Reading a state costs one prompt evaluation (about 0.7 s a post for the 1.5B model on 2 cores),
so the training posts of four corpora take an hour: the cache writes a chunk file every
``chunk`` posts and a restarted run continues after the last finished chunk. A cache belongs to
one base model and one prompt; ``settings.json`` records them and a mismatch is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.records import Example
from ..llm.base import batches
from ..prompts import heads_request
from ..tasks import get_task

# Posts longer than this are cut for the heads (p99 of the training corpora is under 300 characters);
# training and analysis cut the same way, so a state always means the same thing.
POST_CHARS = 512


def head_text(text: str) -> str:
    return text.strip()[:POST_CHARS]


class CacheMismatch(RuntimeError):
    pass


# How a post's state is read (``LlamaCppBackend.prompt_state``): "last" is the last prompt token's state;
# "last+mean" adds the mean state of the post's tokens after it (twice the size); "mean" is that mean alone, the
# same for every task of a post (the post comes before the task's question), so one read serves them all. "post"
# is the last token's state of the post read alone, by a classifier adapter trained to label from it
# (train/classifier.py; ``LlamaCppBackend.text_states``): one read for every task too.
POOLS = ("last", "mean", "last+mean", "post")
PER_POST = ("mean", "post")  # pools whose state is the same for every task of a post
# The tokens of a post a classifier reads (training cuts the same way; p99 of the corpora is under 160).
POST_TOKENS = 160


def mean_of(text: str, pool: str) -> str | None:
    """What ``prompt_state`` averages for a post read with ``pool``: the post, or nothing."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; use one of {POOLS}")
    return None if pool in ("last", "post") else text


def post_states(backend, texts: Sequence[str], requests, pool: str) -> list[np.ndarray]:
    """The per-post states (``PER_POST`` pools) of ``texts``; ``requests`` are their prompts (any task's)."""
    if pool == "post":
        return backend.text_states(list(texts), POST_TOKENS)
    return backend.prompt_states(list(requests), list(texts), mean_only=True)


def pooled(state: np.ndarray, pool: str) -> np.ndarray:
    """The part of a last+mean ``state`` that ``pool`` reads."""
    half = len(state) // 2
    return {"last": state[:half], "mean": state[half:], "last+mean": state}[pool]


class StateCache:
    """``<folder>/<pool>/<task>/<split>/NNNNN.npz`` chunks, each with ``ids`` and ``states``."""

    def __init__(self, folder: str | os.PathLike, settings: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "settings.json"
        if marker.exists():
            old = json.loads(marker.read_text(encoding="utf-8"))
            differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if differ:
                raise CacheMismatch(f"{self.folder} holds states made with other settings ({', '.join(differ)}: "
                                    f"{[old.get(k) for k in differ]} vs {[settings.get(k) for k in differ]}); "
                                    "use another folder or delete it")
        else:
            marker.write_text(json.dumps(settings, ensure_ascii=False, indent=1), encoding="utf-8")

    def _dir(self, task: str, split: str, pool: str) -> Path:
        return self.folder / pool / task / split

    def load(self, task: str, split: str, pool: str = "last") -> dict[str, np.ndarray]:
        """The cached states of ``pool``, and those of "last+mean" cut to ``pool``'s part (one read serves all)."""
        out = self._load(task, split, "last+mean")
        if pool != "last+mean":
            out = {k: pooled(v, pool) for k, v in out.items()} | self._load(task, split, pool)
        return out

    def _load(self, task: str, split: str, pool: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for part in sorted(self._dir(task, split, pool).glob("*.npz")):
            with np.load(part) as z:
                out.update(zip(z["ids"].tolist(), z["states"]))
        return out

    def add(self, task: str, split: str, ids: Sequence[str], states: np.ndarray, pool: str = "last") -> None:
        folder = self._dir(task, split, pool)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.glob("*.npz")))
        tmp = folder / f".{n:05d}.tmp.npz"
        np.savez(tmp, ids=np.array(ids, dtype=str), states=states.astype(np.float32))
        os.replace(tmp, folder / f"{n:05d}.npz")  # atomic: a killed run never leaves half a chunk


def extract_states(backend, cache: StateCache, task: str, split: str, examples: Sequence[Example],
                   chunk: int = 32, progress=None, pool: str = "last") -> np.ndarray:
    """States of ``examples`` in their order, computing only those the cache lacks.

    ``progress(done, total)`` is called after every post."""
    spec = get_task(task)
    have = cache.load(task, split, pool)
    todo = [e for e in examples if e.id not in have]
    done = len(examples) - len(todo)
    if progress:
        progress(done, len(examples))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        texts = [head_text(e.text) for e in part]
        states = []
        for group in batches(texts, backend.batch_size):  # read together where the backend can
            requests = [heads_request(spec, t) for t in group]
            states += post_states(backend, group, requests, pool) if pool in PER_POST else \
                backend.prompt_states(requests, [mean_of(t, pool) for t in group])
            done += len(group)
            if progress:
                progress(done, len(examples))
        cache.add(task, split, [e.id for e in part], np.stack(states), pool)
        have.update(zip((e.id for e in part), states))
    return np.stack([have[e.id] for e in examples])
