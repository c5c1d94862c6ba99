"""The teacher: an LLM told the gold label that writes the explanation of a C-IMHI answer.

The prompt gives the task's label definitions, the post and the gold label, and asks for a concise
Chinese explanation grounded in words quoted from the post, inventing nothing, and nothing but the
explanation. Instructions come first and the post last, so llama.cpp reuses the shared prefix.
The post is PII-redacted first: explanations must not quote phone numbers or handles, and a remote
teacher need not see them.

Any ``Backend`` works: ``OpenAIBackend`` (GPT-4-class, GLM-4, DeepSeek, Qwen behind an
OpenAI-compatible server; its HTTP client retries with backoff), llama.cpp or transformers. Calls go
through ``llm.base.answers``: as many at once as the backend takes (``--concurrency`` for HTTP, ``--parallel``
for llama.cpp), and every finished call goes to the cache at once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from ..llm.base import Backend, GenConfig, Generation, Request, answers
from ..llm.openai_client import HTTPBackendError
from ..safety import redact
from ..tasks import TaskSpec
from .cache import CachedCall, TeacherCache, prompt_hash
from .records import Example

SYSTEM = "你是一名心理健康领域的专家标注员，为已经标注好的中文社交媒体帖子撰写标注理由。"
MIN_HINT, MAX_HINT = 50, 150  # characters asked for; QC bounds are looser


def gold_display(spec: TaskSpec, labels: Sequence[str]) -> str:
    if not labels:
        return spec.empty_sentence or "无"
    return spec.joiner.join(f"{spec.label(n).zh}（{spec.label(n).definition}）" if spec.label(n).definition
                            else spec.label(n).zh for n in labels)


def teacher_messages(spec: TaskSpec, example: Example) -> tuple[dict, ...]:
    several = "（可能有多个）" if spec.multi_label else ""
    user = (
        f"任务：{spec.title}。{spec.question}\n"
        f"标签及定义：\n{spec.label_guide()}\n\n"
        f"下面给出一篇帖子和专家标注的正确标签{several}。请用中文写一段简洁的理由（{MIN_HINT}–{MAX_HINT}字），"
        "说明这篇帖子为什么属于这个标签：\n"
        "1. 用引号引用帖子中的原话作为依据；\n"
        "2. 只根据帖子内容推理，不要编造帖子中没有的信息，不要复述整篇帖子；\n"
        "3. 不要改变或质疑标签，不要给建议；\n"
        "4. 只输出理由本身：不要重复标签句，不要加“理由：”之类的前缀。\n\n"
        f"帖子：“{redact(example.text)}”\n"
        f"正确标签：{gold_display(spec, example.labels)}"
    )
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})


_PREFIX = re.compile(r"^(?:理由|解释|原因|分析|回答|答案|答)\s*[：:]\s*")
_FENCE = re.compile(r"^```\w*\s*|\s*```$")


def clean_explanation(spec: TaskSpec, text: str, labels: Sequence[str]) -> str:
    """The explanation alone: no label sentence, no 理由： prefix, no markdown, one paragraph."""
    text = _FENCE.sub("", text.strip()).replace("**", "").replace("\r", "")
    if spec.reason_marker in text:  # the model wrote a whole answer: keep what follows 理由：
        head, _, tail = text.partition(spec.reason_marker)
        if len(head) < 60:
            text = tail
    if labels or spec.empty_sentence:
        sentence = spec.label_sentence(labels)
        if text.startswith(sentence):
            text = text[len(sentence):]
    text = _PREFIX.sub("", text.strip())
    text = re.sub(r"\s*\n\s*", "", text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    if len(text) > 1 and text[0] in "“\"" and text[-1] in "”\"" and text.count("“") <= 1:
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True)
class DecodingPlan:
    """Attempt 0 decodes at ``temperature``; regenerations use ``retry_temperature`` and a new seed each."""

    max_tokens: int = 256
    temperature: float = 0.3
    retry_temperature: float = 0.8
    seed: int = 13

    def config(self, attempt: int) -> GenConfig:
        temperature = self.temperature if attempt == 0 else self.retry_temperature
        return GenConfig(max_tokens=self.max_tokens, temperature=temperature, top_p=0.95 if temperature else 1.0,
                         seed=self.seed + attempt)


@dataclass(frozen=True)
class Job:
    example: Example
    attempt: int


@dataclass(frozen=True)
class Answer:
    job: Job
    explanation: str
    raw: str
    prompt_hash: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


@dataclass
class TokenCount:
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Teacher:
    backend: Backend
    cache: TeacherCache
    plan: DecodingPlan = DecodingPlan()
    usage: dict[str, TokenCount] = field(default_factory=lambda: defaultdict(TokenCount))

    @property
    def name(self) -> str:
        return self.backend.name

    def _key(self, spec: TaskSpec, job: Job) -> tuple[Request, GenConfig, str]:
        # Its quotes are held to the post where the backend can (llama.cpp, llm/quotes.py): no made-up evidence.
        request = Request(teacher_messages(spec, job.example), quote_source=job.example.text)
        config = self.plan.config(job.attempt)
        key = prompt_hash({"model": self.name, "messages": request.messages, "max_tokens": config.max_tokens,
                           "temperature": config.temperature, "top_p": config.top_p, "seed": config.seed,
                           "quotes": "held to the post"})
        return request, config, key

    def _answer(self, spec: TaskSpec, job: Job, call: CachedCall, cached: bool) -> Answer:
        usage = self.usage[spec.name]
        usage.prompt_tokens += call.prompt_tokens
        usage.completion_tokens += call.completion_tokens
        if cached:
            usage.cached_calls += 1
        else:
            usage.calls += 1
            usage.seconds += call.latency_ms / 1000
        return Answer(job, clean_explanation(spec, call.text, job.example.labels), call.text or call.error,
                      call.prompt_hash, call.finish_reason, call.prompt_tokens, call.completion_tokens, cached)

    def _record(self, job: Job, key: str, answer: Generation | Exception) -> CachedCall:
        """One teacher call's outcome, cached. A request the teacher refused (a content filter's 400, a post longer
        than a local model's context) is not cached and comes back with ``finish_reason="error"``; an unreachable
        server raises ``ModelUnavailable`` out of ``answers`` and stops the build (the rerun resumes)."""
        if isinstance(answer, Exception):
            return CachedCall(job.example.id, key, "", self.name, finish_reason="error", attempt=job.attempt,
                              error=str(answer)[:300])
        call = CachedCall(job.example.id, key, answer.text, self.name, answer.prompt_tokens, answer.completion_tokens,
                          round(answer.latency_ms, 1), answer.finish_reason, job.attempt)
        self.cache.put(call)
        return call

    def explain(self, spec: TaskSpec, jobs: Sequence[Job]) -> Iterator[Answer]:
        """Answers for ``jobs`` (cached ones first, then new calls in completion order)."""
        todo = []
        for job in jobs:
            request, config, key = self._key(spec, job)
            hit = self.cache.get(job.example.id, key)
            if hit is not None:
                yield self._answer(spec, job, hit, cached=True)
            else:
                todo.append((request, config, job, key))
        for i, answer in answers(self.backend, [(r, c) for r, c, _, _ in todo], refused=(HTTPBackendError, ValueError)):
            _, _, job, key = todo[i]
            yield self._answer(spec, job, self._record(job, key, answer), cached=False)


def reused_answer(job: Job, spec: TaskSpec) -> Answer:
    """An explanation the source already has (SOS-4K ``explain``), used as attempt 0 with --reuse-explanations."""
    text = (job.example.explanation or "").strip()
    return Answer(job, clean_explanation(spec, text, job.example.labels), text, "", "stop", 0, 0, cached=True)
