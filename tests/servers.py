"""A real OpenAI-compatible HTTP server for tests: standard-library ``http.server`` on 127.0.0.1, in a thread.

It answers ``POST /v1/chat/completions`` from any ``Backend`` (the tiny transformers model in the tests, so the
answers are real model output) and ``GET /v1/models``. Faults can be queued to test clients:

    with ChatServer(backend, model_name="tiny") as server:
        server.fail_next(2, status=429, retry_after=0.1)   # the next two calls get 429
        server.delay_next(1, seconds=2.0)                   # then one call answers late
        server.meet_next(2)                                 # the next two calls answer only once both are in
        client = OpenAIBackend("tiny", base_url=server.base_url)

Everything received is kept in ``server.received`` (method, path, headers, JSON body).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mentalglm.llm.base import GenConfig, Request


@dataclass
class Fault:
    status: int = 0  # 0: no error response
    delay: float = 0.0  # seconds to wait before answering
    retry_after: float | None = None
    message: str = ""
    meet: threading.Barrier | None = None  # wait here until the other calls of the group arrive


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: dict | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping on an injected delay must not hold up shutdown

    def handle_error(self, request, client_address):  # clients that time out close their socket: not an error
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ChatServer:
    def __init__(self, backend, model_name: str = "tiny", api_key: str | None = None, jitter: float = 0.0):
        """``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        ``jitter``: a random delay up to this many seconds per call, to shuffle completion order."""
        self.backend = backend
        self.model_name = model_name
        self.api_key = api_key
        self.jitter = jitter
        self.received: list[Received] = []
        self.calls = 0  # chat completion calls, failed ones included
        self.met = 0  # calls that met the others of their meet_next group
        self._barriers: list[threading.Barrier] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._gen_lock = threading.Lock()  # one generation at a time: backends need not be thread-safe
        self._httpd: _Server | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None, message: str = "") -> None:
        with self._lock:
            self._faults.extend(Fault(status=status, retry_after=retry_after,
                                      message=message or f"injected failure {status}") for _ in range(n))

    def delay_next(self, n: int, seconds: float) -> None:
        with self._lock:
            self._faults.extend(Fault(delay=seconds) for _ in range(n))

    def meet_next(self, n: int, timeout: float = 60.0) -> None:
        """The next ``n`` calls are answered only once all ``n`` are in the server at the same time: proof that a
        client sends them in parallel, however slowly the machine runs. Calls that never meet (a client sending one
        at a time) get 504 after ``timeout``; ``met`` counts the calls that did."""
        meet = threading.Barrier(n, timeout=timeout)
        with self._lock:
            self._faults.extend(Fault(meet=meet) for _ in range(n))
            self._barriers.append(meet)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.received.clear()
            self.calls = self.met = 0

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ChatServer":
        self._stopped.clear()
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # handlers still sleeping on a delay answer nothing (the backend may be closed)
        for meet in self._barriers:
            meet.abort()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _next_fault(self) -> Fault | None:
        with self._lock:
            self.calls += 1
            return self._faults.popleft() if self._faults else None

    def complete(self, body: dict) -> tuple[int, dict, dict]:
        """(status, JSON response, extra headers) for one chat completion body."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            return 400, _error("`messages` must be a non-empty list of {role, content} objects"), {}
        max_tokens = body.get("max_tokens", 256)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return 400, _error(f"max_tokens must be a positive integer, got {max_tokens!r}"), {}
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        config = GenConfig(max_tokens=max_tokens, temperature=float(body.get("temperature", 0.0)),
                           top_p=float(body.get("top_p", 1.0)), top_k=int(body.get("top_k", 0)), stop=stop,
                           seed=int(body.get("seed", 0)))
        request = Request(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages))
        with self._gen_lock:
            gen = self.backend.generate([request], config)[0]
        return 200, {
            "id": f"chatcmpl-{random.getrandbits(48):012x}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": gen.finish_reason or "stop"}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "total_tokens": gen.prompt_tokens + gen.completion_tokens},
        }, {}


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "code": None}}


def _make_handler(server: ChatServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, format, *args):  # quiet
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if server.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error("invalid API key", "authentication_error"))
            return False

        def do_GET(self):
            server.received.append(Received("GET", self.path, dict(self.headers), None))
            if not self._authorised():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
            else:
                self._send(404, _error(f"no route {self.path}", "not_found"))

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw.decode("utf-8")) if raw else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = None
            server.received.append(Received("POST", self.path, dict(self.headers), body))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(f"no route {self.path}", "not_found"))
                return
            fault = server._next_fault()
            if not self._authorised():
                return
            if not isinstance(body, dict):
                self._send(400, _error("request body must be a JSON object"))
                return
            if server.jitter:
                time.sleep(random.random() * server.jitter)
            if fault is not None and fault.delay:
                if server._stopped.wait(fault.delay):
                    return
            if fault is not None and fault.meet is not None:
                try:
                    fault.meet.wait()
                except threading.BrokenBarrierError:
                    if not server._stopped.is_set():
                        self._send(504, _error("the calls of a meet_next group never were in the server together",
                                               "server_error"))
                    return
                with server._lock:
                    server.met += 1
            if fault is not None and fault.status:
                headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                kind = "rate_limit_error" if fault.status == 429 else "server_error" if fault.status >= 500 \
                    else "invalid_request_error"
                self._send(fault.status, _error(fault.message, kind), headers)
                return
            status, payload, headers = server.complete(body)
            self._send(status, payload, headers)

    return Handler
