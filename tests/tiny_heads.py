"""Label heads trained in seconds over the tiny GGUF, on a small keyword-labelled corpus.

Real code end to end: hidden states read by ``prompt_state`` through llama.cpp, heads fitted out of fold by
``fit_head``, written with a manifest by ``write_heads_folder``. The tiny model's states are noise; the
character part of the heads learns the keywords, which is enough to check behaviour.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from mentalglm.data.records import Example
from mentalglm.heads import file_sha256
from mentalglm.heads.build import write_heads_folder
from mentalglm.heads.features import StateCache, extract_states
from mentalglm.heads.fit import fit_head

FILLER = ["今天", "最近", "工作", "学校", "朋友", "家里", "晚上", "周末", "天气", "路上"]
CUES = {
    "suicide_risk": {"高自杀风险": "不想活了", "低自杀风险": "有点累"},
    "emotion": {"积极": "很开心", "愤怒": "气死了", "悲伤": "好难过", "恐惧": "好害怕", "惊奇": "没想到",
                "无情绪": "通知一下"},
    "cognitive_distortion": {"读心术": "他们一定讨厌我", "乱贴标签": "我就是个废物", "以偏概全": "总是这样"},
}


def corpus(task: str, n: int = 36, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    cues = list(CUES[task].items())
    out = []
    for i in range(n):
        label, cue = cues[i % len(cues)]
        labels = (label,)
        text = f"{rng.choice(FILLER)}{cue}{rng.choice(FILLER)}"
        if task == "cognitive_distortion" and i % 4 == 3:  # some posts show two distortions
            other, other_cue = cues[(i + 1) % len(cues)]
            labels, text = tuple(sorted({label, other})), text + other_cue
        out.append(Example(f"{task}-{i}", task, text, labels, "train", "tiny"))
    return out


def build_tiny_heads(backend, folder: Path, tasks=("suicide_risk", "emotion", "cognitive_distortion"),
                     base: dict | None = None, pool: str = "last") -> Path:
    """Heads over ``backend``'s states read with ``pool``; ``base``: the manifest's base model (default:
    ``backend``'s file)."""
    heads = {}
    cache = StateCache(folder.parent / f"{folder.name}-states", {"base": backend.name})
    for task in tasks:
        examples = corpus(task)
        states = extract_states(backend, cache, task, "train", examples, pool=pool)
        texts, gold = [e.text for e in examples], [e.labels for e in examples]
        heads[task] = fit_head(task, texts, gold, texts, states, gold, folds=3, C_grid=(0.1,),
                               ngram_C_grid=(10.0,)).head
        heads[task].pool = pool
    manifest = {"name": "tiny-heads", "base": base or {"name": backend.name, "sha256": file_sha256(backend.path)}}
    return write_heads_folder(folder, heads, manifest)


def probabilities_sum_to_one(scores: dict) -> bool:
    return bool(np.isclose(sum(scores.values()), 1.0, atol=1e-3))
