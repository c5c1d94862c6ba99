"""Fixtures for the service tests: `mentalglm serve`'s app under a real uvicorn on 127.0.0.1 (free port), over a
real llama.cpp model (the random tiny GGUF, or the scripted one that always answers high risk).

Test modules import what they use: ``from serve_helpers import serve, tiny_llama, ...``.
"""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest

from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.serve import BackgroundServer, ServeSettings, create_app
from scripted_gguf import build_scripted_gguf


@pytest.fixture(scope="session")
def tiny_llama(tiny_gguf_path):
    # One thread: llama.cpp's worker threads spin, and these tests share 2 cores with everything else.
    backend = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def scripted_llama(tmp_path_factory):
    backend = LlamaCppBackend(build_scripted_gguf(tmp_path_factory.mktemp("scripted") / "scripted.gguf"),
                              n_ctx=4096, n_threads=1)
    yield backend
    backend.close()


class PacedLlama(LlamaCppBackend):
    """The real llama.cpp backend, writing no faster than one piece per ``delay`` seconds, as a real model on a busy
    CPU does: the tiny models finish in milliseconds, before anyone could see a stream mid-way. Counts the pieces
    it wrote (``pieces``), so a test can tell a stream that stopped early from one that ran to its end. ``held``
    stops its streams mid-way until the test lets them go on, so "mid-way" does not depend on the machine's speed."""

    delay = 0.05
    hold: threading.Event | None = None  # set by ``held``: after the first piece with text, wait for it to be set

    def stream(self, request, config):
        self.pieces, shown = 0, False
        for piece in super().stream(request, config):
            self.pieces += 1
            shown = shown or bool(piece.text)
            yield piece
            hold = self.hold
            if hold is not None and shown:
                hold.wait(60)
            time.sleep(self.delay)


@contextlib.contextmanager
def held(backend: PacedLlama):
    """Streams of ``backend`` stop after their first piece of text until the yielded event is set (at the latest
    when the block ends)."""
    backend.hold = threading.Event()
    try:
        yield backend.hold
    finally:
        backend.hold.set()
        backend.hold = None


@pytest.fixture(scope="session")
def paced_scripted_llama(tmp_path_factory):
    backend = PacedLlama(build_scripted_gguf(tmp_path_factory.mktemp("paced") / "scripted.gguf"), n_ctx=4096,
                         n_threads=1)
    yield backend
    backend.close()


@contextlib.contextmanager
def serve(backend, tmp_path, prompt_style: str = "instruction", **settings):
    """Start the app over ``backend``; yields (server, httpx client with base_url)."""
    settings.setdefault("jobs_dir", tmp_path / "jobs")
    settings.setdefault("max_tokens", 24)
    app = create_app(backend, prompt_style, ServeSettings(**settings))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client


def hold_model(server) -> threading.Event:
    """Occupy the server's model thread (as a long generation would) until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def long_generation():
        started.set()
        release.wait(60)

    threading.Thread(target=server.app.state.serve.worker.call, args=(long_generation,), daemon=True).start()
    assert started.wait(60)
    return release


def wait_until(condition, timeout=60, what="the server"):
    """Poll ``condition`` until it holds (a generous deadline: a busy machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]
