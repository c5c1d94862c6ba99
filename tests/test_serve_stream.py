"""Streaming (server-sent events) and /metrics of `mentalglm serve`: a real uvicorn on loopback over real llama.cpp
models, read with the official `openai` client, httpx and prometheus_client's own parser."""

import json
import threading

import httpx
import pytest

from mentalglm import DISCLAIMER
from mentalglm.safety import resources_message
from serve_helpers import (error_of, held, hold_model, paced_scripted_llama, serve, tiny_llama,  # noqa: F401
                           wait_until)
from tiny_heads import build_tiny_heads

openai = pytest.importorskip("openai", reason="pip install openai (the dev extra)")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

HIGH_RISK_POST = "最近工作不想活了路上"  # the tiny heads read the cue 不想活了 as high suicide risk


def _client(server, **kw):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


@pytest.fixture(scope="module")
def heads_api(tiny_llama, tmp_path_factory):  # noqa: F811
    folder = build_tiny_heads(tiny_llama, tmp_path_factory.mktemp("stream-heads") / "heads")
    with serve(tiny_llama, tmp_path_factory.mktemp("stream"), prompt_style="heads", heads=str(folder),
               max_tokens=32) as (server, client):
        yield server, client


def _cimhi(post: str, task: str, client) -> str:
    question = next(t["question"] for t in client.get("/v1/tasks").json()["data"] if t["name"] == task)
    return f"考虑以下这个帖子：“{post}” 问题：{question}"


def test_openai_client_streams_a_plain_answer_equal_to_the_unstreamed_one(heads_api):
    server, _ = heads_api
    oa = _client(server)
    messages = [{"role": "user", "content": "我最近很难过，怎么办？"}]
    whole = oa.chat.completions.create(model="tiny.gguf", messages=messages, max_tokens=20)
    chunks = list(oa.chat.completions.create(model="tiny.gguf", messages=messages, max_tokens=20, stream=True,
                                             stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # include_usage: a last chunk with usage
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # pieces, not one lump


def test_label_heads_stream_the_decision_first_then_the_explanation(heads_api):
    server, client = heads_api
    oa = _client(server)
    messages = [{"role": "user", "content": _cimhi(HIGH_RISK_POST, "suicide_risk", client)}]
    whole = oa.chat.completions.create(model="tiny.gguf", messages=messages)
    chunks = list(oa.chat.completions.create(model="tiny.gguf", messages=messages, stream=True))
    first, last = chunks[0].model_extra["mentalglm"], chunks[-1].model_extra["mentalglm"]
    # The decision arrives before any text, with the crisis resources: a client can warn before the answer is read.
    assert not chunks[0].choices[0].delta.content
    assert first["labels"] == ["高自杀风险"] and first["high_risk"] is True and first["evidence_ok"] is None
    assert first["resources"] == resources_message() and set(first["scores"]) == {"高自杀风险", "低自杀风险"}
    assert last == whole.model_extra["mentalglm"]  # the complete extension, evidence_ok included, as unstreamed
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert sum(bool(c.choices[0].delta.content) for c in chunks) > 2  # token by token, not one lump at the end
    assert whole.choices[0].message.content.startswith("这篇帖子体现了高自杀风险")
    assert chunks[-1].choices[0].finish_reason == "stop"
    low = oa.chat.completions.create(model="tiny.gguf", messages=[
        {"role": "user", "content": _cimhi("今天有点累路上", "suicide_risk", client)}], stream=True)
    decision = next(iter(low)).model_extra["mentalglm"]
    assert decision["high_risk"] is False and decision["resources"] is None


def test_stream_errors_before_the_first_token_keep_their_status(heads_api):
    server, _ = heads_api
    oa = _client(server)
    with pytest.raises(openai.BadRequestError, match="context"):
        list(oa.chat.completions.create(model="tiny.gguf", stream=True,
                                        messages=[{"role": "user", "content": "难过" * 600}]))
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        oa.chat.completions.create(model="gpt-4", stream=True, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="n=1"):
        oa.chat.completions.create(model="tiny.gguf", n=2, messages=[{"role": "user", "content": "hi"}])


def _events(response: httpx.Response) -> list[tuple[str, dict]]:
    events, kind = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[len("data: "):])))
            kind = "message"
    return events


def _without_latency(body: dict) -> dict:
    for post in body["results"]:
        for a in post["analyses"]:
            a.pop("latency_ms")
    return body


def _keeps_the_stream_promise(events: list[tuple[str, dict]], flagging=("suicide_risk", "suicide_risk_levels")):
    """What docs/service.md promises of a streamed /v1/analyze with label heads, whatever the timing: each row's
    decision before its text and its text before its finished row; every decision that can flag a post before any
    text of that post; the resources once, right after the first flagged decision."""
    kinds = [k for k, _ in events]
    seen: dict[tuple, list[str]] = {}
    for kind, data in events:
        if kind in ("decided", "text", "analysis"):
            seen.setdefault((data["id"], data["task"]), []).append(kind)
    for key, mine in seen.items():
        assert mine[0] == "decided" and mine[-1] == "analysis" and "decided" not in mine[1:], (key, mine)
    for post in {k[0] for k in seen}:
        first_text = next((i for i, (k, d) in enumerate(events) if k == "text" and d["id"] == post), len(events))
        risk = [i for i, (k, d) in enumerate(events) if k == "decided" and d["id"] == post and d["task"] in flagging]
        assert all(i < first_text for i in risk), post
    flagged = [i for i, (k, d) in enumerate(events) if k == "decided" and d["high_risk"]]
    if flagged:
        assert kinds.count("resources") == 1 and kinds[flagged[0] + 1] == "resources"
    else:
        assert "resources" not in kinds


def test_the_stream_promise_holds_when_the_sequences_are_timed_badly():
    """The batch engine may read one task's state and write its text before another task's prompt is evaluated:
    text that comes before the post's risk decision is held back until it is in (it was sent first: a flaky test)."""
    from mentalglm.analyze import Analysis
    from mentalglm.serve.service import _Emitter

    def row(post, task, high=False):
        return Analysis(post, task, [], "", "", "ok", "m", 0.0, high)

    out = []
    watch = _Emitter(lambda kind, data: out.append((kind, data)), {"p1": 1, "p2": 1})
    watch.decided(row("p1", "emotion"))
    watch.text("p1", "emotion", "这")  # before p1's risk is known: held back
    watch.decided(row("p2", "suicide_risk"))
    watch.text("p2", "suicide_risk", "低")  # p2's risk is known: goes out at once
    watch.decided(row("p1", "suicide_risk", high=True))
    watch.text("p1", "suicide_risk", "高")
    for post, task in [("p1", "emotion"), ("p1", "suicide_risk"), ("p2", "suicide_risk")]:
        watch.finished(row(post, task))
    assert [(k, d.get("id"), d.get("task")) for k, d in out] == [
        ("decided", "p1", "emotion"), ("decided", "p2", "suicide_risk"), ("text", "p2", "suicide_risk"),
        ("decided", "p1", "suicide_risk"), ("text", "p1", "emotion"), ("text", "p1", "suicide_risk"),
        ("analysis", "p1", "emotion"), ("analysis", "p1", "suicide_risk"), ("analysis", "p2", "suicide_risk")]
    held = _Emitter(lambda kind, data: out.append((kind, data)), {"p3": 1})  # the risk decision never came
    out.clear()
    held.decided(row("p3", "emotion"))
    held.text("p3", "emotion", "这")
    held.finished(row("p3", "emotion"))
    assert [k for k, _ in out] == ["decided", "text", "analysis"]  # released before its row: nothing is lost


def test_analyze_stream_ends_with_the_unstreamed_response(heads_api):
    _, client = heads_api
    request = {"posts": [{"id": "p1", "text": HIGH_RISK_POST}, {"id": "p2", "text": "今天很开心路上"}],
               "tasks": ["suicide_risk", "emotion"]}
    whole = client.post("/v1/analyze", json=request).json()
    with client.stream("POST", "/v1/analyze", json={**request, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and _without_latency(events[-1][1]) == _without_latency(whole)
    # One sequence at a time, the risk task goes first: p1's risk decision, then the resources, then its text.
    _keeps_the_stream_promise(events)
    decided = kinds.index("decided")
    assert events[decided][1]["id"] == "p1" and events[decided][1]["high_risk"] is True
    assert kinds[decided + 1] == "resources" and events[decided + 1][1]["resources"] == resources_message()
    assert events[decided + 1][1]["disclaimer"] == DISCLAIMER
    assert kinds[decided + 2] == "text"
    for post in whole["results"]:
        for a in post["analyses"]:
            pieces = [d["text"] for k, d in events if k == "text" and (d["id"], d["task"]) == (post["id"], a["task"])]
            assert "".join(pieces) == a["raw"] and len(pieces) > 1  # as it was written, piece by piece
    assert kinds.count("analysis") == 4


def test_a_client_that_goes_away_stops_the_generation_and_frees_the_model(paced_scripted_llama, tmp_path):  # noqa: F811
    backend = paced_scripted_llama
    with serve(backend, tmp_path, max_queue=1) as (server, client):
        body = {"model": "scripted.gguf", "stream": True, "messages": [{"role": "user", "content": "我好累"}]}
        with held(backend) as go_on:  # the answer waits after its first piece, however fast or slow the machine
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                next(response.iter_lines())
            # Once the server has noticed the client is gone it is done with the request: /metrics counts it.
            wait_until(lambda: _value(_scrape(client), "mentalglm_requests", "mentalglm_requests_total",
                                      route="/v1/chat/completions", status="200"),
                       what="the server to notice that the client went away")
            go_on.set()
            wait_until(lambda: server.app.state.serve.worker.pending == 0)  # a queue of one is free again
        stopped_after = backend.pieces
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert "[DONE]" in response.read().decode()
        assert stopped_after < backend.pieces / 2  # the first answer was not written to its end for nobody


def test_a_stream_keeps_the_queue_limit_and_the_request_timeout(paced_scripted_llama, tmp_path):  # noqa: F811
    body = {"model": "scripted.gguf", "stream": True, "messages": [{"role": "user", "content": "我好累"}]}
    # The model is held by events, not by CPU speed: the timeout only has to outlast the way to a first piece.
    with serve(paced_scripted_llama, tmp_path, max_queue=1, request_timeout=2) as (server, client):
        release = hold_model(server)
        waiting: dict = {}
        first = threading.Thread(target=lambda: waiting.update(r=client.post("/v1/chat/completions", json=body)))
        first.start()
        wait_until(lambda: server.app.state.serve.worker.pending == 2)  # the first one waits for the model
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"]  # before any stream starts
        first.join(60)
        assert waiting["r"].status_code == 504  # never reached the model within its time: an ordinary 504
        release.set()
        # Under way when the time runs out (held after its first piece): the stream says so and ends.
        with held(paced_scripted_llama), client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        error = json.loads(lines[-1][len("data: "):])["error"]
        assert error["type"] == "timeout_error" and "2 s" in error["message"]
        wait_until(lambda: server.app.state.serve.worker.pending == 0)


def _scrape(client, **kw) -> dict:
    response = client.get("/metrics", **kw)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def _value(families, name, sample=None, **labels) -> float:
    family = families[name]
    return sum(s.value for s in family.samples
               if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_tokens_queue_and_latency(tiny_llama, tmp_path):  # noqa: F811
    with serve(tiny_llama, tmp_path, max_body_bytes=6000) as (server, client):
        before = _scrape(client)
        assert _value(before, "mentalglm_generated_tokens", "mentalglm_generated_tokens_total") == 0
        used = 0
        for _ in range(2):
            answer = client.post("/v1/chat/completions", json={
                "model": "tiny.gguf", "max_tokens": 5, "messages": [{"role": "user", "content": "你好"}]})
            assert answer.status_code == 200
            used += answer.json()["usage"]["completion_tokens"]
        assert client.post("/v1/analyze", json={"text": "", "tasks": ["emotion"]}).status_code == 422
        assert client.get("/v1/jobs/nope").status_code == 404
        assert client.get("/no/such/page").status_code == 404
        big = json.dumps({"text": "a" * 9000}).encode()  # refused by the body limit, before any route runs
        assert client.post("/v1/analyze", content=big, headers={"Content-Type": "application/json"}).status_code == 413
        too_long = client.post("/v1/chat/completions", json={"model": "tiny.gguf", "stream": True,
                                                             "messages": [{"role": "user", "content": "难过" * 600}]})
        assert too_long.status_code == 400 and error_of(too_long)["code"] == "context_length_exceeded"
        after = _scrape(client)
        requests = "mentalglm_requests_total"
        assert _value(after, "mentalglm_requests", requests, route="/v1/chat/completions", status="200") == 2
        assert _value(after, "mentalglm_requests", requests, route="/v1/analyze", status="422") == 1
        assert _value(after, "mentalglm_requests", requests, route="/v1/jobs/{job_id}", status="404") == 1  # a template
        assert _value(after, "mentalglm_requests", requests, route="other", status="404") == 1  # never the raw path
        assert _value(after, "mentalglm_requests", requests, route="/v1/analyze", status="413") == 1
        assert _value(after, "mentalglm_requests", requests, route="/v1/chat/completions", status="400") == 1
        assert _value(after, "mentalglm_generated_tokens", "mentalglm_generated_tokens_total") == used > 0
        assert _value(after, "mentalglm_generation_seconds", "mentalglm_generation_seconds_total") > 0
        assert _value(after, "mentalglm_batch_size", "mentalglm_batch_size_count") == 2
        assert _value(after, "mentalglm_batch_size", "mentalglm_batch_size_sum") == 2  # one sequence at a time today
        latency = "mentalglm_request_duration_seconds"
        assert _value(after, latency, latency + "_count", route="/v1/chat/completions") == 3  # the refused one too
        assert _value(after, latency, latency + "_bucket", route="/v1/chat/completions", le="+Inf") == 3
        assert _value(after, "mentalglm_queue_limit") == 8 and _value(after, "mentalglm_queue_depth") == 0
        assert _value(after, "process_resident_memory_bytes") > 0
        # Queue depth is live: it shows work waiting for the model while the model is held.
        release = hold_model(server)
        assert _value(_scrape(client), "mentalglm_queue_depth") == 1
        release.set()


def test_metrics_need_the_token_when_the_server_has_one(tiny_llama, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MENTALGLM_TEST_TOKEN", "s3cret-token")
    with serve(tiny_llama, tmp_path, token_env="MENTALGLM_TEST_TOKEN") as (_, client):
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert error_of(refused)["type"] == "authentication_error"
        families = _scrape(client, headers={"Authorization": "Bearer s3cret-token"})
        assert _value(families, "mentalglm_requests", "mentalglm_requests_total", route="/metrics", status="401") == 1


def test_with_parallel_sequences_streams_agree_and_the_engine_is_measured(tiny_llama, tiny_gguf_path, tmp_path):  # noqa: F811
    from mentalglm.llm.llamacpp import LlamaCppBackend

    folder = build_tiny_heads(tiny_llama, tmp_path / "heads")
    batched = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1, parallel=3)
    try:
        with serve(batched, tmp_path, prompt_style="heads", heads=str(folder), max_tokens=24) as (server, client):
            request = {"text": HIGH_RISK_POST, "tasks": ["suicide_risk", "emotion", "cognitive_distortion"]}
            whole = client.post("/v1/analyze", json=request).json()
            with client.stream("POST", "/v1/analyze", json={**request, "stream": True}) as response:
                events = _events(response)
            kinds = [k for k, _ in events]
            assert _without_latency(events[-1][1]) == _without_latency(whole)
            # Sequences decoded together finish their prompts in any order: the promise holds whatever the timing.
            _keeps_the_stream_promise(events)
            assert kinds.count("decided") == 3 and "resources" in kinds and "text" in kinds
            oa = _client(server)
            messages = [{"role": "user", "content": _cimhi(HIGH_RISK_POST, "suicide_risk", client)}]
            chunks = list(oa.chat.completions.create(model="tiny.gguf", messages=messages, stream=True))
            unstreamed = oa.chat.completions.create(model="tiny.gguf", messages=messages)
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == unstreamed.choices[0].message.content
            assert chunks[0].model_extra["mentalglm"]["high_risk"] is True
            families = _scrape(client)
            steps = _value(families, "mentalglm_decode_steps", "mentalglm_decode_steps_total")
            tokens = _value(families, "mentalglm_decode_tokens", "mentalglm_decode_tokens_total")
            assert steps > 0 and tokens > steps  # prompts go in many tokens a step
            assert _value(families, "mentalglm_active_sequences") == 0
            # Streamed answers decoded together are counted like the others.
            assert _value(families, "mentalglm_generated_tokens", "mentalglm_generated_tokens_total") > 0
            # The three tasks' explanations were decoded together, in the same steps (measured by the engine).
            assert batched.engine.peak_sequences >= 2
    finally:
        batched.close()


def test_every_event_emitted_before_the_work_ends_is_delivered_in_order():
    import asyncio

    from mentalglm.serve.streaming import FAILED, RESULT, model_events
    from mentalglm.serve.worker import ModelWorker

    def work(n, emit):
        for i in range(n):  # a burst at the end, as when the last pieces and the finished row come together
            emit("text", i)
        return "done"

    def failing(emit):
        emit("text", 0)
        raise RuntimeError("the model went away")

    async def collect(fn, *args):
        events = await model_events(worker, fn, *args, timeout=10)
        return [event async for event in events]

    worker = ModelWorker(max_queue=2)
    try:
        got = asyncio.run(collect(work, 2000))
        assert got[:-1] == [("text", i) for i in range(2000)] and got[-1] == (RESULT, "done")
        *_, (kind, error) = asyncio.run(collect(failing))
        assert kind == FAILED and "went away" in str(error)
        with pytest.raises(RuntimeError, match="went away"):  # nothing emitted: the failure is raised up front
            asyncio.run(collect(lambda emit: failing(lambda *a: None)))
    finally:
        worker.close()
