"""Running the app under uvicorn: in the foreground (``mentalglm serve``) or on a background thread with a free
port (tests, benchmarks)."""

from __future__ import annotations

import threading
import time

import uvicorn


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, log_config=None, **kw) -> uvicorn.Config:
    # Our SafetyNet middleware writes the access log (path, status, time; never a query string), so uvicorn's is
    # off. limit_concurrency is the outer bound on open connections; the model queue (429) is the inner one.
    return uvicorn.Config(app, host=host, port=port, log_config=log_config, access_log=False,
                          timeout_keep_alive=15, limit_concurrency=kw.pop("limit_concurrency", 256),
                          timeout_graceful_shutdown=kw.pop("timeout_graceful_shutdown", 10), **kw)


def run_server(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    uvicorn.Server(uvicorn_config(app, host, port)).run()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/healthz")`` - uvicorn on a thread, port 0."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.thread = threading.Thread(target=self.server.run, name="mentalglm-serve", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
