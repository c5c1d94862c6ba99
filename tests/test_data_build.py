"""`mentalglm data build` end to end against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mentalglm.cli import main
from mentalglm.tasks import get_task, parse_answer
from servers import ChatServer
from shared_data import requires_data
from teachers import RuleTeacher, sos4k_rows, synthetic_post, write_socialcd3k, write_sos4k

RECORD_FIELDS = {"id", "task", "split", "instruction", "input", "output", "labels", "explanation", "source",
                 "teacher", "prompt_hash"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _built(out: Path, task: str) -> list[dict]:
    return [r for split in ("train", "validation") if (out / task / f"{split}.jsonl").exists()
            for r in _rows(out / task / f"{split}.jsonl")]


@pytest.fixture()
def rule_server():
    teacher = RuleTeacher()
    with ChatServer(teacher, model_name="rule-teacher") as server:
        server.teacher = teacher
        yield server


def _build(data_root: Path, out: Path, server: ChatServer, *extra: str) -> int:
    return main(["data", "build", "--data-root", str(data_root), "--out", str(out), "--teacher", "openai:rule-teacher",
                 "--base-url", server.base_url, *extra])


def test_reused_explanations_and_regeneration_with_reasons(tmp_path, rule_server, capsys):
    train, val = sos4k_rows(12, 4)
    train[3] = (synthetic_post(3), 3, "The poster is at level three.")  # a reused explanation that fails QC
    train[4] = (synthetic_post(4), 4, "")  # nothing to reuse: the teacher writes it
    train[5] = (synthetic_post(5, "【拒答】"), 5, "")  # refuses once, then answers
    train[6] = (synthetic_post(6, "【英文】"), 6, "")
    train[7] = (synthetic_post(7, "【照抄】"), 7, "")
    train[8] = (synthetic_post(8, "【电话】"), 8, "")
    val[0] = (train[0][0], 0, train[0][2])  # the same post in train and val: a leak
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    assert _build(root, out, rule_server, "--tasks", "suicide_risk_levels", "--reuse-explanations",
                  "--retries", "2") == 0
    report = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))
    task = report["tasks"]["suicide_risk_levels"]

    assert [lk["first_split"] for lk in task["leaks"]] == ["train"] and task["removed"]["leak"] == 1
    assert task["sampled"] == {"train": 12, "validation": 3}
    assert task["dropped"] == {"not_chinese": 1, "copies_post": 1, "pii": 1}
    assert task["checks_failed"]["refusal"] == 1 and task["checks_failed"]["not_chinese"] == 1 + 3
    assert task["reused_explanations"] == 12 - 6 + 3  # every fixture explanation but the English one
    # calls: English reused -> 1 teacher call; empty -> 1; refusal -> 2; three bad ones -> 3 each
    assert rule_server.calls == task["teacher"]["calls"] == 1 + 1 + 2 + 3 * 3
    assert task["teacher"]["prompt_tokens"] > 0 and task["teacher"]["completion_tokens"] > 0

    records = _built(out, "suicide_risk_levels")
    assert len(records) == 12 + 3 - 3 and all(set(r) == RECORD_FIELDS for r in records)
    spec = get_task("suicide_risk_levels")
    for r in records:
        assert r["instruction"].startswith("考虑以下这个帖子：“") and r["input"] == ""
        assert parse_answer(spec, r["output"]).labels == tuple(r["labels"])
        assert r["output"] == spec.render_answer(r["labels"], r["explanation"])
    by_id = {r["id"]: r for r in records}
    refused = next(r for r in records if "【拒答】" in r["instruction"])
    assert refused["teacher"] == "rule-teacher" and refused["prompt_hash"] and "抱歉" not in refused["output"]
    assert by_id["sos4k-train-2"]["teacher"].endswith("(source explanation)")
    assert by_id["sos4k-train-2"]["prompt_hash"] is None
    dropped = {d["reason"]: d for d in _rows(out / "suicide_risk_levels" / "dropped.jsonl")}
    assert dropped["pii"]["tries"] == 3 and dropped["pii"]["failed_rules"] == [["pii"]] * 3

    card = (out / "DATA_CARD.md").read_text(encoding="utf-8")
    assert "suicide_risk_levels" in card and "`copies_post`" in card and "sos4k-val-2" in card
    assert (out / "explanation_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert "drop reasons" in capsys.readouterr().out


def test_a_refused_request_is_regenerated_not_fatal(tmp_path, rule_server):
    train, val = sos4k_rows(2, 1, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    rule_server.fail_next(1, status=400, message="content filter: self-harm")  # not retried by the HTTP client
    assert _build(root, tmp_path / "out", rule_server, "--tasks", "suicide_risk_levels") == 0
    task = json.loads((tmp_path / "out" / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
    assert task["checks_failed"]["teacher_error"] == 1 and task["tries_of_accepted"] == {"1": 2, "2": 1}
    assert rule_server.calls == 4 and sum(task["accepted"].values()) == 3


def test_rerun_repeats_no_call_and_pathway_from_a_file(tmp_path, rule_server):
    rows = [(synthetic_post(k), [get_task("cognitive_distortion").label_names[k % 12]]) for k in range(10)]
    rows[0] = (rows[0][0], ["非此即彼", "以偏概全"])
    root = write_socialcd3k(tmp_path / "data", rows)
    spans = tmp_path / "pathway.jsonl"
    with open(spans, "w", encoding="utf-8") as f:
        for k in range(6):
            second = f"我总是把第{k}件事搞砸。"
            text = synthetic_post(k) + second
            labels = [[0, 4, "A2"], [len(text) - len(second), len(text), "B2"]]
            f.write(json.dumps({"id": k, "text": text, "label": labels}, ensure_ascii=False) + "\n")
    out = tmp_path / "out"
    args = ("--tasks", "cognitive_distortion,cognitive_pathway", "--input", f"cognitive_pathway=pathway_spans:{spans}")
    assert _build(root, out, rule_server, *args) == 0
    first_calls = rule_server.calls
    report = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))
    assert sum(report["tasks"]["cognitive_distortion"]["accepted"].values()) == 10
    pathway = _built(out, "cognitive_pathway")
    assert len(pathway) == sum(report["tasks"]["cognitive_pathway"]["sampled"].values()) == 12
    spec = get_task("cognitive_pathway")
    assert all(parse_answer(spec, r["output"]).labels == tuple(r["labels"]) for r in pathway)
    before = {p: p.read_text(encoding="utf-8") for p in out.glob("*/*.jsonl")}

    assert _build(root, out, rule_server, *args) == 0  # everything is cached now
    assert rule_server.calls == first_calls
    assert {p: p.read_text(encoding="utf-8") for p in out.glob("*/*.jsonl")} == before
    again = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))
    assert again["tasks"]["cognitive_distortion"]["teacher"]["cached_calls"] == 10


def test_corrupt_cache_lines_are_reported_and_skipped(tmp_path, rule_server, capsys):
    train, val = sos4k_rows(6, 2, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    assert _build(root, out, rule_server, "--tasks", "suicide_risk_levels") == 0
    cache = out / "teacher_cache.jsonl"
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8
    lines[2] = lines[2][: len(lines[2]) // 2]  # torn in the middle of the file
    lines[4] = '{"id": 5}'  # valid JSON, not a cache record
    cache.write_text("\n".join(lines) + "\n" + lines[6][:20], encoding="utf-8")  # and a torn last line
    rule_server.reset()
    capsys.readouterr()

    assert _build(root, out, rule_server, "--tasks", "suicide_risk_levels") == 0
    err = capsys.readouterr().err
    assert "teacher_cache.jsonl:3: damaged cache line skipped" in err
    assert "teacher_cache.jsonl:5:" in err and "teacher_cache.jsonl:9:" in err
    assert rule_server.calls == 2  # lines 3 and 5 are redone; line 9 was a copy of a good one
    assert len(_built(out, "suicide_risk_levels")) == 8
    from mentalglm.data.cache import TeacherCache

    with TeacherCache(cache) as reread:  # the torn last line was cut off: the new calls start on fresh lines
        assert [b.line for b in reread.bad_lines] == [3, 5] and len(reread) == 8


def test_killed_build_loses_nothing_and_repeats_nothing(tmp_path):
    train, val = sos4k_rows(24, 6, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    cache = out / "teacher_cache.jsonl"
    teacher = RuleTeacher(block_after=12)  # the 13th call hangs: the build is frozen mid-way, then killed
    with ChatServer(teacher, model_name="rule-teacher") as server:
        cmd = [sys.executable, "-m", "mentalglm.cli", "data", "build", "--data-root", str(root), "--out", str(out),
               "--tasks", "suicide_risk_levels", "--teacher", "openai:rule-teacher", "--base-url", server.base_url,
               "--concurrency", "2"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not cache.exists() or len(cache.read_bytes().splitlines()) < 12
                                          or server.calls < 14):  # calls 13 and 14 are in flight, blocked
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        teacher.release()
        deadline = time.time() + 60
        while time.time() < deadline and teacher.calls < 14:  # the server finishes the killed client's requests
            time.sleep(0.02)
        assert len(cache.read_bytes().splitlines()) == 12
        assert not (out / "suicide_risk_levels" / "train.jsonl").exists()
        assert server.calls == 14
        server.reset()

        assert main(["data", "build", "--data-root", str(root), "--out", str(out), "--tasks", "suicide_risk_levels",
                     "--teacher", "openai:rule-teacher", "--base-url", server.base_url]) == 0
        assert server.calls == 30 - 12  # the rerun repeats no finished call
    records = _built(out, "suicide_risk_levels")
    assert len(records) == 30 and len({r["id"] for r in records}) == 30  # and loses nothing
    with open(cache, encoding="utf-8") as f:
        keys = [(json.loads(line)["id"], json.loads(line)["prompt_hash"]) for line in f if line.strip()]
    assert len(keys) == len(set(keys)) == 30


def test_random_tiny_model_teacher_is_dropped_with_reasons(tmp_path, tiny_hf_backend):
    train, val = sos4k_rows(4, 1, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    with ChatServer(tiny_hf_backend, model_name="tiny") as server:
        assert main(["data", "build", "--data-root", str(root), "--out", str(out), "--tasks", "suicide_risk_levels",
                     "--teacher", "openai:tiny", "--base-url", server.base_url, "--retries", "1",
                     "--max-tokens", "24"]) == 0
        calls = server.calls
    report = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
    from mentalglm.data.quality import RULES

    assert sum(report["accepted"].values()) == 0, "a random model's gibberish must not pass quality control"
    assert sum(report["dropped"].values()) == 5 and set(report["dropped"]) <= set(RULES)
    assert calls == 5 * 2 == report["teacher"]["calls"]
    dropped = _rows(out / "suicide_risk_levels" / "dropped.jsonl")
    assert all(d["tries"] == 2 and d["reason"] == d["failed_rules"][-1][0] for d in dropped)
    # gibberish that runs on to the token limit, with broken characters: every try fails on form
    assert all({"truncated", "garbled"} & set(rules) for d in dropped for rules in d["failed_rules"])


@requires_data
def test_real_sos4k_leak_is_reported_and_dropped_from_validation(tmp_path):
    out = tmp_path / "out"
    assert main(["data", "build", "--tasks", "suicide_risk_levels", "--teacher", "none", "--reuse-explanations",
                 "--max-per-task", "30", "--out", str(out)]) == 0
    task = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
    assert task["leaks"] == [{"id": "sos4k-val-189", "first_split": "train", "other_split": "validation"}]
    assert task["after_dedup"]["validation"] == task["loaded"]["validation"] - 1
    kept = sum(task["accepted"].values())
    assert kept + sum(task["dropped"].values()) == 30 and task["reused_explanations"] == kept >= 25


@pytest.mark.parametrize("kind", ["transformers", "llama.cpp"])
def test_in_process_teachers_build_and_account_tokens(tmp_path, kind, request):
    model = request.getfixturevalue("tiny_hf_model_dir" if kind == "transformers" else "tiny_gguf_path")
    train, val = sos4k_rows(2, 1, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    assert main(["data", "build", "--data-root", str(root), "--out", str(out), "--tasks", "suicide_risk_levels",
                 "--teacher", str(model), "--retries", "0", "--max-tokens", "16", "--threads", "1"]) == 0
    task = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
    assert task["teacher"]["calls"] == 3 and task["teacher"]["completion_tokens"] > 0
    assert task["teacher"]["prompt_tokens"] > 3 * 100  # the teacher prompt: definitions, post, gold label
    assert sum(task["accepted"].values()) + sum(task["dropped"].values()) == 3
    assert len((out / "teacher_cache.jsonl").read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.realmodel
@pytest.mark.skipif(os.environ.get("MENTALGLM_REAL_MODEL") != "1",
                    reason="needs the packaged 1.1 GB model and a few minutes of CPU; set MENTALGLM_REAL_MODEL=1")
def test_default_model_teacher_writes_explanations_that_pass_or_are_dropped_with_reasons(tmp_path):
    train, val = sos4k_rows(2, 1, explain=False)
    root = write_sos4k(tmp_path / "data", train, val)
    out = tmp_path / "out"
    assert main(["data", "build", "--data-root", str(root), "--out", str(out), "--tasks", "suicide_risk_levels",
                 "--retries", "1", "--threads", "2"]) == 0
    task = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
    assert sum(task["accepted"].values()) + sum(task["dropped"].values()) == 3
    assert task["teacher"]["completion_tokens"] > 0
    spec = get_task("suicide_risk_levels")
    for r in _built(out, "suicide_risk_levels"):
        assert parse_answer(spec, r["output"]).labels == tuple(r["labels"])
        assert r["teacher"] == "qwen2.5-coder-1.5b-instruct-q4"


def test_splits_train_asks_the_teacher_only_for_training_posts(tmp_path, rule_server):
    rows = [(synthetic_post(k), [get_task("cognitive_distortion").label_names[k % 12]]) for k in range(20)]
    root = write_socialcd3k(tmp_path / "data", rows)
    out = tmp_path / "out"
    assert _build(root, out, rule_server, "--tasks", "cognitive_distortion", "--splits", "train") == 0
    built = _rows(out / "cognitive_distortion" / "train.jsonl")
    assert built and {r["split"] for r in built} == {"train"}
    assert not (out / "cognitive_distortion" / "validation.jsonl").exists()
    assert rule_server.calls == len(built) + len(_rows(out / "cognitive_distortion" / "dropped.jsonl"))


def test_consistent_regenerates_an_explanation_the_reader_finds_arguing_for_another_label(tmp_path, rule_server):
    """--consistent: the consistency reader `analyze` reports with reads each explanation alone; one arguing for
    another label than the gold fails QC (argues_other_label) and is regenerated, one arguing for it is kept."""
    train, val = sos4k_rows(12, 4)  # row k of the file is post sos4k-train-<k+2> (the header is line 1)

    def high(post: str) -> str:
        return f"帖子中提到“{post[2:9]}”，作者明确表达了自杀的计划，已经准备好了药物，决定今晚结束自己的生命，自杀风险极高。"

    train[1] = (train[1][0], 1, high(train[1][0]))  # gold level 1, an argument for the top of the scale
    train[10] = (train[10][0], 10, high(train[10][0]))  # gold level 10: the same argument fits
    root = write_sos4k(tmp_path / "data", train, val)
    kept = {}
    for flag in ((), ("--consistent",)):
        out = tmp_path / f"out{len(flag)}"
        assert _build(root, out, rule_server, "--tasks", "suicide_risk_levels", "--reuse-explanations",
                      "--splits", "train", *flag) == 0
        kept[flag] = {r["id"]: r["explanation"] for r in _built(out, "suicide_risk_levels")}
        task = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))["tasks"]["suicide_risk_levels"]
        assert (task["checks_failed"].get("argues_other_label", 0) >= 1) == bool(flag)
    assert kept[()]["sos4k-train-3"] == high(train[1][0]) != kept[("--consistent",)].get("sos4k-train-3")
    assert kept[()]["sos4k-train-12"] == kept[("--consistent",)]["sos4k-train-12"] == high(train[10][0])
