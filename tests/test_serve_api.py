"""The HTTP API of `mentalglm serve`: a real uvicorn on loopback over real llama.cpp models."""

import json
import threading
import time

import pytest

from mentalglm import DISCLAIMER
from mentalglm.analyze import Analyzer
from mentalglm.inputs import Post
from mentalglm.llm.base import GenConfig, Request
from mentalglm.llm.openai_client import HTTPBackendError, OpenAIBackend
from mentalglm.safety import resources_message
from mentalglm.serve import ServeSettings
from mentalglm.serve.service import AnalysisService
from serve_helpers import error_of, hold_model, scripted_llama, serve, tiny_llama, wait_until  # noqa: F401  (fixtures)

POST = "最近总觉得自己什么都做不好，大家一定都讨厌我"


@pytest.fixture(scope="module")
def api(tiny_llama, tmp_path_factory):  # noqa: F811
    with serve(tiny_llama, tmp_path_factory.mktemp("api"), max_batch=4, max_post_chars=200) as (server, client):
        yield server, client


def test_health_tasks_models_and_offline_docs(api):
    _, client = api
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "tiny.gguf" and health["auth_required"] is False
    assert health["limits"]["max_batch"] == 4 and health["disclaimer"] == DISCLAIMER
    tasks = client.get("/v1/tasks").json()
    names = [t["name"] for t in tasks["data"]]
    assert {"cognitive_distortion", "suicide_risk", "emotion"} <= set(names) and tasks["default"]
    risk = next(t for t in tasks["data"] if t["name"] == "suicide_risk")
    assert risk["high_risk"] == ["高自杀风险"] and {lab["en"] for lab in risk["labels"]} >= {"high suicide risk"}
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny.gguf"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # no internet needed to read the API docs
    asset = docs.text.split('src="')[1].split('"')[0]
    assert client.get(asset).status_code == 200
    assert "/v1/analyze" in client.get("/openapi.json").json()["paths"]


def test_analyze_matches_the_model_and_keeps_ids(api, tiny_llama):  # noqa: F811
    _, client = api
    body = {"posts": [{"id": "a1", "text": POST}, "周末和朋友去爬山"], "tasks": ["suicide_risk", "emotion"],
            "explain": False}
    response = client.post("/v1/analyze", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["tasks"] == ["suicide_risk", "emotion"] and out["explain"] is False
    assert out["disclaimer"] == DISCLAIMER and out["high_risk"] is False and out["resources"] is None
    assert [r["id"] for r in out["results"]] == ["a1", "2"]
    first = out["results"][0]["analyses"]
    assert [a["task"] for a in first] == ["suicide_risk", "emotion"]
    assert set(first[0]) >= {"labels", "label_en", "explanation", "raw", "parse_status", "high_risk", "warnings"}
    # The same answer the analyzer gives in-process: the service adds transport, not behaviour.
    service = AnalysisService(tiny_llama, "instruction", ServeSettings(max_tokens=24))
    direct = Analyzer(tiny_llama, service.config(["suicide_risk"], False, False)).run([Post("a1", POST)])[0]
    assert first[0]["raw"] == direct.raw and first[0]["parse_status"] == direct.parse_status


@pytest.mark.parametrize("body, status, field, words", [
    ('{"text": "a", ', 400, None, "not valid JSON"),
    ('{"text": "   "}', 422, "text", "the post is empty"),
    ('{"posts": ["ok", ""]}', 422, "posts[1].text", "the post is empty"),
    ('{"text": "' + "长" * 201 + '"}', 422, "text", "201 characters; at most 200"),
    ('{"text": "a", "tasks": ["emotoin"]}', 422, "tasks", "unknown task 'emotoin'"),
    ('{"posts": ["a", "b", "c", "d", "e"]}', 422, "posts", "at most 4"),
    ('{"txt": "a"}', 422, "txt", "unknown field"),
    ('{"text": "a", "posts": ["b"]}', 422, None, "exactly one of"),
    ('{"posts": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]}', 422, "posts[1].id", "duplicate post id"),
    ('{"posts": ["ok", "\\ud800 broken"]}', 422, "posts[1].text", "not valid Unicode"),
])
def test_bad_requests_get_precise_4xx(api, body, status, field, words):
    _, client = api
    response = client.post("/v1/analyze", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert words in error["message"]
    if field:
        assert any(d["field"] == field for d in error.get("details", [])), error


def test_unknown_task_message_lists_the_known_ones(api):
    _, client = api
    error = error_of(client.post("/v1/analyze", json={"text": "a", "tasks": ["nope"]}))
    assert "suicide_risk" in error["message"] and "emotion" in error["message"]


def test_body_limit_holds_with_and_without_content_length(tiny_llama, tmp_path):  # noqa: F811
    with serve(tiny_llama, tmp_path, max_body_bytes=2000) as (_, client):
        big = json.dumps({"text": "a" * 5000}).encode()
        response = client.post("/v1/analyze", content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "at most 2,000" in error_of(response)["message"]

        def chunks():  # no Content-Length: the limit must still hold while the body streams in
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        response = client.post("/v1/analyze", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert client.post("/v1/analyze", json={"text": "小帖子", "tasks": ["emotion"]}).status_code == 200


def test_high_risk_returns_the_resources_message(scripted_llama, tmp_path):  # noqa: F811
    with serve(scripted_llama, tmp_path) as (_, client):
        out = client.post("/v1/analyze", json={"text": POST, "tasks": ["suicide_risk", "emotion"]}).json()
    assert out["high_risk"] is True and out["resources"] == resources_message()
    risk = out["results"][0]["analyses"][0]
    assert risk["labels"] == ["高自杀风险"] and risk["high_risk"] and risk["label_en"] == ["high suicide risk"]
    assert risk["explanation"] == "我不想活了，没有希望"
    assert out["results"][0]["analyses"][1]["high_risk"] is False


def test_bearer_token(tiny_llama, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MENTALGLM_TEST_TOKEN", "s3cret-token")
    with serve(tiny_llama, tmp_path, token_env="MENTALGLM_TEST_TOKEN") as (_, client):
        missing = client.get("/v1/tasks")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in error_of(missing)["message"]
        wrong = client.post("/v1/analyze", json={"text": "a"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and error_of(wrong)["message"] == "invalid bearer token"
        ok = client.get("/v1/tasks", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert client.get("/healthz").json()["auth_required"] is True  # the page learns it must ask
        assert client.get("/").status_code == 200
    monkeypatch.setenv("MENTALGLM_TEST_TOKEN", "")
    with pytest.raises(ValueError, match="MENTALGLM_TEST_TOKEN"):  # an empty token fails closed, at startup
        serve(tiny_llama, tmp_path, token_env="MENTALGLM_TEST_TOKEN").__enter__()


def test_full_queue_answers_429_with_retry_after(tiny_llama, tmp_path):  # noqa: F811
    with serve(tiny_llama, tmp_path, max_queue=1) as (server, client):
        release = hold_model(server)
        first: dict = {}
        waiting = threading.Thread(target=lambda: first.update(r=client.post(
            "/v1/analyze", json={"text": POST, "tasks": ["emotion"]})))
        waiting.start()
        wait_until(lambda: server.app.state.serve.worker.pending == 2)  # the first one waits for the model
        refused = client.post("/v1/analyze", json={"text": POST, "tasks": ["emotion"]})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert error_of(refused)["type"] == "rate_limit_error"
        release.set()
        waiting.join(60)
        assert first["r"].status_code == 200  # the admitted request was served once the model was free
        assert client.post("/v1/analyze", json={"text": POST, "tasks": ["emotion"]}).status_code == 200


def test_timeout_answers_504_and_the_server_goes_on(tiny_llama, tmp_path):  # noqa: F811
    # The model is held (by an event, not by CPU speed) past the timeout; the timeout need not be tight, only
    # long enough for the tiny model's answer at the end on a busy machine.
    with serve(tiny_llama, tmp_path, request_timeout=3) as (server, client):
        release = hold_model(server)
        start = time.monotonic()
        response = client.post("/v1/analyze", json={"text": POST, "tasks": ["emotion"]})
        assert response.status_code == 504 and time.monotonic() - start < 30  # not when the model is free (60 s)
        assert "3 s" in error_of(response)["message"]
        release.set()
        # the timed-out work was dropped, its place freed
        wait_until(lambda: server.app.state.serve.worker.pending == 0)
        assert client.post("/v1/analyze", json={"text": POST, "tasks": ["emotion"]}).status_code == 200


def test_backend_failure_is_a_503_not_a_crash(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    backend = OpenAIBackend("remote", base_url=f"http://127.0.0.1:{dead}/v1", retries=0, timeout=2)
    with serve(backend, tmp_path, prompt_style="zeroshot") as (_, client):
        response = client.post("/v1/analyze", json={"text": POST, "tasks": ["emotion"]})
        assert response.status_code == 503, response.text
        assert "cannot reach" in error_of(response)["message"] and response.headers["retry-after"]
        chat = client.post("/v1/chat/completions", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503
        # A job meets the same failure: it fails (rerun it), rather than writing a file of error rows.
        created = client.post("/v1/jobs", files={"file": ("posts.csv", "text\n我很难过\n".encode())},
                              data={"tasks": "emotion"})
        job = _wait_job(client, created.json()["id"])
        assert job["status"] == "failed" and "cannot reach" in job["error"], job
        assert client.get("/healthz").status_code == 200


def test_logs_hold_lengths_and_hashes_never_post_text(api, caplog):
    _, client = api
    secret = "我的秘密帖子内容不应出现在日志里"
    caplog.set_level("DEBUG")
    client.post("/v1/analyze", json={"text": secret, "tasks": ["emotion"]})
    client.post("/v1/analyze", json={"posts": [secret, ""]})  # a 422 mentioning the bad post
    client.post("/v1/chat/completions", json={"model": "tiny.gguf", "messages": [{"role": "user", "content": secret}],
                                              "max_tokens": 4})
    job = client.post("/v1/jobs", files={"file": ("p.csv", f"text\n{secret}\n".encode())}, data={"tasks": "emotion"})
    _wait_job(client, job.json()["id"])  # the job's own log lines are in too
    logged = caplog.text
    assert "analyze: 1 post(s)" in logged and f"len={len(secret)} sha256=" in logged
    assert secret not in logged and secret[:6] not in logged


def test_openai_endpoint_serves_the_projects_own_client(api, tiny_llama):  # noqa: F811
    server, client = api
    remote = OpenAIBackend("tiny.gguf", base_url=server.url + "/v1", retries=0, timeout=30)
    request = Request(({"role": "user", "content": "我最近很难过，怎么办？"},))
    config = GenConfig(max_tokens=8)
    got = remote.generate([request], config)[0]
    direct = tiny_llama.generate([request], config)[0]
    assert got.text == direct.text and got.text
    assert (got.prompt_tokens, got.completion_tokens) == (direct.prompt_tokens, direct.completion_tokens)
    assert remote.usage.calls == 1
    body = client.post("/v1/chat/completions", json={
        "model": "tiny.gguf", "messages": [{"role": "user", "content": [{"type": "text", "text": "你好"}]}],
        "max_tokens": 3}).json()
    short = tiny_llama.generate([Request(({"role": "user", "content": "你好"},))], GenConfig(max_tokens=3))[0]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == short.text
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    with pytest.raises(HTTPBackendError, match="is not served here") as err:
        OpenAIBackend("gpt-4", base_url=server.url + "/v1", retries=0).generate([request], config)
    assert err.value.status == 404
    several = client.post("/v1/chat/completions", json={"model": "tiny.gguf", "n": 2,
                                                        "messages": [{"role": "user", "content": "a"}]})
    assert several.status_code == 422 and "only n=1" in error_of(several)["message"]  # streaming: test_serve_stream
    too_long = client.post("/v1/chat/completions", json={"model": "tiny.gguf",
                                                         "messages": [{"role": "user", "content": "难过" * 600}]})
    assert too_long.status_code == 400 and error_of(too_long)["code"] == "context_length_exceeded"
    remote.close()


def _wait_job(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_upload_job_writes_jsonl_with_progress(api):
    _, client = api
    csv = "编号,内容\np1,我很难过\np2,今天很开心\np3,\np4,考试没过\n".encode()
    created = client.post("/v1/jobs", files={"file": ("posts.csv", csv)},
                          data={"text_column": "内容", "id_column": "编号", "tasks": "emotion,suicide_risk",
                                "explain": "false"})
    assert created.status_code == 202, created.text
    job = _wait_job(client, created.json()["id"])
    assert job["status"] == "done" and job["total"] == 8 and job["done"] == 8 and job["progress"] == 1.0
    assert job["errors"] == 2  # the empty row, once per task
    download = client.get(job["results_url"])
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert len(rows) == 8 and {r["id"] for r in rows} == {"p1", "p2", "p3", "p4"}
    empty = [r for r in rows if r["id"] == "p3"]
    assert all(r["parse_status"] == "error" and "posts.csv line 4: empty post" in r["error"] for r in empty)
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


@pytest.mark.parametrize("filename, data, words", [
    ("posts.csv", b"title,body\nx,y\n", "no text column; choose one with text_column (columns are ['title', 'body'])"),
    ("posts.xlsx", b"whatever", "unknown format 'xlsx'"),
    ("posts.csv", b"text\n", "the file holds no posts"),
])
def test_bad_uploads_are_refused_with_the_reason(api, filename, data, words):
    _, client = api
    response = client.post("/v1/jobs", files={"file": (filename, data)})
    assert response.status_code == 422
    assert words in error_of(response)["message"]


def test_in_front_of_a_batching_server_calls_go_out_in_parallel(tiny_llama, tmp_path):  # noqa: F811
    from servers import ChatServer

    with ChatServer(tiny_llama, model_name="upstream") as upstream:
        # Two upstream answers that come only once both calls are in the upstream server at the same time, as a
        # batching GPU server would take them: one model thread, one call at a time, would never get them.
        upstream.meet_next(2)
        remote = OpenAIBackend("upstream", base_url=upstream.base_url, concurrency=2, retries=0, timeout=90)
        with serve(remote, tmp_path) as (_, client):
            body = {"model": "upstream", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
            statuses: list[int] = []
            calls = [threading.Thread(target=lambda: statuses.append(
                client.post("/v1/chat/completions", json=body).status_code)) for _ in range(2)]
            for t in calls:
                t.start()
            for t in calls:
                t.join(90)
            met = upstream.met
            # The posts of one /v1/analyze batch go upstream in parallel too.
            upstream.meet_next(2)
            batch = client.post("/v1/analyze", json={"posts": ["一", "二"], "tasks": ["emotion"], "explain": False})
            batch_met = upstream.met - met
        remote.close()
    assert statuses == [200, 200] and met == 2  # overlapped
    assert batch.status_code == 200 and batch_met == 2


def test_upload_rows_the_model_cannot_take_become_row_errors(api):
    _, client = api
    jsonl = '{"id": "ok", "text": "今天很开心"}\n{"id": "bad", "text": "\\ud800坏"}\n'.encode()
    created = client.post("/v1/jobs", files={"file": ("posts.jsonl", jsonl)}, data={"tasks": "emotion"})
    job = _wait_job(client, created.json()["id"])
    assert job["status"] == "done" and job["done"] == 2 and job["errors"] == 1
    rows = {r["id"]: r for r in map(json.loads, client.get(job["results_url"]).text.splitlines())}
    assert rows["bad"]["parse_status"] == "error" and "not valid Unicode" in rows["bad"]["error"]
    assert rows["ok"]["parse_status"] != "error"
