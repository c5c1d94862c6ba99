"""Bad predictions files get an exact error that names the file and line; good ones align with their gold set."""

import json

import pytest

from mentalglm.cli import main
from mentalglm.data.records import DataError
from mentalglm.evaluate.predictions import align, gold_set, read_predictions

GOLD = [{"id": f"p{i}", "labels": [label], "text": f"帖子{i}"}
        for i, label in enumerate(["积极", "愤怒", "悲伤", "积极", "无情绪", "恐惧"])]


def _row(pid, labels, task="emotion", status="ok"):
    return {"id": pid, "task": task, "labels": labels, "explanation": "", "raw": "", "parse_status": status}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def gold(tmp_path):
    return _write(tmp_path / "gold.jsonl", GOLD)


def _good_rows():
    return [_row(g["id"], g["labels"]) for g in GOLD]


@pytest.mark.parametrize("edit, line, message", [
    (lambda rows: rows.__setitem__(2, _row("p2", ["开心"])), 3,
     "unknown label(s) ['开心'] for task 'emotion'; labels are 积极, 愤怒, 悲伤, 恐惧, 惊奇, 无情绪"),
    (lambda rows: rows.__setitem__(4, _row("p1", ["积极"])), 5, "duplicate id 'p1' (first on line 2)"),
    (lambda rows: rows.__setitem__(1, _row("p1", ["高自杀风险"], task="suicide_risk")), 2,
     "task mismatch: the row is for task 'suicide_risk', expected 'emotion'"),
    (lambda rows: rows.__setitem__(3, '{"id": "p3", "task": "emotion"'), 4, "invalid JSON (Expecting ',' delimiter"),
    (lambda rows: rows.__setitem__(0, {"id": "p0", "task": "emotion", "labels": ["积极"]}), 1,
     "missing field(s) parse_status; every row needs id, task, labels, parse_status"),
    (lambda rows: rows.__setitem__(5, _row("p5", ["恐惧", "悲伤"])), 6,
     "task 'emotion' is single-label, the row has 2 labels"),
    (lambda rows: rows.__setitem__(5, _row("p5", [], status="ok")), 6,
     "parse_status 'ok' but no labels; an answer without a label is 'invalid' for task 'emotion'"),
    (lambda rows: rows.__setitem__(5, _row("p5", ["恐惧"], status="maybe")), 6,
     "parse_status 'maybe' is not one of ok, fallback, invalid, error"),
])
def test_bad_rows_name_their_line(tmp_path, edit, line, message):
    rows = _good_rows()
    edit(rows)
    path = _write(tmp_path / "pred.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_predictions(path, "emotion")
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: {message}")


def test_missing_and_foreign_ids(tmp_path, gold):
    gs = gold_set("emotion", gold_file=gold)
    rows = _good_rows()
    path = _write(tmp_path / "pred.jsonl", rows[:4])
    with pytest.raises(DataError) as err:
        align(gs, read_predictions(path), path)
    assert str(err.value) == (f"{path}: 2 of 6 gold posts have no prediction (ids p4, p5); finish the run "
                              "(--resume) or pass --subset to score only the predicted posts")
    assert len(align(gs, read_predictions(path), path, subset=True).ids) == 4
    foreign = _write(tmp_path / "foreign.jsonl", [*rows, _row("zz", ["积极"])])
    with pytest.raises(DataError, match=rf"^{foreign}:7: id 'zz' is not in the gold set \(emotion: "):
        align(gs, read_predictions(foreign), foreign)


def test_a_sample_ignores_pooled_ids_and_keeps_gold_order(tmp_path, gold):
    sample = gold_set("emotion", gold_file=gold, sample=3, seed=13)
    assert len(sample.examples) == 3 and len(sample.pool) == 6
    path = _write(tmp_path / "pred.jsonl", list(reversed(_good_rows())))  # full file, any order
    aligned = align(sample, read_predictions(path), path)
    assert aligned.ids == [e.id for e in sample.examples]
    assert aligned.gold == aligned.pred and all(aligned.valid)


def test_invalid_and_error_rows_are_scored_as_invalid(tmp_path, gold):
    rows = _good_rows()
    rows[0] = _row("p0", [], status="invalid")
    rows[1] = _row("p1", [], status="error")
    path = _write(tmp_path / "pred.jsonl", rows)
    aligned = align(gold_set("emotion", gold_file=gold), read_predictions(path), path)
    assert aligned.valid == [False, False, True, True, True, True]


def test_cli_exit_code_and_message(tmp_path, gold, capsys):
    rows = _good_rows()
    rows[2] = _row("p2", ["开心"])
    path = _write(tmp_path / "pred.jsonl", rows)
    assert main(["eval", "score", str(path), "--gold", str(gold)]) == 2
    assert f"error: {path}:3: unknown label(s) ['开心']" in capsys.readouterr().err
    assert main(["eval", "score", str(_write(path, _good_rows())), "--gold", str(gold), "--json",
                 "--resamples", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["metrics"]["accuracy"] == 1.0 and out[0]["n"] == 6
