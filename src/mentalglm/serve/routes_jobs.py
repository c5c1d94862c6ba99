"""Background jobs, behind the token: ``POST /v1/jobs`` takes an uploaded file; ``/v1/jobs/{job_id}`` reports its
progress, ``/results`` hands out its JSONL, ``/cancel`` stops it and ``DELETE`` removes it (the work itself:
``serve.jobs``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..data.records import DataError
from ..tasks import get_task
from .auth import require_token
from .errors import APIError
from .jobs import Job, parse_upload
from .schemas import SCREEN_HELP, JobOut
from .state import ServeState, Shared

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])


@router.post("/jobs", response_model=JobOut, status_code=202, tags=["jobs"],
             summary="analyse an uploaded CSV/TSV/JSONL/TXT in the background; poll GET /v1/jobs/{id}")
async def create_job(state: Shared,
                     file: UploadFile = File(description="CSV, TSV, JSONL or TXT (one post per line)"),
                     text_column: str | None = Form(None, description="column with the post (default: guessed)"),
                     id_column: str | None = Form(None, description="column with a post id (default: id)"),
                     tasks: str | None = Form(None, description="comma-separated task names"),
                     explain: bool = Form(True), redact: bool = Form(False),
                     screen: bool | None = Form(None, description=SCREEN_HELP)):
    settings, jobs = state.settings, state.jobs
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()] or list(settings.tasks)
    try:
        names = list(dict.fromkeys(get_task(t).name for t in names))
    except KeyError as e:
        raise APIError(422, e.args[0], field="tasks", code="unknown_task") from None
    data = await file.read()
    filename = file.filename or "upload.csv"
    try:
        posts = await run_in_threadpool(parse_upload, data, filename, text_column, id_column,
                                        settings.max_upload_rows, jobs.dir)
    except DataError as e:
        reason = e.reason.replace("pass --text-column", "choose one with text_column")  # the CLI's wording
        raise APIError(422, reason, field="file", code="bad_file") from None
    except ValueError as e:
        raise APIError(422, str(e), field="file", code="bad_file") from None
    long_rows = [p.id for p in posts if len(p.text) > settings.max_post_chars]
    if long_rows:
        raise APIError(422, f"{len(long_rows)} post(s) exceed {settings.max_post_chars:,} characters (first: "
                            f"row id {long_rows[0]})", field="file", code="post_too_long")
    job = jobs.submit(filename, posts, state.service.config(names, explain, redact, screen=screen))
    return job.view()


def _job(state: ServeState, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise APIError(404, f"no job {job_id!r} (finished jobs are kept until {state.settings.keep_jobs} newer ones "
                            "finish, or until the server restarts)", "not_found_error", code="job_not_found")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="progress of a job")
async def job_status(job_id: str, state: Shared):
    return _job(state, job_id).view()


@router.get("/jobs/{job_id}/results", tags=["jobs"], response_class=FileResponse,
            summary="the job's JSONL so far (complete once status is done)")
async def job_results(job_id: str, state: Shared):
    job = _job(state, job_id)
    stem = Path(job.filename).stem or "results"
    return FileResponse(job.out_path, media_type="application/x-ndjson", filename=f"{stem}.mentalglm.jsonl")


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"],
             summary="stop a job after its current unit")
async def job_cancel(job_id: str, state: Shared):
    _job(state, job_id)
    return state.jobs.cancel(job_id).view()


@router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], summary="cancel a job and delete its results")
async def job_delete(job_id: str, state: Shared):
    _job(state, job_id)
    state.jobs.delete(job_id)
