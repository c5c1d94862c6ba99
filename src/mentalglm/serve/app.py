"""The HTTP service: ``create_app(backend, prompt_style, settings)`` returns a FastAPI app.

Routes: ``POST /v1/analyze``, ``GET /v1/tasks``, ``GET /v1/models``, ``POST /v1/chat/completions`` (OpenAI-
compatible), ``/v1/jobs`` (file uploads analysed in the background), ``GET /healthz``, the page at ``/`` and
the API docs at ``/docs``. The caller owns the backend (and closes it after the server stops).

This module only assembles the app: the shared state (``serve.state``), the error handlers (``serve.errors``),
the middleware, and one router per part of the API:

- ``routes_service``: the page at ``/`` and ``GET /healthz`` (no auth);
- ``routes_metrics``: ``GET /metrics``;
- ``routes_analysis``: ``GET /v1/tasks``, ``POST /v1/analyze``;
- ``routes_openai``: ``GET /v1/models``, ``POST /v1/chat/completions``;
- ``routes_jobs``: ``/v1/jobs`` and ``/v1/jobs/{job_id}`` (status, results, cancel, delete).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .. import DISCLAIMER, __version__
from ..llm.base import Backend
from . import routes_analysis, routes_jobs, routes_metrics, routes_openai, routes_service
from .errors import install_handlers
from .metrics import RequestMetrics
from .middleware import BodyLimit, SafetyNet
from .settings import ServeSettings
from .state import ServeState

log = logging.getLogger("mentalglm.serve")


@asynccontextmanager
async def _lifespan(app):
    state: ServeState = app.state.serve
    settings = state.settings
    log.info("serving %s (prompt style %s); auth %s; queue limit %d; batch limit %d; %d model thread(s)",
             state.model_id, state.prompt_style, "on" if state.token else "off", settings.max_queue,
             settings.max_batch, state.threads)
    yield
    state.close()


def create_app(backend: Backend, prompt_style: str = "zeroshot", settings: ServeSettings | None = None):
    state = ServeState.build(backend, prompt_style, settings or ServeSettings())
    app = FastAPIOffline(
        title="mentalglm", version=__version__, lifespan=_lifespan,
        description="Explainable mental-health analysis of Chinese social-media posts. " + DISCLAIMER +
                    "\n\nAuth (when the server was started with --token-env): `Authorization: Bearer <token>`.")
    app.state.serve = state
    install_handlers(app)
    app.add_middleware(BodyLimit, default=state.settings.max_body_bytes,
                       limits={"/v1/jobs": state.settings.max_upload_bytes})
    app.add_middleware(SafetyNet)  # sees every error and every response of the app
    app.add_middleware(RequestMetrics, metrics=state.metrics, fastapi_app=app)  # outermost: counts SafetyNet's 500s too

    app.include_router(routes_service.router)
    app.mount("/static", StaticFiles(directory=routes_service.STATIC), name="static")
    for part in (routes_metrics, routes_analysis, routes_openai, routes_jobs):
        app.include_router(part.router)
    return app
