"""OpenAIBackend against a real HTTP server on loopback that answers with the tiny transformers model."""

import socket
import time

import pytest

from mentalglm.llm.base import Backend, GenConfig, ModelUnavailable, Request
from mentalglm.llm.openai_client import PREFIX_INSTRUCTION, HTTPBackendError, OpenAIBackend, estimate_tokens
from servers import ChatServer

CONFIG = GenConfig(max_tokens=8)


def _req(text: str, prefix: str = "") -> Request:
    return Request(({"role": "user", "content": text},), answer_prefix=prefix)


@pytest.fixture(scope="module")
def server(tiny_hf_backend):
    with ChatServer(tiny_hf_backend, model_name="tiny") as srv:
        yield srv


@pytest.fixture
def srv(server):
    server.reset()
    server.api_key = None
    server.jitter = 0.0
    yield server
    server.reset()


def _client(srv, **kw) -> OpenAIBackend:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 10.0)
    return OpenAIBackend("tiny", base_url=srv.base_url, api_key_env="MENTALGLM_TEST_KEY", **kw)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("MENTALGLM_TEST_KEY", raising=False)


def test_answers_are_real_model_output(srv, tiny_hf_backend):
    client = _client(srv)
    assert isinstance(client, Backend)
    request = _req("我最近很难过，怎么办？")
    got = client.generate([request], CONFIG)[0]
    direct = tiny_hf_backend.generate([request], CONFIG)[0]
    assert got.text == direct.text and got.text
    assert got.prefilled is False
    assert (got.prompt_tokens, got.completion_tokens) == (direct.prompt_tokens, direct.completion_tokens)
    assert got.finish_reason == direct.finish_reason
    assert client.usage.calls == 1 and client.usage.completion_tokens == direct.completion_tokens
    body = srv.received[-1].body
    assert body["model"] == "tiny" and body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert body["seed"] == 0 and "stop" not in body and "top_k" not in body
    client.close()


def test_order_kept_under_concurrency(srv, tiny_hf_backend):
    srv.jitter = 0.05  # answers finish out of order
    requests = [_req(t) for t in ["我最近很难过", "I feel sad", "他很生气，因为失恋了。", "同学压力很大",
                                  "We cannot sleep", "妈妈害怕明天", "老师非常开心！"]]
    client = _client(srv, concurrency=4)
    got = client.generate(requests, CONFIG)
    expected = [tiny_hf_backend.generate([r], CONFIG)[0].text for r in requests]
    assert [g.text for g in got] == expected
    assert len(set(expected)) > 1
    assert client.usage.calls == len(requests) == srv.calls


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_then_succeeds(srv, status):
    srv.fail_next(2, status=status)
    got = _client(srv).generate([_req("我最近很难过")], CONFIG)[0]
    assert got.text and srv.calls == 3


def test_retry_after_is_honoured(srv):
    srv.fail_next(1, status=429, retry_after=0.6)
    t0 = time.perf_counter()
    _client(srv, backoff=0.001).generate([_req("hello")], CONFIG)
    assert time.perf_counter() - t0 >= 0.6 and srv.calls == 2


def test_retries_exhausted(srv):
    srv.fail_next(5, status=503, message="overloaded, try later")
    with pytest.raises(HTTPBackendError, match="overloaded, try later") as info:
        _client(srv, retries=2).generate([_req("hello")], CONFIG)
    assert info.value.status == 503 and srv.calls == 3


def test_timeout_is_retried(srv):
    # The first call never answers (until the server stops): only a client that gives up on it and asks again gets
    # an answer. The timeout need not be tight, only long enough for the tiny model's answer on a busy machine.
    srv.delay_next(1, seconds=600)
    got = _client(srv, timeout=2.0).generate([_req("我最近很难过")], CONFIG)[0]
    assert got.text and srv.calls == 2


def test_timeouts_exhausted(srv):
    srv.delay_next(2, seconds=600)  # never answered (until the server stops)
    with pytest.raises(HTTPBackendError, match="no answer within 0.3 s"):
        _client(srv, timeout=0.3, retries=1).generate([_req("hello")], CONFIG)
    assert srv.calls == 2


def test_400_fails_at_once_with_server_message(srv):
    srv.fail_next(1, status=400, message="This model's maximum context length is 8 tokens")
    with pytest.raises(HTTPBackendError, match="maximum context length is 8 tokens") as info:
        _client(srv).generate([_req("hello")], CONFIG)
    assert info.value.status == 400 and srv.calls == 1
    # a genuine validation error of the server, too
    with pytest.raises(HTTPBackendError, match="max_tokens must be a positive integer"):
        _client(srv).generate([_req("hello")], GenConfig(max_tokens=0))
    assert srv.calls == 2


def test_auth_header(srv, monkeypatch):
    _client(srv).generate([_req("hello")], CONFIG)
    assert "authorization" not in {k.lower() for k in srv.received[-1].headers}
    monkeypatch.setenv("MENTALGLM_TEST_KEY", "sk-test-123")
    srv.api_key = "sk-test-123"
    _client(srv).generate([_req("hello")], CONFIG)
    headers = {k.lower(): v for k, v in srv.received[-1].headers.items()}
    assert headers["authorization"] == "Bearer sk-test-123"
    monkeypatch.setenv("MENTALGLM_TEST_KEY", "wrong")
    with pytest.raises(HTTPBackendError, match="invalid API key") as info:
        _client(srv).generate([_req("hello")], CONFIG)
    assert info.value.status == 401


def test_answer_prefix_becomes_an_instruction(srv):
    request = Request(({"role": "system", "content": "你是助手。"}, {"role": "user", "content": "帖子：我很累。"}),
                      answer_prefix="这篇帖子体现了")
    got = _client(srv).generate([request], CONFIG)[0]
    assert got.prefilled is False
    sent = srv.received[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "你是助手。"}
    assert sent[1]["content"] == "帖子：我很累。" + PREFIX_INSTRUCTION.format(prefix="这篇帖子体现了")
    assert request.messages[1]["content"] == "帖子：我很累。"  # the caller's request is not modified


def test_stop_and_options_are_sent(srv):
    config = GenConfig(max_tokens=6, stop=("。", "\n"), top_k=5, seed=3, temperature=0.5, top_p=0.9)
    _client(srv, extra_body={"chat_template_kwargs": {"enable_thinking": False}}).generate([_req("hi")], config)
    body = srv.received[-1].body
    assert body["stop"] == ["。", "\n"] and body["top_k"] == 5 and body["seed"] == 3
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


def test_missing_base_url(monkeypatch):
    for var in ("MENTALGLM_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelUnavailable, match="--base-url"):
        OpenAIBackend("tiny")


def test_base_url_from_env(srv, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("MENTALGLM_BASE_URL", srv.base_url + "/")
    client = OpenAIBackend("tiny", backoff=0.01)
    assert client.base_url == srv.base_url
    assert client.generate([_req("hello")], CONFIG)[0].text


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAIBackend("tiny", base_url=f"http://127.0.0.1:{port}/v1", retries=1, backoff=0.01)
    with pytest.raises(ModelUnavailable, match="cannot reach"):
        client.generate([_req("hello")], CONFIG)


def test_wrong_path_hints_at_v1(srv):
    client = OpenAIBackend("tiny", base_url=srv.base_url.removesuffix("/v1"), backoff=0.01)
    with pytest.raises(HTTPBackendError, match="/v1") as info:
        client.generate([_req("hello")], CONFIG)
    assert info.value.status == 404


def test_token_estimate():
    assert estimate_tokens("我最近很难过。") == 7
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("") == 0
    client = OpenAIBackend("tiny", base_url="http://127.0.0.1:9/v1")
    assert client.count_tokens("我很累 ok") == 3 + 1
    client.close()
