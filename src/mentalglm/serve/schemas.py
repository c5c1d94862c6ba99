"""Request and response bodies of the HTTP API (they are also its OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..tasks import get_task


def _known_task(name: str) -> str:
    try:
        return get_task(name).name
    except KeyError as e:
        raise ValueError(e.args[0]) from None


SCREEN_HELP = ("label heads: the heads' character n-gram part decides the posts it is sure of and the model only the "
               "rest (rows say decided_by); default: the server's (`serve --screen`)")


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=200, description="your id for the post (default: its 1-based position)")
    text: str = Field(description="the post")


class AnalyzeRequest(BaseModel):
    """One post in ``text``, or a batch in ``posts`` (strings or ``{id, text}`` objects)."""

    # A misspelt field ("task", "explanations") must fail loudly rather than be ignored.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "最近总觉得自己什么都做不好，大家一定都讨厌我", "tasks": ["cognitive_distortion", "suicide_risk"]},
        {"posts": [{"id": "a1", "text": "今天考试又没过，我就是个废物"}, "周末和朋友去爬山，心情很好"],
         "tasks": ["emotion"], "explain": False},
    ]})
    text: str | None = Field(None, description="one post")
    posts: list[PostIn] | None = Field(None, description="several posts, as strings or {id, text} objects "
                                                         "(at most the server's batch limit)")
    tasks: list[str] | None = Field(None, description="task names from GET /v1/tasks (default: the server's)")
    explain: bool = Field(True, description="write an explanation; false stops after the label (much faster)")
    redact: bool = Field(False, description="mask phone numbers, ID numbers, e-mails and @handles before the model")
    screen: bool | None = Field(None, description=SCREEN_HELP)
    risk_threshold: float | None = Field(None, ge=0, le=1, description=(
        "P(high suicide risk) at which a post is flagged (label-heads models only; default: the model's operating "
        "point, chosen on held-out posts for high-risk recall of at least 0.90)"))
    stream: bool = Field(False, description=(
        "answer with server-sent events as the analysis is made (decided, resources, text, analysis, then done "
        "with the whole response); see docs/service.md"))

    @field_validator("posts", mode="before")
    @classmethod
    def _strings_are_posts(cls, posts):
        # Plain strings are accepted as posts; turning them into {text} keeps error paths plain: posts[1].text.
        if isinstance(posts, list):
            return [{"text": p} if isinstance(p, str) else p for p in posts]
        return posts

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str] | None) -> list[str] | None:
        if tasks is None:
            return None
        if not tasks:
            raise ValueError("give at least one task, or leave the field out for the default tasks")
        names = [_known_task(t) for t in tasks]
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _one_of(self):
        if (self.text is None) == (self.posts is None):
            raise ValueError("give exactly one of `text` (one post) or `posts` (a list)")
        if self.posts is not None and not self.posts:
            raise ValueError("`posts` is empty")
        return self


class RunnerUp(BaseModel):
    label: str
    p: float = Field(description="its probability")


class AnalysisOut(BaseModel):
    id: str
    task: str
    labels: list[str]
    label_en: list[str]
    explanation: str
    raw: str
    parse_status: Literal["ok", "fallback", "invalid", "error"]
    model: str
    latency_ms: float
    high_risk: bool
    warnings: list[str]
    error: str | None
    scores: dict[str, float] = Field(default_factory=dict, description=(
        "label -> calibrated probability (label-heads models; empty when the label was generated)"))
    evidence_ok: bool | None = Field(None, description=(
        "every quote of the explanation is found in the post, after near-miss quotes were repaired (null without an "
        "explanation)"))
    runner_up: RunnerUp | None = Field(None, description=(
        "label heads, when the decision was close (confidence under the model's unsure threshold): the runner-up "
        "label and its probability; the explanation then weighs the two. null when the model was sure"))
    explanation_labels: list[str] | None = Field(None, description=(
        "the label the explanation argues for, read from the explanation alone (quotes of the post removed); null "
        "without an explanation or a reader"))
    explanation_consistent: bool | None = Field(None, description=(
        "the explanation argues for the row's label (the 0-10 scale: within one level); null without an "
        "explanation"))
    quotes_repaired: int = Field(0, description=(
        "quotes that were near misses of the post's words, replaced by the post's closest span (named in warnings)"))
    decided_by: str | None = Field(None, description=(
        "label heads: which stage decided the label: 'model' (the heads on the model's hidden state) or 'screen' "
        "(the heads' character n-gram part, sure of this post; analyze with screen=true)"))


class PostResult(BaseModel):
    id: str
    high_risk: bool
    analyses: list[AnalysisOut]


class AnalyzeResponse(BaseModel):
    model: str
    tasks: list[str]
    explain: bool
    high_risk: bool = Field(description="true when any post was labelled high risk")
    resources: str | None = Field(description="crisis resources, present when high_risk is true")
    disclaimer: str
    results: list[PostResult]


# ---------------------------------------------------------------------------- OpenAI-compatible chat
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id... are accepted and ignored
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text":
                raise ValueError(f"content parts of type {part.type!r} are not supported (text only)")
            parts.append(part.text or "")
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    # OpenAI clients send many optional fields (user, logprobs, response_format...): unknown ones are ignored.
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    repetition_penalty: float = Field(1.0, gt=0.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class ChatChoice(BaseModel):
    index: int
    message: dict
    finish_reason: str


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    mentalglm: dict | None = Field(None, description=(
        "label-heads models, when the last user message is a C-IMHI question (考虑以下这个帖子：“…” 问题：…): "
        "the task, the labels decided over the closed label set, their probabilities (scores), high_risk, "
        "resources (the crisis-resources message when high_risk, else null), evidence_ok, runner_up, "
        "explanation_consistent and quotes_repaired (as in /v1/analyze); the message content is the model's answer: "
        "the label sentence and the explanation as written (quotes not repaired). Streamed, it comes in the first "
        "chunk (evidence_ok and explanation_consistent null: not known before the explanation is written) and again, "
        "complete, in the last"))


# ---------------------------------------------------------------------------- jobs
class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    filename: str
    tasks: list[str]
    explain: bool
    screen: bool = Field(False, description="label heads: whether the screen decides the posts it is sure of")
    posts: int
    total: int = Field(description="(post, task) pairs to analyse")
    done: int
    errors: int = Field(description="pairs that ended in an error (empty rows, model failures)")
    high_risk: int = Field(description="pairs labelled high risk")
    progress: float = Field(description="done / total, 0..1")
    created: float
    started: float | None
    finished: float | None
    error: str | None
    results_url: str
