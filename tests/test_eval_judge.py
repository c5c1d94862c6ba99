"""The LLM judge: robust parsing of real-looking answers, and a real (random, tiny) model whose gibberish is
reported as invalid instead of being turned into scores."""

import json

import pytest

from mentalglm.cli import main
from mentalglm.evaluate.judge import CRITERIA, Judge, build_judge_request, parse_judgement, summarize
from mentalglm.tasks import get_task

SPEC = get_task("suicide_risk")
FULL = {"consistent": 3, "grounded": 2, "professional": 2, "fluent": 3}


@pytest.mark.parametrize("raw", [
    json.dumps({c: {"score": s, "reason": "理由"} for c, s in FULL.items()}, ensure_ascii=False),
    "```json\n" + json.dumps({c: {"score": s, "reason": "ok"} for c, s in FULL.items()}) + "\n```\n以上是评分。",
    "评分如下：" + json.dumps({"与标签一致": {"分数": 3, "理由": "支持标签"}, "基于帖子": 2, "专业合理": "2",
                               "表达流畅": {"score": 3}}, ensure_ascii=False),
    "consistent: 3 - argues for the label\ngrounded: 2, quotes the post\nprofessional：2分 审慎\n**fluent**: 3/3 clear",
])
def test_parses_json_fenced_chinese_keys_and_lines(raw):
    scores, reasons, error = parse_judgement(raw)
    assert error == ""
    assert scores == FULL
    assert set(reasons) == set(CRITERIA)


@pytest.mark.parametrize("raw, error", [
    ("", "empty judge answer"),
    ("这个解释还不错。", "no JSON object or 'criterion: score' lines found"),
    ('{"consistent": 3, "grounded": 2, "fluent": 3}', "no score for professional"),
    ('{"consistent": 4, "grounded": 2, "professional": 2, "fluent": 3}',
     "score of consistent is 4, not a whole number from 0 to 3"),
    ('{"consistent": 2.5, "grounded": 2, "professional": 2, "fluent": 3}',
     "score of consistent is 2.5, not a whole number from 0 to 3"),
    ('{"consistent": "high", "grounded": 2, "professional": 2, "fluent": 3}',
     "score of consistent is not a number: 'high'"),
])
def test_unusable_answers_are_invalid_with_a_reason(raw, error):
    assert parse_judgement(raw) == ({}, {}, error)


def test_prompt_states_the_rubric_post_label_and_format():
    request = build_judge_request(SPEC, "我不想活了", ["高自杀风险"], "帖子直接表达了轻生的念头。")
    user = request.messages[-1]["content"]
    for needle in ("我不想活了", "高自杀风险", "帖子直接表达了轻生的念头。", "与标签一致", "基于帖子", "专业合理",
                   "表达流畅", '"consistent": {"score": 0-3'):
        assert needle in user


def test_tiny_random_model_output_is_reported_invalid(tiny_hf_backend):
    items = [("a", "我最近很难过，因为考试失败了。", ["低自杀风险"], "帖子表达了难过，但没有自杀意图。"),
             ("b", "我不想活了。", ["高自杀风险"], "帖子直接表达了轻生的念头。"),
             ("c", "今天很开心。", ["低自杀风险"], "")]
    results = Judge(tiny_hf_backend, max_tokens=32).judge(SPEC, items)
    assert [r.id for r in results] == ["a", "b", "c"]
    for r in results[:2]:
        assert r.raw  # the model did answer ...
        assert r.status == "invalid" and r.scores == {} and r.error  # ... but no score is invented
    assert results[2].error == "no explanation to judge" and results[2].raw == ""
    summary = summarize(results)
    assert summary == {"n": 3, "valid": 0, "invalid_rate": 1.0, "means": {c: None for c in CRITERIA}}


def test_cli_judge_writes_and_resumes(tmp_path, tiny_hf_model_dir, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"p{i}", "labels": ["低自杀风险"], "text": "我最近很难过。"},
                                       ensure_ascii=False) + "\n" for i in range(3)), encoding="utf-8")
    preds = tmp_path / "pred.jsonl"
    preds.write_text("".join(json.dumps({"id": f"p{i}", "task": "suicide_risk", "labels": ["低自杀风险"],
                                         "explanation": "帖子表达了难过。", "raw": "", "parse_status": "ok"},
                                        ensure_ascii=False) + "\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "judge.jsonl"
    args = ["eval", "judge", str(preds), "--gold", str(gold), "--model", str(tiny_hf_model_dir), "--out", str(out),
            "--judge-max-tokens", "16"]
    assert main([*args, "--limit", "2"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0", "p1"]
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "p2", "sta')  # a run killed mid-line
    assert main(args) == 0  # resumes: the torn line is cut, only p2 is judged
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2"]
    assert all(r["status"] == "invalid" and r["error"] for r in rows)
    assert "invalid 100.0%" in capsys.readouterr().out.replace("\n", " ")
    other = tmp_path / "other.jsonl"
    other.write_text(preds.read_text(encoding="utf-8"), encoding="utf-8")
    assert main([str(other) if a == str(preds) else a for a in args]) == 2  # judgements of another file
    report = tmp_path / "report"
    assert main(["eval", "report", f"tiny={preds}", "--gold", str(gold), "--judge", f"tiny={out}", "--out",
                 str(report), "--resamples", "0"]) == 0
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "LLM judge" in text and "| tiny | — | — | — | — | 100.0 | 3 |" in text


def test_judgements_stream_in_groups_of_the_backend_batch_size():
    from mentalglm.llm.base import Backend, Generation

    class Rater(Backend):
        name, context_length, batch_size = "rater", 4096, 2

        def __init__(self):
            self.calls = []

        def generate(self, requests, config):
            self.calls.append(len(requests))
            answer = {c: {"score": 2, "reason": "ok"} for c in CRITERIA}
            return [Generation(json.dumps(answer)) for _ in requests]

        def count_tokens(self, text):
            return len(text)

    backend = Rater()
    items = [(f"p{i}", "我很累", ["低自杀风险"], "帖子说“我很累”。" if i != 1 else "") for i in range(4)]
    results = list(Judge(backend, max_tokens=32).stream(SPEC, items))
    assert backend.calls == [1, 2]  # p0 (p1 has no explanation to judge), then p2 and p3
    assert [r.id for r in results] == ["p0", "p1", "p2", "p3"]
    assert [r.status for r in results] == ["ok", "invalid", "ok", "ok"]
