"""What the routes share: one ``ServeState`` per app, built by ``create_app`` and kept at ``app.state.serve``.

A route asks for it as a dependency (``state: Shared``) instead of closing over ``create_app``'s locals, so the
routers are plain module-level ``APIRouter``s that any app can include.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from ..llm.base import Backend
from ..llm.catalog import cache_dir
from ..safety import resources_message
from ..tasks import get_task
from .jobs import JobManager
from .metrics import MeteredBackend, ServiceMetrics
from .service import AnalysisService
from .settings import ServeSettings
from .worker import ModelWorker


@dataclass(frozen=True)
class ServeState:
    settings: ServeSettings
    prompt_style: str
    model_id: str  # what /v1/models and /v1/chat/completions call the model
    token: str | None  # the bearer token; None: auth off
    threads: int  # threads calling the backend
    backend: MeteredBackend  # every generation the service asks for is counted
    worker: ModelWorker
    metrics: ServiceMetrics
    service: AnalysisService
    jobs: JobManager
    resources_text: str  # crisis resources shown with high-risk results

    @classmethod
    def build(cls, backend: Backend, prompt_style: str, settings: ServeSettings) -> "ServeState":
        token = settings.token()  # fails at startup, not at the first request, when the variable is empty
        for t in settings.tasks:
            get_task(t)
        threads = settings.model_threads or (backend.batch_size if backend.thread_safe else 1)
        worker = ModelWorker(settings.max_queue, threads)
        metrics = ServiceMetrics(lambda: worker.pending, settings.max_queue, engine=getattr(backend, "engine", None))
        metered = MeteredBackend(backend, metrics)
        service = AnalysisService(metered, prompt_style, settings)
        jobs = JobManager(service, worker, Path(settings.jobs_dir or cache_dir() / "serve-jobs"), settings.max_jobs,
                          settings.keep_jobs, settings.job_chunk)
        return cls(settings, prompt_style, settings.served_model_name or backend.name, token, threads, metered,
                   worker, metrics, service, jobs, resources_message(settings.resources_path))

    def close(self) -> None:
        self.jobs.close()
        self.worker.close()


def shared(request: Request) -> ServeState:
    return request.app.state.serve


# A route's parameter ``state: Shared`` receives the app's ServeState (it adds nothing to the OpenAPI schema).
Shared = Annotated[ServeState, Depends(shared)]
