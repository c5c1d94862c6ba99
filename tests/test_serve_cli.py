"""`mentalglm serve` as a user runs it: a subprocess on a free loopback port, stopped with SIGTERM."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_serves_and_stops_cleanly(tiny_gguf_path, tmp_path):
    port = _free_port()
    post = "命令行服务测试帖子，不应进入日志"
    env = {**os.environ, "MENTALGLM_TEST_TOKEN": "tok-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mentalglm.cli", "serve", "--model", str(tiny_gguf_path), "--port", str(port),
         "--threads", "1", "--n-ctx", "512", "--prompt-style", "instruction", "--jobs-dir", str(tmp_path / "jobs"),
         "--token-env", "MENTALGLM_TEST_TOKEN", "--queue", "2", "--max-batch", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a busy machine imports and loads slowly
        while True:
            try:
                health = httpx.get(base + "/healthz", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert health["auth_required"] is True and health["limits"]["max_batch"] == 3
        assert health["queue"]["limit"] == 2
        auth = {"Authorization": "Bearer tok-123"}
        response = httpx.post(base + "/v1/analyze", json={"text": post, "tasks": ["emotion"]}, headers=auth, timeout=30)
        assert response.status_code == 200 and response.json()["results"][0]["analyses"][0]["task"] == "emotion"
        assert httpx.post(base + "/v1/analyze", json={"text": post}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says how the process ended.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    assert f"page http://127.0.0.1:{port}/" in out
    assert "POST /v1/analyze -> 200" in err and "sha256=" in err  # the access log...
    assert post not in err and post not in out  # ...without the post
