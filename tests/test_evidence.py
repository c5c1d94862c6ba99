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
