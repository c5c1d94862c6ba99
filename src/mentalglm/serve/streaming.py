"""Server-sent events from work on the model thread.

The work (an analysis, a chat answer) runs on the model worker like any request, through ``ModelWorker.submit``, so
admission (429), the queue and the request timeout are the same as for a non-streamed answer. It reports progress
by calling ``emit(kind, data)`` on the model thread; the events cross to the event loop through a queue. The HTTP
status is decided by the first event: everything that goes wrong before it (queue full, prompt too long, timeout,
the model unavailable) is an ordinary JSON error. After it, the stream is under way and a failure can only be told
inside it. When the client goes away or the time runs out, the next ``emit`` raises ``StreamClosed`` on the model
thread, which stops the generation at the next token and frees the model.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from typing import Any, AsyncIterator, Callable

from .. import DISCLAIMER
from .errors import APIError, stream_error
from .worker import ModelWorker

RESULT, FAILED = "result", "failed"  # the last event: what the work returned, or the exception it raised


class StreamClosed(Exception):
    """Raised inside the work when nobody reads the stream any more."""


class _Channel:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue, self.closed = loop, asyncio.Queue(), threading.Event()

    def emit(self, kind: str, data: Any) -> None:  # on the model thread
        if self.closed.is_set():
            raise StreamClosed("the client stopped reading")
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, data))


async def model_events(worker: ModelWorker, work: Callable, *args, timeout: float) -> AsyncIterator[tuple[str, Any]]:
    """Run ``work(*args, emit)`` on the model thread; returns the events ``(kind, data)`` it emits, then
    ``(RESULT, value)`` or ``(FAILED, exception)``. Anything that fails before the first event is raised here,
    before a response has started (QueueFull, WorkTimeout, the work's own exception)."""
    channel = _Channel(asyncio.get_running_loop())
    done = asyncio.ensure_future(worker.submit(work, *args, channel.emit, timeout=timeout))
    done.add_done_callback(lambda f: f.cancelled() or f.exception())  # read here: no "never retrieved" warnings
    getter = asyncio.ensure_future(channel.queue.get())
    await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
    if done.done() and not getter.done() and done.exception() is not None:
        getter.cancel()
        channel.closed.set()
        raise done.exception()
    return _events(channel, getter, done)


async def _events(channel: _Channel, getter: asyncio.Future, done: asyncio.Future) -> AsyncIterator[tuple[str, Any]]:
    try:
        while True:
            if not getter.done():
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                getter = asyncio.ensure_future(channel.queue.get())
                continue
            getter.cancel()  # a cancelled get leaves its item in the queue
            # Events are queued before the work's end is signalled (both go through the loop, in order), so once
            # the work is done, whatever it emitted is waiting in the queue: all of it goes out before the end.
            while not channel.queue.empty():
                yield channel.queue.get_nowait()
            error = done.exception()
            yield (FAILED, error) if error is not None else (RESULT, done.result())
            return
    finally:  # the client went away (the response was cancelled), or the stream ended
        channel.closed.set()
        getter.cancel()
        if not done.done():
            done.cancel()  # stops waiting; the work itself stops at its next emit and then frees its place


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event; ``data`` as JSON (a string is sent as it is, e.g. OpenAI's ``[DONE]``)."""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


# Proxies (nginx) buffer responses unless told not to; caches must not keep a stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def analysis_events(events, body: Callable[[list], dict], resources: str) -> AsyncIterator[str]:
    """``POST /v1/analyze`` streamed: the work's events as named server-sent events. The crisis resources go out
    the moment a row is flagged (with label heads, before its explanation is written); ``done`` carries
    ``body(rows)``, exactly the unstreamed response."""
    warned = False
    async for kind, data in events:
        if kind == RESULT:
            yield sse(body(data), "done")
        elif kind == FAILED:
            yield sse(stream_error(data), "error")
        else:
            yield sse(data, kind)
        if kind in ("decided", "analysis") and data["high_risk"] and not warned:
            warned = True
            yield sse({"high_risk": True, "resources": resources, "disclaimer": DISCLAIMER}, "resources")


async def chat_chunks(events, model: str, include_usage: bool,
                      extension: Callable[[dict], dict] | None = None) -> AsyncIterator[str]:
    """``POST /v1/chat/completions`` streamed: OpenAI's ``chat.completion.chunk`` events, then ``[DONE]``.

    ``extension`` (a C-IMHI question answered by label heads) turns a row into the ``mentalglm`` object: it goes in
    the first chunk, from the decision made before any text (labels, scores, high_risk, resources), and again in
    the last one, complete (evidence_ok). OpenAI clients keep unknown fields of a chunk (``chunk.model_extra``)."""
    cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    opened = False  # the first chunk names the role, as OpenAI's do
    async for kind, data in events:
        if kind == "decided" and extension:
            opened = True
            yield chunk({"role": "assistant", "content": ""}, mentalglm=extension(data))
        elif kind == "text":
            if not opened:
                opened = True
                yield chunk({"role": "assistant", "content": ""})
            yield chunk({"content": data["text"]})
        elif kind == FAILED:
            yield sse(stream_error(data))
            return
        elif kind == RESULT and extension:
            [row] = data
            if row.error:
                yield sse(stream_error(APIError(502, f"the model failed on this post: {row.error}", "server_error")))
                return
            yield chunk({}, "stop", mentalglm=extension(row.__dict__))
        elif kind == RESULT:
            if not opened:  # an empty answer still opens the message
                yield chunk({"role": "assistant", "content": ""})
            usage = {"prompt_tokens": data.prompt_tokens, "completion_tokens": data.completion_tokens,
                     "total_tokens": data.prompt_tokens + data.completion_tokens}
            yield chunk({}, data.finish_reason or "stop")
    if include_usage:  # stream_options.include_usage: a last chunk with usage and no choices
        yield sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                   "usage": usage})
    yield sse("[DONE]")
