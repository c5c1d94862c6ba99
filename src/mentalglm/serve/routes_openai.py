"""The OpenAI-compatible API, behind the token: ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed
with ``stream: true``). A label-heads model answers the C-IMHI question with its heads and adds a ``mentalglm``
field (labels, scores, high risk) to the answer."""

from __future__ import annotations

import logging
import secrets
import time

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from ..inputs import Post
from ..llm.base import GenConfig
from ..llm.base import Request as ChatPrompt
from .auth import require_token
from .errors import BAD_UNICODE, APIError
from .jobs import encodable
from .schemas import ChatRequest, ChatResponse
from .service import PromptTooLong, fingerprint
from .state import ServeState, Shared
from .streaming import SSE_HEADERS, chat_chunks, model_events

log = logging.getLogger("mentalglm.serve")

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])


@router.get("/models", tags=["openai"], summary="the served model (OpenAI format)")
async def models(state: Shared):
    return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0,
                                        "owned_by": "mentalglm", "context_length": state.backend.context_length}]}


@router.post("/chat/completions", response_model=ChatResponse, tags=["openai"],
             summary="OpenAI-compatible chat completion over the loaded model (stream: true for server-sent events)")
async def chat(req: ChatRequest, state: Shared):
    if req.model != state.model_id:
        raise APIError(404, f"model {req.model!r} is not served here; this server serves {state.model_id!r}",
                       "invalid_request_error", code="model_not_found")
    messages = _messages(req)
    config = GenConfig(max_tokens=req.max_completion_tokens or req.max_tokens or 256,
                       temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, stop=req.stops(),
                       seed=req.seed or 0, repeat_penalty=req.repetition_penalty)
    log.info("chat: %d message(s) [%s] max_tokens=%d", len(messages),
             fingerprint("".join(m["content"] for m in messages)), config.max_tokens)
    question = state.service.cimhi_question(messages)
    try:  # a prompt longer than the context is found before the first token, streamed or not
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await _streamed(state, messages, config, question, include_usage)
        if question:  # a label-heads model answers the C-IMHI question with its heads, not free generation
            return await _heads_answer(state, *question)
        gen = await state.worker.submit(state.service.chat, ChatPrompt(messages), config,
                                        timeout=state.settings.request_timeout)
    except PromptTooLong as e:
        raise APIError(400, str(e), field="messages", code="context_length_exceeded") from None
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": state.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": gen.finish_reason or "stop"}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "total_tokens": gen.prompt_tokens + gen.completion_tokens}}


def _messages(req: ChatRequest) -> tuple[dict, ...]:
    """The chat's messages as ``{role, content}`` with text content, or a 422."""
    try:
        messages = tuple({"role": m.role, "content": m.text()} for m in req.messages)
    except ValueError as e:
        raise APIError(422, str(e), field="messages") from None
    if not all(encodable(m["content"]) for m in messages):
        raise APIError(422, BAD_UNICODE, field="messages", code="invalid_unicode")
    return messages


async def _streamed(state: ServeState, messages: tuple[dict, ...], config: GenConfig,
                    question: tuple[str, str] | None, include_usage: bool) -> StreamingResponse:
    service, timeout = state.service, state.settings.request_timeout
    if question:
        task, post = question
        events = await model_events(state.worker, service.analyze_streamed, [Post("1", post)],
                                    service.config([task], True, False), timeout=timeout)
    else:
        events = await model_events(state.worker, service.chat_streamed, ChatPrompt(messages), config,
                                    timeout=timeout)
    extension = (lambda row: _heads_extension(state, question[0], row)) if question else None
    return StreamingResponse(chat_chunks(events, state.model_id, include_usage, extension),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _heads_answer(state: ServeState, task: str, post: str) -> dict:
    service = state.service
    [a] = await state.worker.submit(service.analyze, [Post("1", post)], service.config([task], True, False),
                                    timeout=state.settings.request_timeout)
    if a.error:
        raise APIError(502, f"the model failed on this post: {a.error}", "server_error")
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": state.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a.raw}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "mentalglm": _heads_extension(state, task, a.__dict__)}


def _heads_extension(state: ServeState, task: str, row: dict) -> dict:
    """The answer's ``mentalglm`` field from an analysis row (its fields as ``Analysis`` has them)."""
    return {"task": task, "labels": row["labels"], "scores": row["scores"], "high_risk": row["high_risk"],
            "resources": state.resources_text if row["high_risk"] else None, "evidence_ok": row["evidence_ok"],
            "runner_up": row["runner_up"], "explanation_consistent": row["explanation_consistent"],
            "quotes_repaired": row["quotes_repaired"]}
