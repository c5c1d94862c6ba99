"""One thread owns the model; requests wait for it in a bounded queue.

A llama.cpp context is not thread-safe, so a local backend gets a single worker thread, one unit of work at a
time, unless it batches itself: llama.cpp with ``--parallel N`` (its engine decodes the calls of N threads
together, so a request that arrives while others run joins their batch) and an HTTP backend in front of a
batching server get as many threads as they take at once. Admission is bounded: when ``max_queue``
requests are already waiting for or holding the model, the next one is refused at once (``QueueFull`` → HTTP
429 with a Retry-After estimate) instead of growing a queue without limit. A request that runs out of time
gets ``WorkTimeout``; if its work had not started it never runs, and if it had, it finishes (a generation
cannot be interrupted safely) and only then frees its place.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class QueueFull(RuntimeError):
    def __init__(self, limit: int, retry_after: int):
        super().__init__(f"the model is busy: {limit} request(s) are already queued or running; "
                         f"retry in about {retry_after} s")
        self.retry_after = retry_after


class WorkTimeout(RuntimeError):
    pass


class ModelWorker:
    def __init__(self, max_queue: int, threads: int = 1):
        """``threads`` > 1 only for backends that are thread-safe and gain from parallel calls (HTTP clients of a
        batching server); local models get one."""
        self.max_queue = max(1, int(max_queue))
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(threads)), thread_name_prefix="mentalglm-model")
        self._lock = threading.Lock()
        self._admitted = 0  # requests admitted and not yet finished on the worker
        self._background = 0  # job units submitted with call()
        self._mean_s = 1.0  # moving average of a unit's duration, for Retry-After
        self.completed = 0

    # ------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        with self._lock:
            return self._admitted + self._background

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the work ahead times the mean duration of a unit."""
        with self._lock:
            ahead = self._admitted + self._background
            return int(min(120, max(1, math.ceil(self._mean_s * max(1, ahead)))))

    def _timed(self, fn: Callable, *args) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed
                self.completed += 1

    # ------------------------------------------------------------------ requests
    async def submit(self, fn: Callable, *args, timeout: float) -> Any:
        """Run ``fn(*args)`` on the model thread for an HTTP request; QueueFull or WorkTimeout when it cannot."""
        with self._lock:
            if self._admitted >= self.max_queue:
                full = True
            else:
                full = False
                self._admitted += 1
        if full:
            raise QueueFull(self.max_queue, self.retry_after())
        try:
            future = self._pool.submit(self._timed, fn, *args)
        except RuntimeError:  # shut down
            self._release(None)
            raise
        future.add_done_callback(self._release)  # the place frees when the work is really over
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()  # never runs if it had not started
            raise WorkTimeout(f"the request did not finish within {timeout:g} s") from None

    def _release(self, _future: Future | None) -> None:
        with self._lock:
            self._admitted -= 1

    # ------------------------------------------------------------------ background jobs
    def call(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` on the model thread and wait (from a job thread). Not admission-limited: the job
        runner submits one unit at a time, so jobs add at most one unit to the queue."""
        with self._lock:
            self._background += 1
        try:
            return self._pool.submit(self._timed, fn, *args).result()
        finally:
            with self._lock:
                self._background -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
