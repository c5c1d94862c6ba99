"""`analyze` end to end on a real (tiny, random) GGUF through llama.cpp: inputs, output rows, resume,
bad input that never kills a batch, redaction before the model, truncation, the high-risk flag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mentalglm.analyze import AnalyzeConfig, Analyzer, completed_pairs
from mentalglm.cli import main
from mentalglm.inputs import Post
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.safety import redact

TASKS = ["cognitive_distortion", "suicide_risk", "emotion"]
FIELDS = {"id", "task", "labels", "explanation", "raw", "parse_status", "model", "latency_ms"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def backend(tiny_gguf_path):
    b = LlamaCppBackend(tiny_gguf_path, n_ctx=2048)
    yield b
    b.close()


def test_csv_with_bad_rows_finishes_and_names_every_bad_row(tiny_gguf_path, tmp_path):
    posts = tmp_path / "posts.csv"
    posts.write_bytes("id,content\na1,我最近总是失眠，觉得自己一无是处\na2,\n".encode()
                      + "a3,".encode() + "坏编码".encode("gbk") + b"\n" + "a4,今天很开心\n".encode())
    out = tmp_path / "out.jsonl"
    code = main(["analyze", "--file", str(posts), "--out", str(out), "--model", str(tiny_gguf_path),
                 "--n-ctx", "2048", "--max-tokens", "8"])
    assert code == 0
    rows = _rows(out)
    assert {(r["id"], r["task"]) for r in rows} == {(i, t) for i in ("a1", "a2", "a3", "a4") for t in TASKS}
    assert all(FIELDS <= r.keys() for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["a2"]["parse_status"] == "error" and "line 3: empty post" in by_id["a2"]["error"]
    assert by_id["a3"]["parse_status"] == "error" and "line 4: not valid UTF-8" in by_id["a3"]["error"]
    good = [r for r in rows if r["id"] in ("a1", "a4")]
    assert all(r["parse_status"] in ("ok", "fallback", "invalid") and r["model"] == "tiny.gguf" for r in good)
    # a random model rarely writes a label: an unparseable answer is invalid with a reason, never a default class
    for r in good:
        assert (r["parse_status"] == "invalid") == (r["labels"] == [])
        if r["parse_status"] == "invalid":
            assert any("did not parse" in w for w in r["warnings"])


def test_missing_column_is_fatal_with_the_column_named(tiny_gguf_path, tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("id,body\n1,好累\n", encoding="utf-8")
    code = main(["analyze", "--file", str(posts), "--text-column", "text", "--model", str(tiny_gguf_path)])
    assert code == 2
    assert "no text column 'text'; columns are ['id', 'body']" in capsys.readouterr().err


def test_existing_output_needs_resume_or_overwrite(tiny_gguf_path, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "1", "task": "emotion"}\n', encoding="utf-8")
    assert main(["analyze", "好累", "--out", str(out), "--model", str(tiny_gguf_path)]) == 2
    assert "--resume" in capsys.readouterr().out


def test_resume_after_a_torn_write_redoes_nothing_and_loses_nothing(tiny_gguf_path, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(f"第{i}条：今天心情{'很好' if i % 2 else '很差'}" for i in range(6)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["analyze", "--file", str(posts), "--out", str(out), "--model", str(tiny_gguf_path), "--n-ctx", "2048",
            "--max-tokens", "8", "--tasks", "emotion,suicide_risk"]
    assert main(args) == 0
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(full) == 12
    out.write_text("".join(full[:5]) + full[5][:17], encoding="utf-8")  # killed mid-line
    assert completed_pairs(out) == {(json.loads(l)["id"], json.loads(l)["task"]) for l in full[:5]}
    assert main(args + ["--resume"]) == 0
    resumed = _rows(out)
    assert len(resumed) == 12 and len({(r["id"], r["task"]) for r in resumed}) == 12
    assert out.read_text(encoding="utf-8").splitlines(keepends=True)[:5] == full[:5]  # earlier rows untouched
    # greedy decoding: the redone rows equal the uninterrupted run's
    assert sorted(map(json.dumps, [dict(r, latency_ms=0) for r in resumed])) == \
        sorted(map(json.dumps, [dict(json.loads(l), latency_ms=0) for l in full]))


def test_a_killed_process_resumes_without_repeating(tiny_gguf_path, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(f"帖子{i}：我有点累" for i in range(40)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "mentalglm.cli", "analyze", "--file", str(posts), "--out", str(out),
           "--model", str(tiny_gguf_path), "--n-ctx", "2048", "--max-tokens", "24", "--tasks", "emotion", "--chunk", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(completed_pairs(out))
    assert 5 <= before < 40, "the run should have been killed midway"
    subprocess.run(cmd + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 41)]


class SpyBackend:
    """The real backend, recording what reaches it (to check redaction); not a stand-in."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.name, self.context_length = inner.name, inner.context_length

    def generate(self, requests, config):
        self.seen.extend(m["content"] for r in requests for m in r.messages)
        return self.inner.generate(requests, config)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def close(self):
        pass


def test_redaction_happens_before_the_model(backend):
    spy = SpyBackend(backend)
    post = "联系我 13812345678 或 someone@example.com，@小明 知道我的身份证 110101199003074514"
    Analyzer(spy, AnalyzeConfig(tasks=("emotion",), redact=True, max_tokens=4)).analyze(post)
    prompt = "\n".join(spy.seen)
    for secret in ("13812345678", "someone@example.com", "@小明", "110101199003074514"):
        assert secret not in prompt
    assert "[手机号]" in prompt and "[邮箱]" in prompt and "[用户]" in prompt and "[身份证号]" in prompt


def test_redact_keeps_ordinary_text():
    assert redact("我今年23岁，考了100分") == "我今年23岁，考了100分"


def test_over_long_post_is_truncated_with_a_warning(backend):
    analyzer = Analyzer(backend, AnalyzeConfig(tasks=("emotion",), max_tokens=4))
    [result] = analyzer.analyze("我很难过。" * 400)
    assert result.parse_status != "error"
    assert any("truncated" in w for w in result.warnings)


def test_empty_post_is_an_error_row_not_a_crash(backend):
    [result] = Analyzer(backend, AnalyzeConfig(tasks=("emotion",))).analyze("   ")
    assert result.parse_status == "error" and result.error == "empty post"


def test_high_risk_results_are_flagged(backend):
    analyzer = Analyzer(backend, AnalyzeConfig(tasks=("suicide_risk", "suicide_risk_levels")))
    post = Post("p", "x")
    high = analyzer._analysis(post, analyzer.specs[0], "这篇帖子体现了高自杀风险。理由：提到了具体方法。", 1.0, [])
    low = analyzer._analysis(post, analyzer.specs[0], "这篇帖子体现了低自杀风险。理由：无计划。", 1.0, [])
    level7 = analyzer._analysis(post, analyzer.specs[1], "这篇帖子的自杀风险等级为7级。理由：……", 1.0, [])
    assert high.high_risk and not low.high_risk and level7.high_risk
    assert high.label_en == ["high suicide risk"]


def test_table_shows_the_crisis_resources_for_high_risk(capsys):
    from rich.console import Console

    from mentalglm.analyze import Analysis
    from mentalglm.commands.analyze import print_tables

    why = "帖子中写道“我已经想好怎么结束这一切了”，表明有明确的自杀计划，属于高自杀风险，需要立即关注。"
    rows = [Analysis("1", "suicide_risk", ["高自杀风险"], why, why, "ok", "m", 1.0, high_risk=True)]
    print_tables(Console(width=70), rows, None)
    shown = capsys.readouterr().out
    assert "12356" in shown and "高自杀风险" in shown and "不构成任何诊断" in shown
    assert "…" not in shown and "立即关注。" in shown  # a narrow terminal wraps the explanation, never cuts it


def test_stdin_posts(tiny_gguf_path, tmp_path):
    out = tmp_path / "o.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mentalglm.cli", "analyze", "--out", str(out), "--model",
                           str(tiny_gguf_path), "--n-ctx", "2048", "--max-tokens", "4", "--tasks", "emotion"],
                          input="第一条\n\n第二条\n".encode(), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["id"] for r in _rows(out)] == ["1", "3"]  # ids are line numbers; the blank line is skipped


def test_help_shows_examples_and_only_meaningful_defaults(capsys):
    """`--help` is where users learn the verb: real examples, the disclaimer, and no misleading defaults
    (`--no-explain (default: True)` would read as labels-only by default)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "mentalglm analyze --file posts.jsonl --no-explain" in text and "不构成任何诊断" in text
    assert "(default: 160)" in text
    assert "default: True" not in text and "default: False" not in text and "default: None" not in text
