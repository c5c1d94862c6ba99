"""Loaders: exact counts of every shared file, and precise errors for bad files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mentalglm.data.records import DataError
from mentalglm.data.sources import load_source
from mentalglm.data.sources.chinese import load_smp2020, load_socialcd3k, load_sos4k, load_sos_hl_1k
from mentalglm.data.sources.english import load_imhi
from mentalglm.data.sources.pathway import load_pathway_sentences, load_pathway_spans

from .shared_data import requires_data


@requires_data
@pytest.mark.parametrize("source,counts", [
    ("socialcd3k", {"train": 2725}),
    ("sos_hl_1k", {"train": 999}),
    ("sos4k", {"train": 2544, "val": 636}),
    ("smp2020_ewect", {"train": 8606, "eval": 2000, "usual_eval": 2000}),
])
def test_chinese_row_counts(source, counts):
    examples = load_source(source)
    assert Counter(e.split for e in examples) == counts
    assert len({e.id for e in examples}) == len(examples), "ids must be unique"
    assert all(e.text and e.labels for e in examples)


@requires_data
def test_chinese_label_counts():
    cd = Counter(l for e in load_source("socialcd3k") for l in e.labels)
    assert sum(cd.values()) == 2725 + 378 + 2 * 40 + 3 + 4  # rows with 1, 2, 3, 4, 5 labels
    assert Counter(e.labels[0] for e in load_source("sos_hl_1k")) == {"低自杀风险": 522, "高自杀风险": 477}
    levels = Counter(e.labels[0] for e in load_source("sos4k", ["train"]))
    assert levels["1"] == 347 and levels["8"] == 104 and sum(levels.values()) == 2544
    assert all(e.explanation for e in load_source("sos4k"))
    emotion = Counter(e.labels[0] for e in load_source("smp2020_ewect", ["train"]))
    assert emotion == {"积极": 4423, "无情绪": 1460, "愤怒": 1322, "悲伤": 649, "恐惧": 555, "惊奇": 197}


@requires_data
def test_imhi_row_counts():
    counts = Counter((e.task, e.split) for e in load_source("imhi"))
    expected = {("DR", "train"): 1003, ("DR", "val"): 430, ("DR", "test"): 405, ("dreaddit", "train"): 2837,
                ("dreaddit", "val"): 300, ("dreaddit", "test"): 414, ("SAD", "train"): 5547, ("SAD", "val"): 616,
                ("SAD", "test"): 684, ("Irf", "val"): 985, ("Irf", "test"): 2113, ("MultiWD", "val"): 1500,
                ("MultiWD", "test"): 2441, ("CAMS", "test"): 625, ("loneliness", "test"): 528,
                ("T-SID", "test"): 959}
    for key, n in expected.items():
        assert counts[key] == n, key
    assert sum(n for (t, s), n in counts.items() if s == "expert") == 35 * 9


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


CD_HEADER = "非此即彼\t以偏概全\t心理过滤\t否定正面思考\t读心术\t先知错误\t放大\t情绪化推理\t应该式\t乱贴标签\t罪责归己\t罪责归他\t内容\n"


def test_bad_files_name_file_line_and_reason(tmp_path):
    with pytest.raises(DataError, match=r"bad\.tsv:1: missing column\(s\) \['label'\]"):
        load_sos_hl_1k(_write(tmp_path, "bad.tsv", "id\tcomment\n1\t好累\n"))
    with pytest.raises(DataError, match=r"gbk\.tsv:3: not valid UTF-8"):
        load_sos_hl_1k(_write(tmp_path, "gbk.tsv", "id\tlabel\tcomment\n1\t0\tok\n2\t1\t我好累\n", "gbk"))
    with pytest.raises(DataError, match=r"lab\.tsv:3: label must be 0 \(low\) or 1 \(high\), found '2'"):
        load_sos_hl_1k(_write(tmp_path, "lab.tsv", "id\tlabel\tcomment\n1\t0\ta\n2\t2\tb\n"))
    with pytest.raises(DataError, match=r"lvl\.tsv:2: label\(s\) \['11'\] outside the label set"):
        load_sos4k(_write(tmp_path, "lvl.tsv", "comment\tmyLabel\texplain\n好累\t11\t解释\n"))
    with pytest.raises(DataError, match=r"cd\.tsv:2: expected 13 fields"):
        load_socialcd3k(_write(tmp_path, "cd.tsv", CD_HEADER + "0\t1\t好累\n"))
    with pytest.raises(DataError, match=r"cd2\.tsv:2: empty post"):
        load_socialcd3k(_write(tmp_path, "cd2.tsv", CD_HEADER + "0\t1\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t \n"))
    with pytest.raises(DataError, match=r"item 2 \(id 7\): label 'joy' not one of"):
        load_smp2020(_write(tmp_path, "e.json", json.dumps([{"id": 1, "content": "好", "label": "happy"},
                                                             {"id": 7, "content": "好", "label": "joy"}])))
    with pytest.raises(DataError, match=r"DR\.csv:2: answer does not start with a label sentence of DR"):
        load_imhi(_write(tmp_path, "DR.csv", 'query,gpt-3.5-turbo\n"Consider this post: ""x"" Question: q","Maybe. Reasoning: y"\n'))


def test_pathway_formats(tmp_path):
    spans = _write(tmp_path, "p.jsonl", json.dumps(
        {"id": "p1", "text": "和男朋友吵架了。我觉得自己一无是处。于是哭了一晚上。", "label": [[0, 7, "A5"], [8, 17, "B9"], [18, 25, "C2"]]},
        ensure_ascii=False) + "\n")
    examples = load_pathway_spans(spans)
    assert [e.labels for e in examples] == [("A5",), ("B9",), ("C2",)]
    assert examples[1].meta["parents"] == ["认知歪曲"]
    sentences = _write(tmp_path, "s.tsv", "和男朋友吵架了\t触发性事件##情感\n我好难过，还哭了\t情绪反应##C1,C2\n今天天气不错\t\n")
    examples = load_pathway_sentences(sentences)
    assert [e.labels for e in examples] == [("A5",), ("C1", "C2"), ()]
    with pytest.raises(DataError, match=r"bad\.tsv:1: parents \['驳斥'\] do not match children \['A5'\]"):
        load_pathway_sentences(_write(tmp_path, "bad.tsv", "x\t驳斥##A5\n"))
    with pytest.raises(DataError, match=r"sp\.jsonl:1: span \[0, 99, 'A1'\] outside the text"):
        load_pathway_spans(_write(tmp_path, "sp.jsonl", json.dumps({"id": 1, "text": "短", "label": [[0, 99, "A1"]]}) + "\n"))


@requires_data
def test_emotion_trains_on_both_domains_and_the_epidemic_carve_does_not_move():
    from mentalglm.data.sources import task_splits
    from mentalglm.data.splits import stratified_split

    splits = task_splits("emotion")
    by_source = {split: Counter(e.source for e in v) for split, v in splits.items()}
    usual = "smp2020_ewect/usual_eval"  # a fifth held out (duplicate posts stay on one side, so about 400)
    assert by_source["train"][usual] + by_source["validation"][usual] == 2000
    assert abs(by_source["validation"][usual] - 400) <= 5
    # The epidemic posts are carved exactly as when they were the only training file.
    _, alone = stratified_split(load_source("smp2020_ewect", ["train"]), 0.2, seed=13, name="validation")
    assert [e.id for e in splits["validation"] if e.source.endswith("virus_train")] == [e.id for e in alone]
    train_texts = {e.text for e in splits["train"]}
    assert not any(e.text in train_texts for e in splits["validation"])  # no post on both sides
