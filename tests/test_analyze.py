"""`analyze` end to end on a real (tiny, random) GGUF through llama.cpp: inputs, output rows, resume (error rows
redone, other settings refused), bad input that never kills a batch, usage errors found before the model loads,
exit codes, redaction before the model, truncation, the high-risk flag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mentalglm.analyze import RAISE, AnalyzeConfig, Analyzer, completed_pairs
from mentalglm.cli import main
from mentalglm.inputs import Post
from mentalglm.jsonl import write_rows
from mentalglm.llm.base import Backend, Generation
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.safety import redact

TASKS = ["cognitive_distortion", "suicide_risk", "emotion"]
FIELDS = {"id", "task", "labels", "explanation", "raw", "parse_status", "model", "latency_ms"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _expected_code(rows: list[dict]) -> int:
    """The exit status a script sees: 1 when any row is invalid or error, else 0."""
    return int(any(r["parse_status"] in ("invalid", "error") for r in rows))


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
    assert code == 1  # the two bad rows are errors: a script can tell
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
    code = main(args)
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert code == _expected_code([json.loads(line) for line in full])
    assert len(full) == 12
    out.write_text("".join(full[:5]) + full[5][:17], encoding="utf-8")  # killed mid-line
    assert completed_pairs(out) == {(json.loads(l)["id"], json.loads(l)["task"]) for l in full[:5]}
    assert main(args + ["--resume"]) == _expected_code([json.loads(line) for line in full])
    resumed = _rows(out)
    assert len(resumed) == 12 and len({(r["id"], r["task"]) for r in resumed}) == 12
    assert out.read_text(encoding="utf-8").splitlines(keepends=True)[:5] == full[:5]  # earlier rows untouched
    # greedy decoding: the redone rows equal the uninterrupted run's
    assert sorted(map(json.dumps, [dict(r, latency_ms=0) for r in resumed])) == \
        sorted(map(json.dumps, [dict(json.loads(l), latency_ms=0) for l in full]))


def test_a_killed_process_resumes_without_repeating_and_redoes_failed_rows(tiny_gguf_path, tmp_path):
    posts = tmp_path / "posts.csv"
    texts = [f"帖子{i}：我有点累" for i in range(80)]  # twice what the kill needs at most: a busy CPU polls late
    texts[1] = ""  # an empty post: an error row in the first run, filled in before the resume
    posts.write_text("id,text\n" + "".join(f"p{i},{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "mentalglm.cli", "analyze", "--file", str(posts), "--out", str(out),
           "--model", str(tiny_gguf_path), "--n-ctx", "2048", "--max-tokens", "24", "--tasks", "emotion", "--chunk", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = out.read_bytes()
    first = [json.loads(line) for line in killed.splitlines(keepends=True) if line.endswith(b"\n")]
    assert 5 <= len(first) < 80, "the run should have been killed midway"
    assert [r["parse_status"] for r in first if r["id"] == "p1"] == ["error"]
    texts[1] = "帖子1：我有点累"
    posts.write_text("id,text\n" + "".join(f"p{i},{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    done = subprocess.run(cmd + ["--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = _rows(out)
    assert done.returncode == _expected_code(rows), done.stderr.decode()
    assert sorted(r["id"] for r in rows) == sorted(f"p{i}" for i in range(80))  # none lost, none twice
    [redone] = [r for r in rows if r["id"] == "p1"]
    assert redone["parse_status"] != "error" and rows.index(redone) >= len(first) - 1  # retried, not kept
    kept = [r for r in first if r["id"] != "p1"]
    assert [r for r in rows if r["id"] in {k["id"] for k in kept}] == kept  # finished rows untouched


class SpyBackend(Backend):
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
    assert proc.returncode == _expected_code(_rows(out)), proc.stderr.decode()
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


# ------------------------------------------------------------------------------ exit codes and usage errors
@pytest.fixture(scope="module")
def scripted_gguf(tmp_path_factory):
    """A GGUF that always answers 这篇帖子体现了高自杀风险。理由：...: every suicide_risk row parses (ok)."""
    from scripted_gguf import build_scripted_gguf

    return build_scripted_gguf(tmp_path_factory.mktemp("scripted") / "scripted.gguf", n_ctx=1024)


def _scripted(model, *extra) -> list[str]:
    return ["analyze", "--model", str(model), "--n-ctx", "1024", "--tasks", "suicide_risk", "--no-explain", *extra]


@pytest.mark.parametrize("args, words", [
    (["   "], "error: the post is empty"),
    (["--tasks", "emotion,nope", "好累"], "error: unknown task 'nope'"),
    (["--tasks", " , ", "好累"], "error: --tasks names no task"),
    (["--file", "{dir}/posts.csv", "--text-column", "body"], "no text column 'body'"),
    (["--file", "{dir}/posts.csv", "--id-column", "pid"], "no id column 'pid'"),
    (["--file", "{dir}/dup.csv"], "dup.csv: id 'a1' on line 4 was already used on line 2"),
    (["--file", "{dir}/tabs.csv"], "tabs.csv looks tab-separated: pass --format tsv"),
    (["--file", "{dir}/empty.csv"], "empty file"),
    (["--file", "{dir}/header.csv"], "no posts given"),
])
def test_usage_errors_exit_2_before_a_model_is_loaded(tmp_path, capsys, args, words):
    (tmp_path / "posts.csv").write_text("id,text\na1,好累\n", encoding="utf-8")
    (tmp_path / "dup.csv").write_text("id,text\na1,好累\na2,开心\na1,难过\n", encoding="utf-8")
    (tmp_path / "tabs.csv").write_text("id\ttext\na1\t好累\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("id,text\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    # the model does not exist: loading it would exit 3, so 2 means the error was found before
    argv = ["analyze", "--model", str(tmp_path / "missing.gguf"), "--out", str(out),
            *(a.replace("{dir}", str(tmp_path)) for a in args)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err + captured.out
    assert not out.exists()


def test_exit_0_when_every_row_is_ok_and_1_with_a_one_line_summary(scripted_gguf, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("id,text\na1,好累\na2,开心\n", encoding="utf-8")
    assert main(_scripted(scripted_gguf, "--file", str(good), "--out", str(tmp_path / "good.jsonl"))) == 0
    assert main(_scripted(scripted_gguf, "好累")) == 0  # one post, a table on the terminal
    assert "failed" not in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\na1,好累\na2,\na3,开心\n", encoding="utf-8")
    out = tmp_path / "bad.jsonl"
    assert main(_scripted(scripted_gguf, "--file", str(bad), "--out", str(out))) == 1
    assert f"1 of 3 results failed (1 error) in {out}; post ids a2\n" in capsys.readouterr().err
    assert main(["analyze", "--model", str(scripted_gguf), "--n-ctx", "1024", "--tasks", "emotion",
                 "--max-tokens", "4", "--file", str(good)]) == 1  # no emotion label in its answer: invalid
    assert "2 of 2 results failed (2 invalid); post ids a1, a2" in capsys.readouterr().err


def test_utf16_csv_with_a_repeated_id_and_dedupe_ids(scripted_gguf, tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_bytes("id,text\na1,好累\na1,开心\n".encode("utf-16"))  # UTF-16 with its BOM
    out = tmp_path / "out.jsonl"
    assert main(_scripted(scripted_gguf, "--file", str(posts), "--out", str(out))) == 2
    assert "id 'a1' on line 3 was already used on line 2" in capsys.readouterr().err and not out.exists()
    assert main(_scripted(scripted_gguf, "--file", str(posts), "--out", str(out), "--dedupe-ids")) == 0
    assert [r["id"] for r in _rows(out)] == ["a1", "a1#2"]
    assert main(_scripted(scripted_gguf, "--file", str(posts), "--out", str(out), "--dedupe-ids", "--resume")) == 0
    assert len(_rows(out)) == 2  # the same numbering on the rerun: nothing redone


def test_resume_refuses_other_settings_and_names_the_one_that_differs(scripted_gguf, tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("id,text\na1,好累\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    base = _scripted(scripted_gguf, "--file", str(posts), "--out", str(out))
    assert main(base) == 0
    written = out.read_bytes()
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["tasks"] == ["suicide_risk"]
    capsys.readouterr()
    for extra, words in ((["--tasks", "suicide_risk,emotion"], "tasks suicide_risk, this run has suicide_risk,emotion"),
                         (["--prompt-style", "instruction"], "prompt style 'zeroshot', this run has 'instruction'")):
        assert main([*base, "--resume", *extra]) == 2
        assert words in capsys.readouterr().err
    other = tmp_path / "other.gguf"  # does not exist: the refusal comes before loading (else exit 3)
    assert main(["analyze", "--model", str(other), "--tasks", "suicide_risk", "--file", str(posts), "--out", str(out),
                 "--resume"]) == 2
    assert f"was written with model '{scripted_gguf}', this run has '{other}'" in capsys.readouterr().err
    assert out.read_bytes() == written
    assert main([*base, "--resume"]) == 0 and out.read_bytes() == written  # same settings: nothing to do
    assert main([*base, "--overwrite", "--tasks", "suicide_risk,suicide_risk_levels"]) in (0, 1)
    assert len(_rows(out)) == 2


def test_resume_redoes_error_rows_unless_keep_errors(scripted_gguf, tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("id,text\na1,好累\na2,\na3,开心\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    base = _scripted(scripted_gguf, "--file", str(posts), "--out", str(out))
    assert main(base) == 1
    posts.write_text("id,text\na1,好累\na2,难过\na3,开心\n", encoding="utf-8")  # the bad row is fixed
    assert main([*base, "--resume", "--keep-errors"]) == 1  # kept: the file still has its error row
    assert [r["parse_status"] for r in _rows(out)] == ["ok", "error", "ok"]
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    assert "redoing 1 error row(s)" in capsys.readouterr().out
    rows = _rows(out)
    assert [(r["id"], r["parse_status"]) for r in rows] == [("a1", "ok"), ("a3", "ok"), ("a2", "ok")]


class CountingBackend(Backend):
    """Answers every request with one label sentence and records the size of each generate call."""

    name, context_length = "counting", 4096

    def __init__(self, batch_size: int = 1, fail: bool = False):
        self.batch_size, self.fail, self.calls = batch_size, fail, []

    def generate(self, requests, config):
        self.calls.append(len(requests))
        if self.fail:
            raise ConnectionError("the model went away")
        return [Generation("这篇帖子体现了无焦虑。") for _ in requests]

    def count_tokens(self, text):
        return len(text)


POSTS5 = [Post(f"p{i}", f"帖子{i}：今天有点累") for i in range(5)]


def test_a_failing_backend_is_an_error_row_in_a_file_run(tmp_path):
    out = tmp_path / "out.jsonl"
    analyzer = Analyzer(CountingBackend(fail=True), AnalyzeConfig(tasks=("emotion", "suicide_risk")))
    write_rows(analyzer.stream(POSTS5[:2]), out)
    rows = _rows(out)
    assert [(r["id"], r["task"]) for r in rows] == [("p0", "emotion"), ("p1", "emotion"),
                                                    ("p0", "suicide_risk"), ("p1", "suicide_risk")]
    assert all(r["parse_status"] == "error" and "the model went away" in r["error"] for r in rows)


def test_the_raise_policy_hands_a_backend_failure_to_the_caller():
    analyzer = Analyzer(CountingBackend(fail=True), AnalyzeConfig(tasks=("emotion",)), on_error=RAISE)
    with pytest.raises(ConnectionError, match="went away"):
        analyzer.analyze("我很累")
    [row] = analyzer.analyze("   ")  # a bad post is the caller's input, not a model failure: still a row
    assert row.parse_status == "error" and row.error == "empty post"
    with pytest.raises(ValueError, match="on_error"):
        Analyzer(CountingBackend(), AnalyzeConfig(tasks=("emotion",)), on_error="ignore")


def test_units_go_task_by_task_per_chunk_in_groups_of_the_batch_size_and_call_no_backend_until_run():
    backend = CountingBackend(batch_size=2)
    analyzer = Analyzer(backend, AnalyzeConfig(tasks=("emotion", "suicide_risk"), explain=False))
    units = list(analyzer.units(POSTS5, done={("p1", "emotion")}, chunk=3))
    assert backend.calls == []  # building the work touches no model (the server builds it off the worker)
    rows = [row for unit in units for row in unit()]
    assert backend.calls == [2, 2, 1, 2, 2]  # chunk p0-p2: emotion (p1 done), suicide_risk; chunk p3-p4
    assert [(r.id, r.task) for r in rows][:5] == [("p0", "emotion"), ("p2", "emotion"), ("p0", "suicide_risk"),
                                                  ("p1", "suicide_risk"), ("p2", "suicide_risk")]


def test_run_returns_rows_in_input_order():
    analyzer = Analyzer(CountingBackend(batch_size=4), AnalyzeConfig(tasks=("emotion", "suicide_risk"), explain=False))
    rows = analyzer.run(POSTS5)
    assert [(r.id, r.task) for r in rows] == [(p.id, t) for p in POSTS5 for t in ("emotion", "suicide_risk")]


def test_file_progress_shows_posts_per_second(tiny_gguf_path, tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("id,text\n" + "".join(f"p{i},今天有点累{i}\n" for i in range(4)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    main(["analyze", "--file", str(posts), "--out", str(out), "--model", str(tiny_gguf_path), "--n-ctx", "2048",
          "--no-explain", "--tasks", "emotion,suicide_risk"])
    bar = next(line for line in capsys.readouterr().err.splitlines() if "analyzing" in line)
    assert "8/8" in bar  # (post, task) results
    rate = float(bar.split(" posts/s")[0].split()[-1])
    assert rate > 0
