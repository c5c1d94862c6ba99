"""``GET /metrics``: the Prometheus scrape (what it holds: ``serve.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .auth import require_token
from .metrics import CONTENT_TYPE
from .state import Shared

router = APIRouter()


# Behind the token when there is one: request counts and timings tell who uses the service how much.
# Prometheus sends it with `authorization: {credentials_file: ...}` in its scrape config.
@router.get("/metrics", tags=["service"], dependencies=[Depends(require_token)],
            summary="requests, queue depth, batch size, tokens, latency (Prometheus text format)",
            response_class=Response)
async def metrics_page(state: Shared):
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
