"""Service routes, open without a token: the page at ``/`` (its files under ``/static``) and ``GET /healthz``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .. import DISCLAIMER
from ..inputs import TEXT_COLUMNS
from .state import Shared

STATIC = Path(str(resources.files("mentalglm.serve") / "static"))
# The page shows model output: allow nothing but this origin's own files (no inline script, no third parties).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/healthz", tags=["service"], summary="liveness, model, queue and limits (no auth)")
async def healthz(state: Shared):
    settings, worker = state.settings, state.worker
    return {
        "status": "ok", "model": state.model_id, "prompt_style": state.prompt_style,
        "context_length": state.backend.context_length, "auth_required": state.token is not None,
        "queue": {"pending": worker.pending, "limit": settings.max_queue, "completed": worker.completed},
        "jobs": state.jobs.counts(),
        "limits": {"max_batch": settings.max_batch, "max_post_chars": settings.max_post_chars,
                   "max_body_bytes": settings.max_body_bytes, "max_upload_bytes": settings.max_upload_bytes,
                   "max_upload_rows": settings.max_upload_rows, "request_timeout_s": settings.request_timeout},
        "text_columns": list(TEXT_COLUMNS), "disclaimer": DISCLAIMER,
    }
