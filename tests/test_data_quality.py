"""Quality-control rules of the C-IMHI builder, one by one, and post de-duplication."""

from __future__ import annotations

import pytest

from mentalglm.data.quality import QCConfig, check, copy_ratio, dedupe, is_refusal, near_duplicate_pairs
from mentalglm.data.records import Example
from mentalglm.tasks import get_task

POST = "最近总觉得自己什么都做不好，考试又没过，大家一定都讨厌我，我真是个废物。"
GOOD = "帖子中说“大家一定都讨厌我”，在没有证据的情况下认定别人负面地看待自己，属于读心术。"


def _check(explanation: str, labels=("读心术",), task="cognitive_distortion", accepted=frozenset(), finish="stop"):
    spec = get_task(task)
    example = Example("p1", task, POST, tuple(labels), "train", "fixture")
    output = spec.render_answer(labels, explanation) if explanation else ""
    return check(spec, example, explanation, output, QCConfig(), finish, accepted)


def test_a_grounded_chinese_explanation_passes():
    assert _check(GOOD) == []


@pytest.mark.parametrize("explanation, rule", [
    ("", "empty"),
    ("The poster assumes that everyone hates them without any evidence at all.", "not_chinese"),
    ("读心术。", "too_short"),
    ("帖子认定别人讨厌自己。" * 60, "too_long"),
    (f"帖子说“{POST}”", "copies_post"),
    ("帖子中说“没有一个人真正喜欢我”，没有证据就认定别人负面地看待自己，属于读心术。", "invented_quote"),
    ("发帖人在没有证据的情况下认定别人负面地看待自己，所以属于读心术。", "ungrounded"),
    (GOOD + "所以这篇帖子的正确标签是读心术。", "prompt_leak"),
    ("抱歉，作为一个AI，我无法对这篇帖子做出判断和分析。", "refusal"),
    ("I'm sorry, 但是这篇帖子的内容我不方便进行分析和解释。", "refusal"),
    (GOOD + "如需帮助请拨打13812345678。", "pii"),
    ("帖子中说“大家一定都讨厌我”\ufffd\ufffd，属于读心术。", "garbled"),
    ("帖子中“考试又没过”说明发帖人把一次失败推广到所有事情，属于以偏概全。", "contradicts_label"),
])
def test_each_rule_catches_its_failure(explanation, rule):
    assert rule in _check(explanation)


def test_quotes_may_drop_a_particle_or_quote_a_definition():
    assert _check("帖子中说“大家一定讨厌我”，属于“读心术”，即“没有证据就认定别人在负面地看待自己”。") == []


def test_quoting_a_refusal_from_the_post_is_not_a_refusal():
    assert not is_refusal("发帖人写道“我无法回答别人的问题”，并觉得对不起家人，属于罪责归己。")
    assert is_refusal("对不起，我不能回答这个问题。")


def test_truncation_duplicates_and_labels_that_do_not_parse_back():
    assert "truncated" in _check(GOOD, finish="length")
    from mentalglm.data.splits import normalize_text

    assert "duplicate_explanation" in _check(GOOD, accepted={normalize_text(GOOD)})
    # a label sentence the parser cannot read back to the gold label: the gold label of the record is wrong
    spec = get_task("emotion")
    example = Example("p2", "emotion", POST, ("悲伤",), "train", "fixture")
    assert "parse_mismatch" in check(spec, example, GOOD, "这篇帖子体现的情绪是愤怒。理由：" + GOOD, QCConfig())


def test_copy_ratio_allows_quotes_but_not_copies():
    assert copy_ratio(GOOD, POST) < 0.4
    assert copy_ratio(POST[:-1], POST) == 1.0


def test_suicide_levels_contradiction_uses_the_level_pattern_not_bare_digits():
    ok = "帖子说“大家一定都讨厌我”，6月以来一直失眠，想死但没有方法，属于4级。"
    assert _check(ok, ("4",), "suicide_risk_levels") == []
    assert "contradicts_label" in _check("帖子说“大家一定都讨厌我”，属于4级。", ("6",), "suicide_risk_levels")


def _ex(i: str, text: str, split: str, labels=("悲伤",)) -> Example:
    return Example(i, "emotion", text, labels, split, "fixture")


def test_dedupe_drops_leaks_exact_and_near_duplicates_from_the_later_split():
    base = "今天在公司加班到凌晨两点，回家路上下着大雨，手机也没电了，真是倒霉透顶的一天啊"
    near = "转发：" + base  # a repost
    other = "周末和朋友去爬山，山顶的风景特别美，拍了好多照片，心情一下子就好起来了"
    splits = {
        "train": [_ex("t1", base, "train"), _ex("t2", base + "！！", "train"), _ex("t3", other, "train")],
        "validation": [_ex("v1", " " + other, "validation"), _ex("v2", near, "validation"),
                       _ex("v3", "完全不同的另一篇帖子，讲的是学校食堂的饭菜越来越难吃了", "validation")],
    }
    kept, removed = dedupe(splits)
    assert [e.id for e in kept["train"]] == ["t1", "t3"]
    assert [e.id for e in kept["validation"]] == ["v3"]
    kinds = {r.id: (r.kind, r.of) for r in removed}
    assert kinds == {"t2": ("duplicate_exact", "t1"), "v1": ("leak", "t3"), "v2": ("duplicate_near", "t1")}


def test_near_duplicate_pairs_are_exact_above_the_threshold():
    texts = [f"第{k}条：今天的天气非常好，我们一起去公园散步，看到了很多盛开的花朵和小鸟，还遇到了多年不见的老同学，聊了很久"
             for k in range(30)]
    texts.append("一篇毫不相干的帖子，说的是学校门口新开了一家奶茶店，排队的人特别多")
    pairs = near_duplicate_pairs(texts, threshold=0.85)
    assert len(pairs) == 30 * 29 // 2  # every pair of the 30 variants, none with the unrelated post
    assert all(score >= 0.85 for _, _, score in pairs)
