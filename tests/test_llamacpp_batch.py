"""Batched decoding (``--parallel``): several sequences in one llama.cpp context give what one at a time gives."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mentalglm.llm.base import GenConfig, Request
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.prompts import heads_request
from mentalglm.tasks import get_task
from serve_helpers import tiny_llama  # noqa: F401  (fixture)

SYSTEM = "你是心理健康分析助手。请仔细阅读下面的帖子，然后回答问题。"
POSTS = ["最近工作不想活了路上", "周末很开心朋友", "我就是个废物，他们一定讨厌我", "好累", "今天又失眠了，什么都不想做"]


@pytest.fixture(scope="module")
def batched(tiny_gguf_path):
    backend = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1, parallel=3)
    yield backend
    backend.close()


def requests(question="情绪？"):
    # Short prompts: the tiny model's tokenizer spends a token or more on every Chinese character.
    return [Request(({"role": "system", "content": SYSTEM}, {"role": "user", "content": f"帖子：{p}\n问题：{question}"}),
                    "答：") for p in POSTS]


def _held_until_queued(backend, n: int):
    """Hold the engine's thread (in the callback of a state job) until ``n`` jobs wait in its queue: calls from other
    threads then meet in one batch however slowly those threads run on a busy machine. Returns once the engine is
    held, with the Future to check at the end."""
    started = threading.Event()

    def hold(_state):
        started.set()
        deadline = time.monotonic() + 60
        while len(backend.engine.queue) < n:
            assert time.monotonic() < deadline, f"{len(backend.engine.queue)} of {n} jobs came"
            time.sleep(0.01)

    holding = backend.engine.state(backend._tokens("等一下"), then=hold)
    assert started.wait(60)
    return holding


def test_batched_greedy_generation_equals_one_at_a_time(tiny_llama, batched):  # noqa: F811
    config = GenConfig(max_tokens=12)
    one = tiny_llama.generate(requests(), config)
    many = batched.generate(requests(), config)  # five requests over three slots: two join as slots free up
    assert [g.text for g in many] == [g.text for g in one]
    assert [g.completion_tokens for g in many] == [g.completion_tokens for g in one]
    assert {g.finish_reason for g in many} <= {"stop", "length"}
    # The system prompt was shared, not evaluated once per post: far fewer tokens than the prompts hold.
    assert batched.engine.prompt_tokens < 0.7 * sum(g.prompt_tokens for g in many)


def test_stop_strings_and_max_tokens_end_a_sequence_as_one_at_a_time(tiny_llama, batched):  # noqa: F811
    one = tiny_llama.generate(requests(), GenConfig(max_tokens=20))
    stop = one[0].text[len("答："):][2:4]
    config = GenConfig(max_tokens=20, stop=(stop,))
    assert [g.text for g in batched.generate(requests(), config)] == [g.text for g in tiny_llama.generate(requests(), config)]


def test_batched_states_equal_one_at_a_time_and_mix_with_generation(tiny_llama, batched):  # noqa: F811
    spec = get_task("cognitive_distortion")
    reqs = [heads_request(spec, p) for p in POSTS]
    means = [None, POSTS[1], None, POSTS[3], POSTS[4]]
    want = [tiny_llama.prompt_state(r, m) for r, m in zip(reqs, means)]
    # States read while other sequences generate, in the same decode steps.
    # (Twelve tokens: a random tiny model's logits are nearly flat, so after a few dozen tokens float rounding
    # of another batch shape can flip a near-tie; a trained model's are not, see benchmarks/parallel.py.)
    gen = batched.engine.generate(batched._tokens(batched.render(requests()[0])), GenConfig(max_tokens=12), "答：")
    got = batched.prompt_states(reqs, means)
    for w, g, m in zip(want, got, means):
        assert g.shape == w.shape == ((128,) if m else (64,))
        assert np.allclose(w, g, atol=1e-3)  # float rounding of another batch shape, not another state
        assert np.dot(w, g) / np.linalg.norm(w) / np.linalg.norm(g) > 0.9999
    assert gen.result().text == tiny_llama.generate(requests()[:1], GenConfig(max_tokens=12))[0].text


def test_requests_from_many_threads_join_the_running_batch(tiny_llama, batched):  # noqa: F811
    config = GenConfig(max_tokens=16)
    want = [g.text for g in tiny_llama.generate(requests("风险？"), config)]
    got = [None] * len(POSTS)

    def ask(i):
        got[i] = batched.generate([requests("风险？")[i]], config)[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(POSTS))]
    steps = batched.engine.steps
    batched.engine.peak_sequences = 0
    holding = _held_until_queued(batched, len(POSTS))  # all five in the queue at once, however slowly threads start
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holding.result()
    assert got == want
    # Joined, not queued one after another: fewer decode steps than the sequences' tokens one by one.
    assert batched.engine.steps - steps < sum(16 for _ in POSTS)
    assert batched.engine.peak_sequences == batched.batch_size


def test_sequences_moved_to_close_gaps_go_on_as_if_never_moved(tiny_llama, batched):  # noqa: F811
    # Three jobs that end at different times: when the first ends and nothing is queued, the last moves down
    # into its slot (llama.cpp batches a step per run of consecutive sequence ids) and must not notice.
    lengths = [2, 5, 14]
    want = [tiny_llama.generate([r], GenConfig(max_tokens=n))[0].text for r, n in zip(requests()[:3], lengths)]
    moves = batched.engine.moves
    holding = _held_until_queued(batched, 3)  # the three start together, however slowly this thread submits them
    futures = [batched.engine.generate(batched._tokens(batched.render(r)), GenConfig(max_tokens=n), "答：")
               for r, n in zip(requests()[:3], lengths)]
    holding.result()
    assert [f.result().text for f in futures] == want
    assert batched.engine.moves > moves


def test_a_prompt_longer_than_a_sequence_context_is_refused_before_decoding(batched):
    with pytest.raises(ValueError, match="exceeds the context of a sequence"):
        batched.generate([Request(({"role": "user", "content": "好" * 600},))], GenConfig(max_tokens=8))


def test_a_mean_only_state_is_the_posts_mean_read_no_further_and_the_same_for_every_task(tiny_llama, batched):  # noqa: F811
    for backend in (tiny_llama, batched):
        both = backend.prompt_states([heads_request(get_task("emotion"), p) for p in POSTS], POSTS)
        for task in ("emotion", "suicide_risk"):
            means = backend.prompt_states([heads_request(get_task(task), p) for p in POSTS], POSTS, mean_only=True)
            for b, m in zip(both, means):
                assert m.shape == (64,) and np.allclose(b[64:], m, atol=1e-3)
        # one at a time: the cache ends where the post does (the question after it was never read)
        if backend is tiny_llama:
            rendered = backend.render(heads_request(get_task("suicide_risk"), POSTS[-1]))
            assert backend.llm.n_tokens < len(backend._tokens(rendered))


def test_label_heads_decide_the_same_over_parallel_sequences(tiny_llama, batched, tmp_path):  # noqa: F811
    from mentalglm.analyze import AnalyzeConfig, Analyzer
    from mentalglm.inputs import Post
    from tiny_heads import build_tiny_heads

    heads = build_tiny_heads(tiny_llama, tmp_path / "heads")
    config = AnalyzeConfig(tasks=("suicide_risk", "emotion", "cognitive_distortion"), style="heads", heads=str(heads),
                           max_tokens=8)
    posts = [Post(str(i), p) for i, p in enumerate(POSTS)] + [Post("bad", "", "empty post")]
    one = Analyzer(tiny_llama, config).run(posts)
    many = Analyzer(batched, config).run(posts)
    assert [(r.id, r.task) for r in many] == [(r.id, r.task) for r in one]  # post by post, tasks in order
    assert [r.labels for r in many] == [r.labels for r in one]
    for a, b in zip(one, many):
        assert a.scores.keys() == b.scores.keys()
        assert all(abs(a.scores[k] - b.scores[k]) < 1e-3 for k in a.scores)
    assert [r.parse_status for r in many][-3:] == ["error"] * 3
    # The same text, near-ties aside; at max_tokens a random model's last token (odd bytes) may end up cut in one
    # path and kept in the other, so one explanation may be the other plus a token.
    agree = [a.explanation.startswith(b.explanation) or b.explanation.startswith(a.explanation)
             for a, b in zip(one, many)]
    assert sum(agree) >= len(one) - 2


def test_the_server_batches_concurrent_requests_and_answers_as_one_at_a_time(tiny_llama, batched, tmp_path):  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    from serve_helpers import serve

    def answers(backend, clients):
        with serve(backend, tmp_path / str(clients), max_queue=16) as (server, client):
            body = lambda p: {"text": p, "tasks": ["emotion"], "explain": True}  # noqa: E731
            # Several requests in the engine's queue at once, however slowly the client threads run.
            holding = _held_until_queued(backend, backend.batch_size) if clients > 1 else None
            with ThreadPoolExecutor(clients) as pool:
                replies = list(pool.map(lambda p: client.post("/v1/analyze", json=body(p)), POSTS))
            if holding is not None:
                holding.result()
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
            return [r.json()["results"][0]["analyses"][0]["raw"] for r in replies], server.app.state.serve.worker

    want, _ = answers(tiny_llama, 1)
    batched.engine.peak_sequences = 0
    got, worker = answers(batched, len(POSTS))
    assert got == want
    assert worker._pool._max_workers == batched.batch_size  # requests reach the engine together...
    assert batched.engine.peak_sequences > 1  # ...and share decode steps


def test_a_lora_adapter_applies_to_every_batched_sequence(tiny_gguf_path, tmp_path):
    """--parallel with an adapter (the explainer's path): each sequence writes what the adapted model writes one at
    a time, and not what the plain model writes."""
    from tiny_models import build_tiny_lora_gguf

    adapter = str(build_tiny_lora_gguf(tmp_path / "lora.gguf"))
    config = GenConfig(max_tokens=12)
    one = LlamaCppBackend(tiny_gguf_path, lora_path=adapter, n_ctx=512, n_threads=1)
    many = LlamaCppBackend(tiny_gguf_path, lora_path=adapter, n_ctx=512, n_threads=1, parallel=3)
    plain = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1)
    try:
        expected = [g.text for g in one.generate(requests(), config)]
        assert [g.text for g in many.generate(requests(), config)] == expected
        assert [g.text for g in plain.generate(requests(), config)] != expected
    finally:
        for backend in (one, many, plain):
            backend.close()
