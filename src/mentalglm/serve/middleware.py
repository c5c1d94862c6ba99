"""ASGI middleware: a body-size limit that holds for chunked uploads too, an access log without post text,
and a safety net that turns any unexpected exception into a JSON 500 without letting its message reach the log.
What they answer is written in ``serve.errors``; this module only sends it."""

from __future__ import annotations

import json
import logging
import time

from .errors import body_too_large, internal_error

log = logging.getLogger("mentalglm.serve")


async def _send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Refuse bodies over a limit with 413 before the app parses them. ``limits`` maps a path prefix to its own
    limit (uploads get more room than JSON). The body is read here, so a chunked body without Content-Length is
    cut off as soon as it passes the limit, then replayed to the app."""

    def __init__(self, app, default: int, limits: dict[str, int] | None = None):
        self.app, self.default, self.limits = app, default, limits or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.limits.items():
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self._limit(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, int(declared), limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _too_large(send, size, limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the app expects

        return await self.app(scope, replay, send)


def tracking(send):
    """``send`` wrapped to note the response's status code, and the note (``{"code": 0}`` until it starts)."""
    status = {"code": 0}

    async def tracked(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
        await send(message)

    return tracked, status


async def _too_large(send, size: int, limit: int) -> None:
    await _send_json(send, 413, body_too_large(size, limit))


class SafetyNet:
    """The outermost guard: no request can take the server down or print a post into the log.

    Starlette's own 500 handler re-raises so the server logs the traceback *with the exception message*, which
    may quote the input; this logs the type and code locations only, answers JSON, and does not re-raise.
    It also writes the access log: method, path (never the query), status and duration.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        tracked, status = tracking(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the point of this class
            body = internal_error(exc, f"on {scope['method']} {scope['path']}")
            if not status["code"]:
                status["code"] = 500
                await _send_json(send, 500, body)
        finally:
            log.info("%s %s -> %s in %.0f ms", scope["method"], scope["path"], status["code"] or "-",
                     (time.perf_counter() - start) * 1000)
