"""The HTTP service: ``create_app(backend, prompt_style, settings)`` returns a FastAPI app.

Routes: ``POST /v1/analyze``, ``GET /v1/tasks``, ``GET /v1/models``, ``POST /v1/chat/completions`` (OpenAI-
compatible), ``/v1/jobs`` (file uploads analysed in the background), ``GET /healthz``, the page at ``/`` and
the API docs at ``/docs``. The caller owns the backend (and closes it after the server stops).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from .. import DISCLAIMER, __version__
from ..data.records import DataError
from ..inputs import TEXT_COLUMNS, Post
from ..llm.base import Backend, GenConfig
from ..llm.base import Request as ChatPrompt
from ..llm.catalog import cache_dir
from ..safety import resources_message
from ..tasks import all_tasks, get_task
from .errors import APIError, install_handlers
from .jobs import JobManager, encodable, parse_upload
from .metrics import CONTENT_TYPE, MeteredBackend, RequestMetrics, ServiceMetrics
from .middleware import BodyLimit, SafetyNet
from .schemas import AnalyzeRequest, AnalyzeResponse, ChatRequest, ChatResponse, JobOut
from .service import AnalysisService, PromptTooLong, fingerprint
from .settings import ServeSettings
from .streaming import SSE_HEADERS, analysis_events, chat_chunks, model_events
from .worker import ModelWorker

log = logging.getLogger("mentalglm.serve")

STATIC = Path(str(resources.files("mentalglm.serve") / "static"))
# The page shows model output: allow nothing but this origin's own files (no inline script, no third parties).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _bearer_check(token: str | None):
    def check(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise APIError(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                           "authentication_error", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise APIError(401, "invalid bearer token", "authentication_error", headers={"WWW-Authenticate": "Bearer"})
    return check


# JSON can carry lone surrogates ("\\ud800") that no tokenizer accepts.
BAD_UNICODE = "the text holds a lone surrogate (e.g. \\ud800), which is not valid Unicode"


def _posts(req: AnalyzeRequest, settings: ServeSettings) -> list[Post]:
    """The request's posts with ids, or a 422 naming the first bad one."""
    if req.text is not None:
        items, fields = [req.text], ["text"]
    else:
        items = [p.text for p in req.posts]
        fields = [f"posts[{i}].text" for i in range(len(req.posts))]
        if len(items) > settings.max_batch:
            raise APIError(422, f"{len(items)} posts in one request; at most {settings.max_batch} are accepted "
                                "(upload a file to POST /v1/jobs for more)", field="posts", code="batch_too_large")
    ids = [str(i + 1) for i in range(len(items))] if req.text is not None else [
        p.id or str(i + 1) for i, p in enumerate(req.posts)]
    seen: set[str] = set()
    posts = []
    for pid, text, field in zip(ids, items, fields):
        if not text.strip():
            raise APIError(422, "the post is empty", field=field, code="empty_post")
        if not encodable(text):
            raise APIError(422, BAD_UNICODE, field=field, code="invalid_unicode")
        if len(text) > settings.max_post_chars:
            raise APIError(422, f"the post has {len(text):,} characters; at most {settings.max_post_chars:,} are "
                                "accepted", field=field, code="post_too_long")
        if pid in seen:
            raise APIError(422, f"duplicate post id {pid!r}", field=field.removesuffix(".text") + ".id")
        seen.add(pid)
        posts.append(Post(pid, text.strip()))
    return posts


def create_app(backend: Backend, prompt_style: str = "zeroshot", settings: ServeSettings | None = None):
    settings = settings or ServeSettings()
    token = settings.token()  # fails at startup, not at the first request, when the variable is empty
    for t in settings.tasks:
        get_task(t)
    model_id = settings.served_model_name or backend.name
    threads = settings.model_threads or (backend.batch_size if backend.thread_safe else 1)
    worker = ModelWorker(settings.max_queue, threads)
    metrics = ServiceMetrics(lambda: worker.pending, settings.max_queue, engine=getattr(backend, "engine", None))
    backend = MeteredBackend(backend, metrics)  # every generation the service asks for is counted
    service = AnalysisService(backend, prompt_style, settings)
    jobs = JobManager(service, worker, Path(settings.jobs_dir or cache_dir() / "serve-jobs"), settings.max_jobs,
                      settings.keep_jobs, settings.job_chunk)
    resources_text = resources_message(settings.resources_path)

    @asynccontextmanager
    async def lifespan(_app):
        log.info("serving %s (prompt style %s); auth %s; queue limit %d; batch limit %d; %d model thread(s)",
                 model_id, prompt_style, "on" if token else "off", settings.max_queue, settings.max_batch, threads)
        yield
        jobs.close()
        worker.close()

    app = FastAPIOffline(
        title="mentalglm", version=__version__, lifespan=lifespan,
        description="Explainable mental-health analysis of Chinese social-media posts. " + DISCLAIMER +
                    "\n\nAuth (when the server was started with --token-env): `Authorization: Bearer <token>`.")
    app.state.worker, app.state.jobs, app.state.service, app.state.settings = worker, jobs, service, settings
    install_handlers(app)
    app.add_middleware(BodyLimit, default=settings.max_body_bytes, limits={"/v1/jobs": settings.max_upload_bytes})
    app.add_middleware(SafetyNet)  # sees every error and every response of the app
    app.add_middleware(RequestMetrics, metrics=metrics, fastapi_app=app)  # outermost: counts SafetyNet's 500s too

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_bearer_check(token))])

    # ------------------------------------------------------------------ public
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", tags=["service"], summary="liveness, model, queue and limits (no auth)")
    async def healthz():
        return {
            "status": "ok", "model": model_id, "prompt_style": prompt_style, "context_length": backend.context_length,
            "auth_required": token is not None,
            "queue": {"pending": worker.pending, "limit": settings.max_queue, "completed": worker.completed},
            "jobs": jobs.counts(),
            "limits": {"max_batch": settings.max_batch, "max_post_chars": settings.max_post_chars,
                       "max_body_bytes": settings.max_body_bytes, "max_upload_bytes": settings.max_upload_bytes,
                       "max_upload_rows": settings.max_upload_rows, "request_timeout_s": settings.request_timeout},
            "text_columns": list(TEXT_COLUMNS), "disclaimer": DISCLAIMER,
        }

    # Behind the token when there is one: request counts and timings tell who uses the service how much.
    # Prometheus sends it with `authorization: {credentials_file: ...}` in its scrape config.
    @app.get("/metrics", tags=["service"], dependencies=[Depends(_bearer_check(token))],
             summary="requests, queue depth, batch size, tokens, latency (Prometheus text format)",
             response_class=Response)
    async def metrics_page():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ analysis
    @v1.get("/tasks", tags=["analysis"], summary="the tasks, their labels and the default set")
    async def tasks():
        return {"object": "list", "default": list(settings.tasks), "data": [{
            "name": s.name, "title": s.title, "title_en": s.title_en, "language": s.language, "family": s.family,
            "multi_label": s.multi_label, "high_risk": list(s.high_risk), "question": s.question,
            "labels": [{"name": lab.name, "zh": lab.zh, "en": lab.en, "definition": lab.definition}
                       for lab in s.labels]} for s in all_tasks()]}

    @v1.post("/analyze", response_model=AnalyzeResponse, tags=["analysis"],
             summary="labels, explanations and the high-risk flag for one post or a batch",
             responses={401: {"description": "missing or wrong bearer token"}, 413: {"description": "body too large"},
                        422: {"description": "empty or over-long post, unknown task, batch too large"},
                        429: {"description": "queue full; see Retry-After"}, 504: {"description": "timed out"}})
    async def analyze(req: AnalyzeRequest):
        posts = _posts(req, settings)
        config = service.config(req.tasks or settings.tasks, req.explain, req.redact, req.risk_threshold)
        log.info("analyze: %d post(s) [%s%s] tasks=%s explain=%s", len(posts),
                 "; ".join(fingerprint(p.text) for p in posts[:8]), "; ..." if len(posts) > 8 else "",
                 ",".join(config.tasks), config.explain)
        if req.stream:
            events = await model_events(worker, service.analyze_streamed, posts, config,
                                        timeout=settings.request_timeout)
            return StreamingResponse(
                analysis_events(events, lambda analyses: _analyze_body(posts, config, analyses), resources_text),
                media_type="text/event-stream", headers=SSE_HEADERS)
        analyses = await worker.submit(service.analyze, posts, config, timeout=settings.request_timeout)
        return _analyze_body(posts, config, analyses)

    def _analyze_body(posts: list[Post], config, analyses) -> dict:
        results, n_tasks = [], len(config.tasks)
        for i, post in enumerate(posts):
            rows = analyses[i * n_tasks:(i + 1) * n_tasks]
            results.append({"id": post.id, "high_risk": any(a.high_risk for a in rows),
                            "analyses": [a.__dict__ for a in rows]})
        high = any(r["high_risk"] for r in results)
        return {"model": model_id, "tasks": list(config.tasks), "explain": config.explain, "high_risk": high,
                "resources": resources_text if high else None, "disclaimer": DISCLAIMER, "results": results}

    # ------------------------------------------------------------------ OpenAI-compatible
    @v1.get("/models", tags=["openai"], summary="the served model (OpenAI format)")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "mentalglm",
                                            "context_length": backend.context_length}]}

    @v1.post("/chat/completions", response_model=ChatResponse, tags=["openai"],
             summary="OpenAI-compatible chat completion over the loaded model (stream: true for server-sent events)")
    async def chat(req: ChatRequest):
        if req.model != model_id:
            raise APIError(404, f"model {req.model!r} is not served here; this server serves {model_id!r}",
                           "invalid_request_error", code="model_not_found")
        try:
            messages = tuple({"role": m.role, "content": m.text()} for m in req.messages)
        except ValueError as e:
            raise APIError(422, str(e), field="messages") from None
        if not all(encodable(m["content"]) for m in messages):
            raise APIError(422, BAD_UNICODE, field="messages", code="invalid_unicode")
        config = GenConfig(max_tokens=req.max_completion_tokens or req.max_tokens or 256,
                           temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, stop=req.stops(),
                           seed=req.seed or 0, repeat_penalty=req.repetition_penalty)
        log.info("chat: %d message(s) [%s] max_tokens=%d", len(messages),
                 fingerprint("".join(m["content"] for m in messages)), config.max_tokens)
        question = service.cimhi_question(messages)
        try:  # a prompt longer than the context is found before the first token, streamed or not
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                if question:
                    task, post = question
                    events = await model_events(worker, service.analyze_streamed, [Post("1", post)],
                                                service.config([task], True, False), timeout=settings.request_timeout)
                else:
                    events = await model_events(worker, service.chat_streamed, ChatPrompt(messages), config,
                                                timeout=settings.request_timeout)
                extension = (lambda row: _heads_extension(question[0], row)) if question else None
                return StreamingResponse(chat_chunks(events, model_id, include_usage, extension),
                                         media_type="text/event-stream", headers=SSE_HEADERS)
            if question:  # a label-heads model answers the C-IMHI question with its heads, not free generation
                task, post = question
                [a] = await worker.submit(service.analyze, [Post("1", post)], service.config([task], True, False),
                                          timeout=settings.request_timeout)
                if a.error:
                    raise APIError(502, f"the model failed on this post: {a.error}", "server_error")
                return {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": model_id,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": a.raw},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                        "mentalglm": _heads_extension(task, a.__dict__)}
            gen = await worker.submit(service.chat, ChatPrompt(messages), config, timeout=settings.request_timeout)
        except PromptTooLong as e:
            raise APIError(400, str(e), field="messages", code="context_length_exceeded") from None
        return {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                             "finish_reason": gen.finish_reason or "stop"}],
                "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                          "total_tokens": gen.prompt_tokens + gen.completion_tokens}}

    def _heads_extension(task: str, row: dict) -> dict:
        return {"task": task, "labels": row["labels"], "scores": row["scores"], "high_risk": row["high_risk"],
                "resources": resources_text if row["high_risk"] else None, "evidence_ok": row["evidence_ok"]}

    # ------------------------------------------------------------------ background jobs
    @v1.post("/jobs", response_model=JobOut, status_code=202, tags=["jobs"],
             summary="analyse an uploaded CSV/TSV/JSONL/TXT in the background; poll GET /v1/jobs/{id}")
    async def create_job(file: UploadFile = File(description="CSV, TSV, JSONL or TXT (one post per line)"),
                         text_column: str | None = Form(None, description="column with the post (default: guessed)"),
                         id_column: str | None = Form(None, description="column with a post id (default: id)"),
                         tasks: str | None = Form(None, description="comma-separated task names"),
                         explain: bool = Form(True), redact: bool = Form(False)):
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
        job = jobs.submit(filename, posts, service.config(names, explain, redact))
        return job.view()

    def _job(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise APIError(404, f"no job {job_id!r} (finished jobs are kept until {settings.keep_jobs} newer ones "
                                "finish, or until the server restarts)", "not_found_error", code="job_not_found")
        return job

    @v1.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="progress of a job")
    async def job_status(job_id: str):
        return _job(job_id).view()

    @v1.get("/jobs/{job_id}/results", tags=["jobs"], response_class=FileResponse,
            summary="the job's JSONL so far (complete once status is done)")
    async def job_results(job_id: str):
        job = _job(job_id)
        stem = Path(job.filename).stem or "results"
        return FileResponse(job.out_path, media_type="application/x-ndjson", filename=f"{stem}.mentalglm.jsonl")

    @v1.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"], summary="stop a job after its current unit")
    async def job_cancel(job_id: str):
        _job(job_id)
        return jobs.cancel(job_id).view()

    @v1.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], summary="cancel a job and delete its results")
    async def job_delete(job_id: str):
        _job(job_id)
        jobs.delete(job_id)

    app.include_router(v1)
    return app
