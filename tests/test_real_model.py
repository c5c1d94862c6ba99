"""Opt-in: the packaged default model, end to end (about a minute on 2 cores).

    MENTALGLM_REAL_MODEL=1 python -m pytest -m realmodel
"""

from __future__ import annotations

import json
import os
import re

import pytest

from mentalglm.cli import main
from mentalglm.llm.catalog import DEFAULT_MODEL, REGISTRY, assemble_packaged

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(os.environ.get("MENTALGLM_REAL_MODEL") != "1",
                       reason="needs the packaged 1.1 GB model and a minute of CPU; set MENTALGLM_REAL_MODEL=1"),
]


def test_packaged_model_assembles_with_its_recorded_checksum():
    entry = REGISTRY[REGISTRY[DEFAULT_MODEL].base]
    path = assemble_packaged(entry)
    assert path.stat().st_size == entry.packaged.size


def test_analyze_prints_a_label_and_a_chinese_explanation_for_each_default_task(capsys):
    assert main(["analyze", "今天和朋友去吃了火锅，聊得特别开心，感觉生活还是很美好的"]) == 0
    out = capsys.readouterr().out
    for title in ("认知歪曲识别", "自杀风险识别", "情绪识别"):
        row = next(line for line in out.splitlines() if title in line)
        assert re.search(r"[\u4e00-\u9fff]{4,}", row.split(title, 1)[1]), row
    assert "积极" in out and "低自杀风险" in out


def test_the_default_model_scores_every_label_and_explains_the_chosen_one(tmp_path):
    out = tmp_path / "out.jsonl"
    post = "我真的撑不下去了，已经想好了怎么结束，明天就去做"
    assert main(["analyze", "--tasks", "suicide_risk,emotion", "--out", str(out), post]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    risk = rows[0]
    assert risk["model"] == DEFAULT_MODEL == "mentalglm-mini" and risk["high_risk"]  # a plan and a date: flagged
    assert abs(sum(risk["scores"].values()) - 1) < 1e-3
    assert risk["raw"].startswith(f"这篇帖子体现了{risk['labels'][0]}。理由：")  # the chosen label, explained
    assert re.search(r"[\u4e00-\u9fff]{6,}", risk["explanation"]) and risk["evidence_ok"] in (True, False)


def test_the_default_model_streams_the_same_answer_token_by_token(tmp_path):
    from mentalglm.analyze import AnalyzeConfig, Analyzer, Watcher
    from mentalglm.inputs import Post
    from mentalglm.llm.registry import open_backend

    class Pieces(Watcher):
        def __init__(self):
            self.decided_first, self.pieces = None, []

        def decided(self, analysis):
            self.decided_first = self.decided_first is None and not self.pieces

        def text(self, post_id, task, piece):
            self.pieces.append(piece)

    backend, style = open_backend(DEFAULT_MODEL)
    try:
        analyzer = Analyzer(backend, AnalyzeConfig(tasks=("suicide_risk",), style=style))
        post = Post("1", "最近总觉得活着没有意思，每天都很累，不想再坚持了")
        [whole] = analyzer.run([post])
        watch = Pieces()
        [streamed] = analyzer.run([post], watch)
    finally:
        backend.close()
    assert watch.decided_first is True  # the labels are told before any text
    assert "".join(watch.pieces) == streamed.raw and len(watch.pieces) > 10
    # The same start; the wording after it may differ from the first run's: a fresh prompt that llama.cpp partly
    # finds in its cache is evaluated in other batch sizes, and greedy decoding follows the rounding (pitfalls.md).
    lead = streamed.raw.split("理由：")[0]
    assert whole.raw.startswith(lead + "理由：") and lead == "这篇帖子体现了" + streamed.labels[0] + "。"
    assert (streamed.labels, streamed.scores, streamed.high_risk) == (whole.labels, whole.scores, whole.high_risk)
