"""A C-IMHI build folder (or its export) as --gold: explanations of a model scored against the build's teacher
explanations over the posts both share; posts on only one side are left out, not errors."""

import json

import pytest

from mentalglm.cli import main
from mentalglm.data.builder import instruction_record
from mentalglm.data.export import export
from mentalglm.data.records import DataError, Example
from mentalglm.evaluate.predictions import Prediction, gold_set, write_predictions
from mentalglm.tasks import OK, get_task

EMOTION = get_task("emotion")
POSTS = [("b1", "今天考试通过了，太开心了", "积极", "帖子说“太开心了”，情绪积极。"),
         ("b2", "外婆走了，心里好难过", "悲伤", "帖子写“心里好难过”，表达悲伤。"),
         ("b3", "这个客服太过分了，气死了", "愤怒", "帖子说“气死了”，是愤怒。")]


@pytest.fixture
def build(tmp_path):
    folder = tmp_path / "cimhi"
    (folder / "emotion").mkdir(parents=True)
    rows = [instruction_record(EMOTION, Example(i, "emotion", text, (label,), "validation", "smp"), "validation",
                               why, "teacher", None, False) for i, text, label, why in POSTS]
    (folder / "emotion" / "validation.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return folder


def _predictions(tmp_path, ids_and_explanations):
    rows = [Prediction(i, "emotion", (label,), OK, explanation=why) for i, label, why in ids_and_explanations]
    return write_predictions(rows, tmp_path / "pred.jsonl")


def test_build_gold_holds_posts_labels_and_references(build):
    gold = gold_set("emotion", gold_file=build)
    assert [(e.id, e.text, e.labels, e.explanation) for e in gold.examples] == \
        [(i, text, (label,), why) for i, text, label, why in POSTS]
    assert gold.shared_only


def test_explain_against_a_build_scores_the_shared_posts(build, tmp_path, capsys):
    # b1 copies the reference (100), b2 is about something else; b3 has no prediction, z9 is not in the build.
    path = _predictions(tmp_path, [("b1", "积极", POSTS[0][3]), ("b2", "悲伤", "天气不错。"), ("z9", "愤怒", "x")])
    assert main(["eval", "explain", str(path), "--gold", str(build), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["n"] == 2
    assert result["means"]["bleu"] == pytest.approx(50, abs=1)  # 100 and about 0
    assert 0 < result["means"]["rouge1"] < 100 and "chrf" in result["means"]
    assert main(["eval", "score", str(path), "--gold", str(build), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)[0]
    assert card["n"] == 2 and card["metrics"]["accuracy"] == 1.0


def test_an_export_works_like_its_build(build, tmp_path, capsys):
    from mentalglm.data.builder import read_built

    out = tmp_path / "export"
    export(read_built(build), out)
    path = _predictions(tmp_path, [("b2", "悲伤", POSTS[1][3])])
    assert main(["eval", "explain", str(path), "--gold", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["means"]["rouge1"] == pytest.approx(100)


def test_no_shared_post_is_an_error_that_says_why(build, tmp_path):
    path = _predictions(tmp_path, [("socialcd3k-train-2", "积极", "")])
    with pytest.raises(DataError, match="no prediction matches a post of the gold set.*predict that split"):
        from mentalglm.evaluate.predictions import align, read_predictions

        align(gold_set("emotion", gold_file=build), read_predictions(path), path)


def test_a_build_without_the_task_names_what_it_holds(build):
    with pytest.raises(DataError, match="no records of task 'suicide_risk'.*emotion"):
        gold_set("suicide_risk", gold_file=build)
