"""Heads that read a middle block: the GGUF copy cut after it (llm/truncate.py) returns exactly that block's state,
and `analyze` reads the heads' states from the copy while the full model writes the explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.heads import load_heads
from mentalglm.inputs import Post
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.llm.truncate import block_count, shallow_copy, truncate_gguf
from mentalglm.prompts import heads_request
from mentalglm.tasks import get_task
from serve_helpers import tiny_llama  # noqa: F401  (fixture)
from tiny_heads import build_tiny_heads
from tiny_models import build_tiny_gguf

POSTS = ["最近工作不想活了路上", "周末很开心朋友"]


@pytest.fixture(scope="module")
def cut(tiny_gguf_path, tmp_path_factory):
    return truncate_gguf(tiny_gguf_path, tmp_path_factory.mktemp("cut") / "L1.gguf", 1)


def state(path, request) -> np.ndarray:
    backend = LlamaCppBackend(path, n_ctx=512, n_threads=1)
    try:
        return backend.prompt_state(request)
    finally:
        backend.close()


def test_the_cut_copy_returns_the_state_of_its_last_kept_block(tiny_gguf_path, cut, tmp_path):
    # The tiny builder draws block 0 first with the same seed: a one-block build is the two-block one cut after it.
    one_block = build_tiny_gguf(tmp_path / "one.gguf", n_layers=1)
    request = heads_request(get_task("emotion"), POSTS[0])
    assert block_count(tiny_gguf_path) == 2 and block_count(cut) == 1
    assert np.allclose(state(cut, request), state(one_block, request), atol=1e-5)
    assert not np.allclose(state(cut, request), state(tiny_gguf_path, request), atol=1e-2)


def test_shallow_copy_is_made_once_in_the_cache_and_refuses_impossible_depths(tiny_gguf_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path))
    assert shallow_copy(tiny_gguf_path, None) == tiny_gguf_path
    assert shallow_copy(tiny_gguf_path, 2) == tiny_gguf_path  # every block: the file itself
    first = shallow_copy(tiny_gguf_path, 1)
    assert first.parent == tmp_path / "models" and block_count(first) == 1
    made = first.stat().st_mtime_ns
    assert shallow_copy(tiny_gguf_path, 1) == first and first.stat().st_mtime_ns == made
    # with the base's sha256 known (a heads manifest's), an existing copy is found without reading the base at all
    sha = first.name.split("-L")[0]
    assert shallow_copy(tmp_path / "gone.gguf", 1, sha) == first
    with pytest.raises(ValueError, match="has 2 blocks; cannot keep 3"):
        shallow_copy(tiny_gguf_path, 3)


def test_analyze_reads_the_heads_states_from_the_copy_and_explains_with_the_full_model(
        tiny_llama, tiny_gguf_path, cut, tmp_path, monkeypatch):  # noqa: F811
    from mentalglm.heads import file_sha256

    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path / "cache"))
    reader = LlamaCppBackend(cut, n_ctx=512, n_threads=1)
    folder = build_tiny_heads(reader, tmp_path / "heads", tasks=("suicide_risk",),
                              base={"name": "tiny", "sha256": file_sha256(tiny_gguf_path), "layers": 1})
    spec = get_task("suicide_risk")
    want = [load_heads(folder).head("suicide_risk").probabilities(p, reader.prompt_state(heads_request(spec, p)))
            for p in POSTS]
    reader.close()
    config = AnalyzeConfig(tasks=("suicide_risk",), style="heads", heads=str(folder), max_tokens=8)
    analyzer = Analyzer(tiny_llama, config)
    assert analyzer.state_model is not tiny_llama and block_count(analyzer.state_model.path) == 1
    rows = analyzer.run([Post(f"p{i}", p) for i, p in enumerate(POSTS)])
    for row, p in zip(rows, want):
        assert row.parse_status == "ok" and row.model == tiny_llama.name
        assert np.allclose([row.scores[lab] for lab in spec.label_names], p, atol=1e-4)
        assert row.raw.startswith(spec.label_sentence(row.labels))  # the full model wrote after the label
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert load_heads(folder).layers == manifest["base"]["layers"] == 1


def test_heads_reading_the_posts_mean_read_each_post_once_for_every_task(tiny_llama, tmp_path):  # noqa: F811
    tasks = ("suicide_risk", "emotion", "cognitive_distortion")
    folder = build_tiny_heads(tiny_llama, tmp_path / "heads", tasks=tasks, pool="mean")
    headset = load_heads(folder)
    assert {headset.head(t).pool for t in tasks} == {"mean"} and headset.head("emotion").hidden_size == 64

    class Counted:  # the tiny model, counting the prompts whose state it reads
        def __init__(self, inner):
            self.inner, self.read = inner, []

        def prompt_states(self, requests, mean_of, mean_only=False):
            self.read += list(mean_of)
            return self.inner.prompt_states(requests, mean_of, mean_only)

    analyzer = Analyzer(tiny_llama, AnalyzeConfig(tasks=tasks, style="heads", heads=str(folder), explain=False))
    analyzer.state_model = counted = Counted(tiny_llama)
    rows = analyzer.run([Post(f"p{i}", p) for i, p in enumerate(POSTS)])
    assert sorted(counted.read) == sorted(POSTS)  # one read a post, not one a (post, task)
    for row in rows:
        mean = tiny_llama.prompt_state(heads_request(get_task(row.task), POSTS[int(row.id[1:])]),
                                       POSTS[int(row.id[1:])])[64:]
        want = headset.head(row.task).probabilities(POSTS[int(row.id[1:])], mean)
        assert np.allclose([row.scores[lab] for lab in get_task(row.task).label_names], want, atol=1e-4)
