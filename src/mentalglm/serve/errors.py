"""Every error leaves the service as JSON in the OpenAI shape ``{"error": {"message", "type", "code"}}``, and this
module writes each of them: the handlers' answers, the body limit's 413 and the safety net's 500 (``serve.middleware``
sends them) and the error event of a stream that has already started.

Clients (the project's own ``OpenAIBackend`` among them) read ``error.message``; validation errors add
``error.details``: one ``{field, message}`` per problem, with fields written as ``posts[2].text``. Nothing here
echoes a post back or writes one to the log.
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..llm.base import ModelUnavailable
from ..llm.openai_client import HTTPBackendError
from .worker import QueueFull, WorkTimeout

log = logging.getLogger("mentalglm.serve")

# JSON can carry lone surrogates ("\\ud800") that no tokenizer accepts.
BAD_UNICODE = "the text holds a lone surrogate (e.g. \\ud800), which is not valid Unicode"


class APIError(Exception):
    """A precise refusal: HTTP status, message, and optionally the offending field."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", field: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.field, self.code, self.headers = \
            status, message, kind, field, code, headers


def error_body(message: str, kind: str, code: str | int | None = None, details: list | None = None) -> dict:
    body: dict = {"message": message, "type": kind, "code": code}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(status: int, message: str, kind: str, code=None, details=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code, details), status_code=status, headers=headers)


def field_path(loc) -> str:
    """('body', 'posts', 2, 'text') -> 'posts[2].text'."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _validation_message(err: dict) -> str:
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        details = [{"field": exc.field, "message": exc.message}] if exc.field else None
        message = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return error_response(exc.status, message, exc.kind, exc.code, details=details, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            where = bad_json.get("loc", ())
            position = f" at character {where[-1]}" if where and isinstance(where[-1], int) else ""
            reason = (bad_json.get("ctx") or {}).get("error", "malformed")
            return error_response(400, f"request body is not valid JSON ({reason}{position})", "invalid_request_error",
                                  code="invalid_json")
        details = []
        for e in errors:
            field = field_path(e.get("loc", ()))
            message = _validation_message(e)
            if e.get("type") == "missing":
                message = "this field is required"
            elif e.get("type") == "extra_forbidden":
                message = "unknown field (check its spelling in the API docs at /docs)"
            elif field == "body" and e.get("type") in ("model_attributes_type", "dict_type"):
                message = "the body must be a JSON object, sent with Content-Type: application/json"
            details.append({"field": field, "message": message})
        summary = "; ".join(d["message"] if d["field"] == "body" else f"{d['field']}: {d['message']}"
                            for d in details[:5])
        return error_response(422, summary or "invalid request", "invalid_request_error", code="invalid_request",
                              details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, message, kind, headers=getattr(exc, "headers", None))

    async def _model_side(request: Request, exc: Exception):
        return await _api_error(request, model_error(exc))

    for kind in (QueueFull, WorkTimeout, ModelUnavailable, HTTPBackendError):
        app.add_exception_handler(kind, _model_side)


def model_error(exc: Exception) -> APIError | None:
    """What the model side's failures tell a client (logged here, once); None for anything else. The handlers
    above answer with it, and a stream that has already started sends it as its last event."""
    if isinstance(exc, QueueFull):
        return APIError(429, str(exc), "rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, WorkTimeout):
        return APIError(504, f"{exc}; try fewer posts or tasks, or explanations off", "timeout_error")
    if isinstance(exc, ModelUnavailable):
        log.error("model unavailable: %s", scrubbed(exc))
        return APIError(503, f"the model is unavailable: {exc}", "server_error", code="model_unavailable",
                        headers={"Retry-After": "30"})
    if isinstance(exc, HTTPBackendError):
        log.error("upstream model server refused a request: HTTP %s", exc.status)  # its message may echo input
        return APIError(502, f"the model server refused the request: {exc}", "server_error", code="upstream_error")
    return None


def scrubbed(exc: BaseException) -> str:
    """Backend errors name servers and files, not posts; still, keep only the first line and 300 characters."""
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def stream_error(exc: BaseException) -> dict:
    """The error body sent inside a stream that has already started (its HTTP status was 200): the same message
    an unstreamed request would have got as its status."""
    if isinstance(exc, Exception) and not isinstance(exc, APIError):
        exc = model_error(exc) or exc
    if isinstance(exc, APIError):
        return error_body(exc.message, exc.kind, exc.code)
    return internal_error(exc, "in a stream")


def internal_error(exc: BaseException, where: str) -> dict:
    """The answer to an unexpected exception (a 500, or the last event of a stream), logged here with its type and
    code locations only: its message can quote the input."""
    log.error("internal error %s %s\n%s", type(exc).__name__, where,
              "".join(traceback.format_tb(exc.__traceback__)).rstrip())
    return error_body(f"internal error ({type(exc).__name__}); the server keeps running, see its log", "server_error")


def body_too_large(size: int, limit: int) -> dict:
    return error_body(f"request body is {size:,} bytes or more; this server accepts at most {limit:,}",
                      "invalid_request_error", "body_too_large")
