"""--split test: the publishers' test files beside the training files (made here in their formats, with made-up
posts), a clear error without them, and no test post ever in what a model is fitted on."""

import json

import pytest

from mentalglm.cli import main
from mentalglm.data.records import DataError
from mentalglm.data.sources import load_source, task_splits, training_posts
from mentalglm.data.splits import normalize_text
from mentalglm.evaluate.predictions import gold_set, read_predictions

from .synthetic_corpora import write_corpora

TASKS = ["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"]


@pytest.fixture(scope="module")
def with_test(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("with-test"), test=True)


@pytest.fixture(scope="module")
def without_test(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("without-test"))


@pytest.mark.parametrize("task", TASKS)
def test_test_split_reads_the_test_files(with_test, task):
    splits = task_splits(task, with_test, test=True)
    assert splits["test"] and {e.split for e in splits["test"]} == {"test"}
    assert len({e.id for e in splits["test"]}) == len(splits["test"])
    ids = {e.id for k in ("train", "validation") for e in splits[k]}
    assert not ids & {e.id for e in splits["test"]}  # test ids never collide with training ids
    if task == "emotion":  # both SMP2020 domains
        assert {e.source for e in splits["test"]} == {"smp2020_ewect/usual_test", "smp2020_ewect/virus_test"}


def test_validation_is_the_same_with_or_without_test_files(with_test, without_test):
    # The test files must not shift the validation split that earlier numbers were computed on.
    for task in TASKS:
        a = [e.id for e in task_splits(task, with_test, test=True)["validation"]]
        b = [e.id for e in task_splits(task, without_test)["validation"]]
        assert a == b, task


@pytest.mark.parametrize("task, missing", [("cognitive_distortion", "socialcd3k/test.tsv"),
                                           ("suicide_risk", "sos_hl_1k/test.tsv"),
                                           ("suicide_risk_levels", "sos4k/test.tsv"),
                                           ("emotion", "smp2020_ewect/usual_test.json")])
def test_absent_test_file_is_an_error_naming_it(without_test, task, missing):
    with pytest.raises(DataError, match="no test file") as err:
        gold_set(task, "test", root=without_test)
    assert missing in str(err.value)


def test_one_of_two_emotion_test_files_is_not_enough(tmp_path):
    root = write_corpora(tmp_path, test=True)
    (root / "smp2020_ewect" / "virus_test.json").unlink()
    with pytest.raises(DataError, match="virus_test.json"):
        gold_set("emotion", "test", root=root)


def test_without_splits_a_source_never_loads_its_test_file(with_test):
    assert {e.split for e in load_source("socialcd3k", root=with_test)} == {"train"}


def test_a_training_post_repeated_in_the_test_file_is_not_trained_on(tmp_path):
    root = write_corpora(tmp_path, test=True)
    train_file, test_file = root / "sos_hl_1k" / "train.tsv", root / "sos_hl_1k" / "test.tsv"
    repeated = train_file.read_text(encoding="utf-8-sig").splitlines()[3].split("\t")
    with open(test_file, "a", encoding="utf-8") as f:
        f.write("\t".join(["9999", repeated[1], repeated[2] + " "]) + "\n")  # the same post, a trailing space
    key = normalize_text(repeated[2])
    assert key in {normalize_text(e.text) for e in training_posts("suicide_risk", "validation", root)}
    assert key not in {normalize_text(e.text) for e in training_posts("suicide_risk", "test", root)}
    assert key in {normalize_text(e.text) for e in gold_set("suicide_risk", "test", root=root).examples}


def test_cli_baseline_and_score_on_the_test_split(with_test, tmp_path, capsys):
    out = tmp_path / "sr.test.jsonl"
    assert main(["eval", "baseline", "ngram", "--task", "suicide_risk", "--split", "test", "--data-root",
                 str(with_test), "--out", str(out)]) == 0
    rows = read_predictions(out)
    assert {r.id for r in rows} == {e.id for e in gold_set("suicide_risk", "test", root=with_test).examples}
    assert main(["eval", "score", str(out), "--split", "test", "--data-root", str(with_test), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)[0]
    assert card["n"] == len(rows) and card["metrics"]["accuracy"] > 0.9  # the cue words are easy
    assert "test split" in card["gold"]


def test_cli_without_test_files_exits_non_zero_naming_the_file(without_test, tmp_path, capsys):
    code = main(["eval", "baseline", "ngram", "--task", "emotion", "--split", "test", "--data-root",
                 str(without_test), "--out", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "smp2020_ewect/usual_test.json" in err and "no test file" in err
