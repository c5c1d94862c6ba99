"""The shared resumable JSON-lines file (mentalglm.jsonl) on real files: torn last lines, damaged lines, appends,
rows dropped to be redone, the settings side file; and the readers built on it (analyze rows, judgements)."""

from __future__ import annotations

import json

import pytest

from mentalglm.analyze import resume_rows
from mentalglm.data.records import DataError
from mentalglm.evaluate.judge import read_judgements
from mentalglm.jsonl import Appender, check_settings, drop_lines, meta_path, read_objects, remove, save_settings


def _row(pid: str, task: str = "emotion", status: str = "ok") -> str:
    return json.dumps({"id": pid, "task": task, "parse_status": status}, ensure_ascii=False)


def test_a_torn_last_line_is_cut_and_damaged_lines_are_reported(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(f"{_row('1')}\n[1, 2]\nnot json\n\n{_row('2')}\n".encode() + b'{"id": "3", "ta')
    rows, bad = read_objects(path)
    assert [(n, r["id"]) for n, r in rows] == [(1, "1"), (5, "2")]
    assert [(b.line, b.reason.split(" (")[0]) for b in bad] == [(2, "not a JSON object"), (3, "invalid JSON"),
                                                              (6, "torn last line")]
    assert path.read_bytes().endswith(_row("2").encode() + b"\n")  # cut: the next append starts on a fresh line
    assert read_objects(path)[1] == [bad[0], bad[1]]  # cut once: a second read finds nothing torn


def test_a_whole_last_object_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(f"{_row('1')}\n{_row('2')}", encoding="utf-8")
    rows, bad = read_objects(path)
    assert [r["id"] for _, r in rows] == ["1", "2"] and bad == []
    with Appender(path) as sink:
        sink.write({"id": "3"})
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["1", "2", "3"]


def test_an_appender_without_a_read_first_still_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    path.parent.mkdir()
    path.write_text(f"{_row('1')}\n" + _row("2")[:10], encoding="utf-8")
    with Appender(path) as sink:
        sink.write(_row("3"))
        assert path.read_text(encoding="utf-8").endswith(_row("3") + "\n")  # flushed at once, before close
    assert [r["id"] for _, r in read_objects(path)[0]] == ["1", "3"]


def test_resume_drops_error_rows_to_redo_them_unless_asked_to_keep(tmp_path):
    path = tmp_path / "out.jsonl"
    lines = [_row("1"), _row("2", status="error"), _row("3", status="invalid"), _row("1", "suicide_risk", "error")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kept, redo = resume_rows(path, retry_errors=False)
    assert redo == 0 and len(kept) == 4 and path.read_text(encoding="utf-8").count("\n") == 4
    kept, redo = resume_rows(path)
    assert redo == 2 and kept == {("1", "emotion"): "ok", ("3", "emotion"): "invalid"}
    assert path.read_text(encoding="utf-8") == f"{lines[0]}\n{lines[2]}\n"
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_drop_lines_keeps_every_other_byte(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\r\n{"b": 2}\n  \n{"c": 3}\n')
    drop_lines(path, {2})
    assert path.read_bytes() == b'{"a": 1}\r\n  \n{"c": 3}\n'


def test_settings_side_file_refuses_another_setting_and_names_it(tmp_path):
    out = tmp_path / "out.jsonl"
    settings = {"model": "a.gguf", "prompt_style": "zeroshot", "tasks": ["emotion"]}
    check_settings(out, {"model": "b.gguf"})  # nothing written yet: anything goes
    out.write_text(_row("1") + "\n", encoding="utf-8")
    check_settings(out, settings)  # a file from before side files: accepted
    save_settings(out, settings)
    assert meta_path(out).name == "out.jsonl.meta.json"
    check_settings(out, dict(settings))
    with pytest.raises(DataError, match=r"out.jsonl: was written with tasks emotion, this run has emotion,SAD; "
                                        r"rerun with the same tasks, or write to another --out"):
        check_settings(out, {**settings, "tasks": ["emotion", "SAD"]})
    with pytest.raises(DataError, match="was written with prompt style 'zeroshot', this run has 'heads'"):
        check_settings(out, {**settings, "prompt_style": "heads"})
    remove(out)
    assert not out.exists() and not meta_path(out).exists()


def test_judgements_skip_a_damaged_line_and_cut_a_torn_one(tmp_path):
    path = tmp_path / "judge.jsonl"
    ok = json.dumps({"id": "p1", "status": "ok", "scores": {"fluent": 3}})
    path.write_text(f'{ok}\n{{"id": "p2", "status": "ok", "nonsense": 1}}\n{{"id": "p3", "sta', encoding="utf-8")
    done = read_judgements(path)
    assert list(done) == ["p1"] and done["p1"].scores == {"fluent": 3}
    assert path.read_text(encoding="utf-8").count("\n") == 2 and path.read_text(encoding="utf-8").endswith("}\n")
