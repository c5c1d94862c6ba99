"""Backend.stream: the answer piece by piece, ending exactly where generate ends it (real llama.cpp and
transformers models, built in the tests)."""

import itertools

import pytest

from mentalglm.llm.base import GenConfig, Request
from serve_helpers import scripted_llama, tiny_llama  # noqa: F401  (fixtures)

PROMPTS = ["我最近很难过，怎么办？", "今天考试又没过，我就是个废物", "I feel sad because of work"]


@pytest.mark.parametrize("prefix", ["", "这篇帖子体现了"])
def test_llamacpp_stream_ends_where_generate_ends(tiny_llama, prefix):  # noqa: F811
    # The random tiny model writes byte soup: characters whose UTF-8 bytes span tokens, which llama-cpp-python's own
    # streamed chunk texts lose. Stops and max_tokens cut in the middle of it.
    for text, stop, max_tokens in itertools.product(PROMPTS, [(), ("。",), ("的", "了"), ("\n\n",)], [3, 40]):
        request, config = Request(({"role": "user", "content": text},), prefix), GenConfig(max_tokens=max_tokens, stop=stop)
        whole = tiny_llama.generate([request], config)[0]
        pieces = list(tiny_llama.stream(request, config))
        streamed = pieces[-1].generation
        assert all(p.generation is None for p in pieces[:-1])
        assert "".join(p.text for p in pieces) == streamed.text == whole.text, (text, stop, max_tokens)
        assert (streamed.finish_reason, streamed.prompt_tokens, streamed.completion_tokens) == \
            (whole.finish_reason, whole.prompt_tokens, whole.completion_tokens)
        assert streamed.prefilled and pieces[0].text.startswith(prefix)


def test_llamacpp_stream_comes_token_by_token_and_can_stop_early(scripted_llama):  # noqa: F811
    request = Request(({"role": "user", "content": "考虑以下这个帖子：“我好累”"},))
    pieces = list(scripted_llama.stream(request, GenConfig(max_tokens=64)))
    whole = scripted_llama.generate([request], GenConfig(max_tokens=64))[0]
    assert "".join(p.text for p in pieces) == whole.text == "这篇帖子体现了高自杀风险。理由：我不想活了，没有希望"
    assert len(pieces) > whole.completion_tokens // 2  # one piece per token or so, not one lump at the end
    first = scripted_llama.stream(request, GenConfig(max_tokens=64))
    assert next(first).text
    first.close()  # a client that went away: the generation stops there
    assert scripted_llama.generate([request], GenConfig(max_tokens=64))[0].text == whole.text  # backend intact
    held = [p.text for p in scripted_llama.stream(request, GenConfig(max_tokens=64, stop=("理由：我不",)))]
    assert "".join(held) == "这篇帖子体现了高自杀风险。"  # a stop string's start is held back, never shown


def test_default_stream_yields_the_whole_answer_once(tiny_hf_backend):
    request, config = Request(({"role": "user", "content": "你好"},)), GenConfig(max_tokens=6)
    [piece] = list(tiny_hf_backend.stream(request, config))
    whole = tiny_hf_backend.generate([request], config)[0]
    assert piece.text == piece.generation.text == whole.text and whole.text
    assert piece.generation.completion_tokens == whole.completion_tokens


def test_with_parallel_sequences_answers_stream_token_by_token_and_the_same(tiny_gguf_path, tiny_llama):  # noqa: F811
    from mentalglm.llm.llamacpp import LlamaCppBackend

    batched = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1, parallel=2)
    try:
        for text, stop in itertools.product(PROMPTS, [(), ("的", "了"), ("\n\n",)]):
            request, config = Request(({"role": "user", "content": text},), "这篇帖子体现了"), GenConfig(max_tokens=16, stop=stop)
            pieces = list(batched.stream(request, config))
            whole = tiny_llama.generate([request], config)[0]  # what one at a time writes
            assert "".join(p.text for p in pieces) == pieces[-1].generation.text == whole.text, (text, stop)
            assert pieces[-1].generation.finish_reason == whole.finish_reason
        assert len(pieces) > 3  # piece by piece, not one lump
        # Several answers at once, each told piece by piece to its own index.
        told: dict = {}
        requests = [Request(({"role": "user", "content": t},), "答：") for t in PROMPTS]
        gens = batched.generate_watched(requests, GenConfig(max_tokens=12),
                                        lambda i, piece: told.setdefault(i, []).append(piece))
        assert ["".join(told[i]) for i in range(len(PROMPTS))] == [g.text for g in gens]
        assert all(len(told[i]) > 2 for i in told)
        # A consumer that goes away cancels its sequence; the engine goes on.
        stream = batched.stream(requests[0], GenConfig(max_tokens=200))
        next(stream)
        stream.close()
        assert batched.generate(requests[:1], GenConfig(max_tokens=12))[0].text == gens[0].text
    finally:
        batched.close()
