"""Quotes held to the post at decoding (llm/quotes.py): inside an open quote only the post's own words or the close
may come next, on both llama.cpp paths (one at a time, and the batch engine), and the analyzer asks for it."""

from __future__ import annotations

import numpy as np
import pytest

from mentalglm.evidence import check_evidence, quotes_in
from mentalglm.llm.base import GenConfig, Request
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.llm.quotes import QuoteGuard, TokenTable
from serve_helpers import tiny_llama  # noqa: F401  (fixture)

POST = "今天又失眠了，感觉自己什么都做不好"
PIECES = [b"", "今天".encode(), "又".encode(), "失眠".encode(), "了".encode(), "，".encode(), "我".encode(),
          "开心".encode(), "”".encode(), "了”，".encode(), "“我".encode(), "“今天".encode(), "“".encode(),
          "做不好".encode(), "好”".encode()]


def ids(allowed) -> set[str]:
    return {PIECES[i].decode() for i in np.flatnonzero(allowed)}


def test_inside_a_quote_only_the_posts_next_words_or_the_close_may_follow():
    guard = QuoteGuard(POST, TokenTable(PIECES))
    assert ids(guard.mask("帖子中提到“今天".encode())) == {"又", "”"}
    assert ids(guard.mask("提到“失眠".encode())) == {"了", "了”，", "”"}
    assert ids(guard.mask("提到“什么都".encode())) == {"做不好", "”"}  # not "好”": 什么都好 is not in the post
    # a quote just opened may start at any character of the post, never with words it does not have
    just_opened = ids(guard.mask("提到“".encode()))
    assert {"今天", "又", "失眠", "了", "，", "做不好"} <= just_opened and not {"我", "开心", "”"} & just_opened


def test_outside_a_quote_a_token_may_not_open_one_with_words_the_post_lacks():
    guard = QuoteGuard(POST, TokenTable(PIECES))
    allowed = ids(guard.mask("帖子中提到“今天”，这表明".encode()))
    assert {"我", "开心", "“今天", "“"} <= allowed and "“我" not in allowed
    assert guard.open_quote("提到“今天”，又".encode()) is None and guard.open_quote("“今天".encode()) == "今天".encode()


@pytest.mark.parametrize("parallel", [1, 2], ids=["one at a time", "batch engine"])
def test_a_tiny_model_quotes_only_the_post_when_held_to_it(tiny_gguf_path, parallel):
    backend = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1, parallel=parallel)
    posts, lead = (POST, "周末和朋友去爬山很开心"), "理由：帖子中提到“"
    try:
        asked = [Request(({"role": "user", "content": f"帖子：{post}"},), lead) for post in posts]
        config = GenConfig(max_tokens=24)
        free = backend.generate(asked, config)
        held = backend.generate([Request(r.messages, lead, quote_source=p) for r, p in zip(asked, posts)], config)
        for post, f, h in zip(posts, free, held):
            quote = h.text[len(lead):].split("”")[0]
            assert quote and quote in post, (quote, post)  # the random model, held to the post, cites it
            assert f.text[len(lead):].split("”")[0] not in post  # left free, it does not
            if "”" in h.text[len(lead):]:
                assert check_evidence(h.text, post).ok
    finally:
        backend.close()


def test_the_analyzer_holds_the_explanations_quotes_to_the_post(tiny_llama, tmp_path, monkeypatch):  # noqa: F811
    from mentalglm.analyze import AnalyzeConfig, Analyzer
    from mentalglm.inputs import Post
    from tiny_heads import build_tiny_heads

    folder = build_tiny_heads(tiny_llama, tmp_path / "heads", tasks=("emotion",))
    posts = [Post("a", POST), Post("b", "周末和朋友去爬山很开心，阳光很好")]
    held_to = []
    guard = tiny_llama._quote_guard
    monkeypatch.setattr(tiny_llama, "_quote_guard", lambda request: held_to.append(request.quote_source)
                        or guard(request))
    for on in (True, False):
        held_to.clear()
        rows = Analyzer(tiny_llama, AnalyzeConfig(tasks=("emotion",), style="heads", heads=str(folder), max_tokens=40,
                                                  explainer="base", guard_quotes=on)).run(posts)
        assert sorted(held_to) == (sorted(p.text for p in posts) if on else ["", ""])
        if on:
            for row, post in zip(rows, posts):
                assert all(q in post.text for q in quotes_in(row.explanation)), row.explanation
