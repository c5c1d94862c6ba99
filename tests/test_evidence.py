"""The evidence check: every quote of an explanation must be in the post it explains."""

from mentalglm.evidence import check_evidence

POST = "最近总觉得自己什么都做不好，大家一定都在背后嘲笑我。我真的好累……不想再坚持了"


def test_quotes_found_in_the_post_pass_whatever_their_punctuation():
    found = check_evidence("帖子说“大家一定都在背后嘲笑我”，又说「我真的好累」。", POST)
    assert found.ok and found.quotes == ("大家一定都在背后嘲笑我", "我真的好累") and not found.missing
    assert check_evidence("原话“什么都做不好,大家一定都在背后嘲笑我”", POST).ok  # a comma of another width


def test_a_made_up_quote_fails_and_is_named():
    found = check_evidence("作者写道“我已经买好了药”和“我真的好累”", POST)
    assert found.ok is False and found.missing == ("我已经买好了药",)


def test_no_quote_is_no_evidence():
    assert check_evidence("作者情绪低落，缺乏动力。", POST).ok is False


def test_elided_quotes_need_every_piece_and_label_names_are_not_evidence():
    assert check_evidence("“最近总觉得……背后嘲笑我”", POST).ok
    assert check_evidence("“最近总觉得……已经买好了药”", POST).ok is False
    found = check_evidence("体现了“读心术”：“大家一定都在背后嘲笑我”", POST, ignore=["读心术"])
    assert found.ok and found.quotes == ("大家一定都在背后嘲笑我",)


def test_a_near_miss_quote_is_replaced_by_the_posts_closest_span():
    from mentalglm.evidence import repair_quotes

    written = "作者说“大家一定都在背后笑话我”，又说“我真的好累”。"  # 嘲笑 misquoted as 笑话
    fixed = repair_quotes(written, POST)
    assert fixed.repaired == (("大家一定都在背后笑话我", "大家一定都在背后嘲笑我"),)
    assert fixed.text == "作者说“大家一定都在背后嘲笑我”，又说“我真的好累”。"
    assert check_evidence(fixed.text, POST).ok


def test_a_made_up_quote_is_not_repaired_and_still_fails():
    from mentalglm.evidence import repair_quotes

    written = "作者写道“我已经买好了安眠药”和“我真的好累”"
    fixed = repair_quotes(written, POST)
    assert fixed.repaired == () and fixed.text == written
    assert check_evidence(fixed.text, POST).missing == ("我已经买好了安眠药",)
    # Label names, elided quotes and very short quotes are left as written.
    assert repair_quotes("“读心术”“最近总觉……背后笑我”“好累了”", POST, ignore=["读心术"]).repaired == ()
