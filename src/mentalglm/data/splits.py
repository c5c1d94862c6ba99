"""Stratified samples and splits with a fixed seed, and a check that no post sits in two splits.

Strata are the label sets; multi-label sets that occur fewer than ``min_count`` times are
pooled by their first label so every stratum can be split.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from typing import Sequence

from .records import Example


def normalize_text(text: str) -> str:
    """The form under which two posts count as the same: NFKC, lower case, no spaces or punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\s\W_]+", "", text)


def _strata(examples: Sequence[Example], min_count: int) -> dict[tuple, list[int]]:
    by_set = defaultdict(list)
    for i, e in enumerate(examples):
        by_set[e.labels].append(i)
    strata = defaultdict(list)
    for labels, idx in by_set.items():
        key = labels if len(idx) >= min_count else labels[:1]
        strata[key].extend(idx)
    return strata


def _allocate(sizes: dict, n: int) -> dict:
    """Largest-remainder allocation of n over strata in proportion to their sizes."""
    total = sum(sizes.values())
    raw = {k: n * s / total for k, s in sizes.items()}
    alloc = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (raw[k] - alloc[k], str(k)), reverse=True)[: n - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def stratified_sample(examples: Sequence[Example], n: int, seed: int = 13, min_count: int = 2) -> list[Example]:
    """n examples drawn in proportion to their label strata (all of them when n >= len)."""
    if n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    strata = _strata(examples, min_count)
    alloc = _allocate({k: len(v) for k, v in strata.items()}, n)
    chosen = []
    for key in sorted(strata, key=str):
        chosen.extend(rng.sample(strata[key], alloc[key]))
    return [examples[i] for i in sorted(chosen)]


def stratified_split(examples: Sequence[Example], fraction: float, seed: int = 13,
                     name: str = "val") -> tuple[list[Example], list[Example]]:
    """(rest, held-out) with the held-out part re-labelled ``split=name``; posts with the same
    normalised text stay on one side so no post leaks across."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[normalize_text(e.text)].append(i)
    firsts = [examples[idx[0]] for idx in groups.values()]
    held = stratified_sample(firsts, round(len(firsts) * fraction), seed=seed)
    held_keys = {normalize_text(e.text) for e in held}
    rest, out = [], []
    for e in examples:
        if normalize_text(e.text) in held_keys:
            out.append(Example(e.id, e.task, e.text, e.labels, name, e.source, e.explanation, e.meta))
        else:
            rest.append(e)
    return rest, out


def leaks(splits: dict[str, Sequence[Example]]) -> list[tuple[str, str, str]]:
    """(example id, first split, other split) for every post whose normalised text sits in two splits."""
    seen: dict[str, str] = {}
    found = []
    for split, examples in splits.items():
        for e in examples:
            key = normalize_text(e.text)
            if key in seen and seen[key] != split:
                found.append((e.id, seen[key], split))
            seen.setdefault(key, split)
    return found
