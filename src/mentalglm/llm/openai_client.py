"""A client for any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, llama.cpp server, `mentalglm serve`,
OpenAI itself), with concurrency, retries and token accounting.

    backend = OpenAIBackend("mentalglm", base_url="http://gpu-box:8000/v1")
    backend.generate([Request(messages)], GenConfig())

Over HTTP the answer cannot be prefilled: ``answer_prefix`` becomes a line in the last user message asking the
model to begin with it, and generations come back with ``prefilled=False``.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import httpx

from .base import Backend, GenConfig, Generation, ModelUnavailable, Request, Usage

log = logging.getLogger(__name__)

BASE_URL_ENV = ("MENTALGLM_BASE_URL", "OPENAI_BASE_URL")
# Appended to the last user message when a request has an answer_prefix (it cannot be prefilled over HTTP).
PREFIX_INSTRUCTION = "\n\n请直接以“{prefix}”开头作答。(Begin your answer with: {prefix})"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0


class HTTPBackendError(RuntimeError):
    """The server refused a request (a 4xx other than 429, or retries exhausted); the message is the server's."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x3000 <= o <= 0x30FF or 0xFF00 <= o <= 0xFFEF
            or 0xAC00 <= o <= 0xD7AF or 0x20000 <= o <= 0x2FFFF or 0xF900 <= o <= 0xFAFF)


def estimate_tokens(text: str) -> int:
    """About one token per CJK character (and CJK punctuation), one per four other characters."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    other = len(text) - cjk
    return cjk + (other + 3) // 4


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:2000] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)
        if isinstance(err, str):
            return err
        if "detail" in body:
            return str(body["detail"])
    return str(body)[:2000]


class OpenAIBackend(Backend):
    thread_safe = True  # httpx.Client is; requests from several threads share its connection pool
    """Chat completions over HTTP. ``base_url`` includes ``/v1`` (e.g. ``http://localhost:8000/v1``).

    ``api_key_env`` names the environment variable holding the key (unset or empty: no Authorization header).
    ``retries`` extra attempts after the first, on connection errors, timeouts, 408/409/425/429 and 5xx, waiting
    ``backoff * 2**attempt`` seconds (with jitter) or the server's ``Retry-After``. ``concurrency`` requests in
    flight at once. ``extra_body`` is merged into every request body (e.g. ``{"chat_template_kwargs": ...}``).
    """

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, retries: int = 4, backoff: float = 1.0, concurrency: int = 4,
                 context_length: int = 8192, extra_body: dict | None = None):
        base_url = base_url or next((os.environ[k] for k in BASE_URL_ENV if os.environ.get(k)), None)
        if not base_url:
            raise ModelUnavailable(
                f"no server for model {model!r}: pass --base-url http://HOST:PORT/v1 (an OpenAI-compatible "
                f"server such as `mentalglm serve`, `vllm serve` or llama.cpp's server) or set "
                f"{' or '.join(BASE_URL_ENV)}")
        self.name = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.batch_size = max(1, int(concurrency))  # parallel requests: what one generate() call is worth
        self.context_length = int(context_length)
        self.extra_body = dict(extra_body or {})
        self.usage = Usage()
        self._usage_lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        if key:  # local servers usually want none; never send an empty bearer
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout), headers=headers,
            limits=httpx.Limits(max_connections=self.batch_size, max_keepalive_connections=self.batch_size))

    # ------------------------------------------------------------------ request building
    def payload(self, request: Request, config: GenConfig) -> dict:
        """The JSON body sent for one request."""
        messages = [dict(m) for m in request.messages]
        if request.answer_prefix:
            line = PREFIX_INSTRUCTION.format(prefix=request.answer_prefix)
            for m in reversed(messages):
                if m.get("role") == "user":
                    m["content"] = f"{m.get('content') or ''}{line}"
                    break
            else:
                messages.append({"role": "user", "content": line.strip()})
        body: dict = {"model": self.model, "messages": messages, "max_tokens": int(config.max_tokens),
                      "temperature": float(config.temperature), "top_p": float(config.top_p),
                      "seed": int(config.seed)}
        if config.stop:
            body["stop"] = list(config.stop)
        # Extensions of vLLM and llama.cpp's server, sent only when set: api.openai.com rejects unknown fields.
        if config.top_k:
            body["top_k"] = int(config.top_k)
        if config.repeat_penalty and config.repeat_penalty != 1.0:
            body["repetition_penalty"] = float(config.repeat_penalty)
        body.update(self.extra_body)
        return body

    # ------------------------------------------------------------------ transport
    def _sleep_before_retry(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:  # the server knows best
            delay = min(retry_after, MAX_RETRY_AFTER_S)
        else:  # exponential, with jitter so concurrent workers do not retry in lockstep
            delay = min(self.backoff * (2 ** attempt) * (0.5 + random.random()), MAX_BACKOFF_S)
        time.sleep(delay)

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/chat/completions"
        last_error = ""
        for attempt in range(self.retries + 1):
            final = attempt == self.retries
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                last_error = f"{type(exc).__name__}: {exc}"
                if final and isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
                    raise HTTPBackendError(f"{url}: no answer within {self.timeout:g} s, {attempt + 1} attempts; "
                                           f"raise the timeout or lower the concurrency") from exc
                if final:
                    raise ModelUnavailable(f"cannot reach {url} after {attempt + 1} attempts ({last_error}); "
                                           f"is the server running?") from exc
                log.info("%s: %s, retrying", self.name, last_error)
                self._sleep_before_retry(attempt, None)
                continue
            if response.status_code < 400:
                try:
                    return response.json()
                except ValueError as exc:
                    raise HTTPBackendError(f"{url}: response is not JSON: {response.text[:200]!r}",
                                           response.status_code) from exc
            message = _server_message(response)
            last_error = f"HTTP {response.status_code}: {message}"
            if response.status_code not in RETRY_STATUS or final:
                hint = " (does base_url end in /v1?)" if response.status_code == 404 else ""
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise HTTPBackendError(f"{url}{tries}: {last_error}{hint}", response.status_code)
            log.info("%s: %s, retrying", self.name, last_error)
            self._sleep_before_retry(attempt, _retry_after(response))
        raise HTTPBackendError(f"{url}: {last_error}")  # pragma: no cover - the loop always returns or raises

    def _one(self, request: Request, config: GenConfig) -> Generation:
        body = self.payload(request, config)
        t0 = time.perf_counter()
        data = self._post(body)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        choices = data.get("choices") or []
        if not choices:
            raise HTTPBackendError(f"{self.base_url}: response without choices: {str(data)[:200]}")
        choice = choices[0]
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None:
            text = choice.get("text") or ""
        finish = choice.get("finish_reason") or "stop"
        for s in config.stop:  # servers drop the stop string; cut anyway for servers that ignore `stop`
            if s and s in text:
                text, finish = text[:text.index(s)], "stop"
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if prompt_tokens is None:
            prompt_tokens = sum(estimate_tokens(str(m.get("content") or "")) for m in body["messages"])
        if completion_tokens is None:
            completion_tokens = estimate_tokens(text)
        gen = Generation(text=text, prompt_tokens=int(prompt_tokens), completion_tokens=int(completion_tokens),
                         latency_ms=latency_ms, finish_reason=str(finish), prefilled=False)
        with self._usage_lock:
            self.usage.add(gen)
        return gen

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        """Send the requests ``concurrency`` at a time; results come back in request order.

        Raises ``HTTPBackendError`` on a refused request and ``ModelUnavailable`` when the server is unreachable.
        """
        if not requests:
            return []
        if len(requests) == 1 or self.batch_size == 1:
            return [self._one(r, config) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(requests)),
                                thread_name_prefix="mentalglm-http") as pool:
            futures = [pool.submit(self._one, r, config) for r in requests]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.model!r}, base_url={self.base_url!r})"
