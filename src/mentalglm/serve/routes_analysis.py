"""The analysis API, behind the token: ``GET /v1/tasks`` and ``POST /v1/analyze`` (one post or a batch, streamed
as server-sent events with ``stream: true``)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from .. import DISCLAIMER
from ..analyze import Analysis, AnalyzeConfig
from ..inputs import Post
from ..tasks import all_tasks
from .auth import require_token
from .errors import BAD_UNICODE, APIError
from .jobs import encodable
from .schemas import AnalyzeRequest, AnalyzeResponse
from .service import fingerprint
from .settings import ServeSettings
from .state import ServeState, Shared
from .streaming import SSE_HEADERS, analysis_events, model_events

log = logging.getLogger("mentalglm.serve")

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])


@router.get("/tasks", tags=["analysis"], summary="the tasks, their labels and the default set")
async def tasks(state: Shared):
    return {"object": "list", "default": list(state.settings.tasks), "data": [{
        "name": s.name, "title": s.title, "title_en": s.title_en, "language": s.language, "family": s.family,
        "multi_label": s.multi_label, "high_risk": list(s.high_risk), "question": s.question,
        "labels": [{"name": lab.name, "zh": lab.zh, "en": lab.en, "definition": lab.definition}
                   for lab in s.labels]} for s in all_tasks()]}


@router.post("/analyze", response_model=AnalyzeResponse, tags=["analysis"],
             summary="labels, explanations and the high-risk flag for one post or a batch",
             responses={401: {"description": "missing or wrong bearer token"}, 413: {"description": "body too large"},
                        422: {"description": "empty or over-long post, unknown task, batch too large"},
                        429: {"description": "queue full; see Retry-After"}, 504: {"description": "timed out"}})
async def analyze(req: AnalyzeRequest, state: Shared):
    settings, service = state.settings, state.service
    posts = request_posts(req, settings)
    config = service.config(req.tasks or settings.tasks, req.explain, req.redact, req.risk_threshold, req.screen)
    log.info("analyze: %d post(s) [%s%s] tasks=%s explain=%s", len(posts),
             "; ".join(fingerprint(p.text) for p in posts[:8]), "; ..." if len(posts) > 8 else "",
             ",".join(config.tasks), config.explain)
    if req.stream:
        events = await model_events(state.worker, service.analyze_streamed, posts, config,
                                    timeout=settings.request_timeout)
        return StreamingResponse(
            analysis_events(events, lambda analyses: analyze_body(state, posts, config, analyses),
                            state.resources_text),
            media_type="text/event-stream", headers=SSE_HEADERS)
    analyses = await state.worker.submit(service.analyze, posts, config, timeout=settings.request_timeout)
    return analyze_body(state, posts, config, analyses)


def request_posts(req: AnalyzeRequest, settings: ServeSettings) -> list[Post]:
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


def analyze_body(state: ServeState, posts: list[Post], config: AnalyzeConfig, analyses: list[Analysis]) -> dict:
    """The response of ``/v1/analyze`` (the last event of its stream): the analyses grouped by post."""
    results, n_tasks = [], len(config.tasks)
    for i, post in enumerate(posts):
        rows = analyses[i * n_tasks:(i + 1) * n_tasks]
        results.append({"id": post.id, "high_risk": any(a.high_risk for a in rows),
                        "analyses": [a.__dict__ for a in rows]})
    high = any(r["high_risk"] for r in results)
    return {"model": state.model_id, "tasks": list(config.tasks), "explain": config.explain, "high_risk": high,
            "resources": state.resources_text if high else None, "disclaimer": DISCLAIMER, "results": results}
