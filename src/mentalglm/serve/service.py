"""The model-side work of the service. Everything here runs on the model worker (see worker.py), never on the
event loop; with a local model, never two calls at once."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Callable, Sequence

from ..analyze import RAISE, Analysis, AnalyzeConfig, Analyzer, Watcher
from ..inputs import Post
from ..llm.base import Backend, GenConfig, Generation, Request
from ..tasks import all_tasks, get_task
from .settings import ServeSettings


def fingerprint(text: str) -> str:
    """What the log may say about a post: its length and a sha256 prefix, enough to match a complaint to a line."""
    return f"len={len(text)} sha256={hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


# The C-IMHI instruction (TaskSpec.instruction_prompt): 考虑以下这个帖子：“<post>” 问题：<question>
_CIMHI = re.compile(r"考虑以下这个帖子：“(.*)”\s*问题：(.+)", re.S)


class PromptTooLong(ValueError):
    pass


class AnalysisService:
    def __init__(self, backend: Backend, prompt_style: str, settings: ServeSettings):
        self.backend = backend
        self.prompt_style = prompt_style
        self.settings = settings
        self._analyzers: OrderedDict[AnalyzeConfig, Analyzer] = OrderedDict()  # they cache prompt budgets
        self._lock = threading.Lock()

    def config(self, tasks: Sequence[str], explain: bool, redact: bool,
               risk_threshold: float | None = None, screen: bool | None = None) -> AnalyzeConfig:
        s = self.settings
        return AnalyzeConfig(tasks=tuple(tasks), explain=explain, max_tokens=s.max_tokens, redact=redact,
                             style=self.prompt_style, heads=s.heads, explainer=s.explainer, quote_first=s.quote_first,
                             brief=s.brief,
                             screen=s.screen if screen is None else screen, screen_threshold=s.screen_threshold,
                             risk_threshold=s.risk_threshold if risk_threshold is None else risk_threshold)

    def analyzer(self, config: AnalyzeConfig) -> Analyzer:
        """The engine for these settings. It raises a backend failure rather than recording it in the rows:
        the API answers 502/503 when the model failed, and a job that meets one fails."""
        with self._lock:
            analyzer = self._analyzers.get(config)
            if analyzer is None:
                analyzer = self._analyzers[config] = Analyzer(self.backend, config, on_error=RAISE)
                if len(self._analyzers) > 32:
                    self._analyzers.popitem(last=False)
            self._analyzers.move_to_end(config)
            return analyzer

    def analyze(self, posts: Sequence[Post], config: AnalyzeConfig) -> list[Analysis]:
        """Every task over the posts, returned post by post."""
        return self.analyzer(config).run(posts)

    def analyze_streamed(self, posts: Sequence[Post], config: AnalyzeConfig, emit: Callable) -> list[Analysis]:
        """``analyze``, telling ``emit`` what happens as it happens: ("decided", row) when label heads have chosen
        the labels (before the explanation), ("text", {id, task, text}) for each piece of an answer, ("analysis",
        row) for each finished row. With label heads, a post's text waits for the decisions that can flag it (see
        ``_Emitter``)."""
        analyzer = self.analyzer(config)
        flagging = sum(1 for s in analyzer.specs if s.high_risk) if analyzer.headset is not None else 0
        return analyzer.run(posts, _Emitter(emit, {p.id: flagging for p in posts if not p.error}))

    def cimhi_question(self, messages: Sequence[dict]) -> tuple[str, str] | None:
        """(task, post) when a label-heads model is asked a C-IMHI question about a post, else None."""
        if self.prompt_style != "heads" or not messages or messages[-1]["role"] != "user":
            return None
        m = _CIMHI.fullmatch(messages[-1]["content"].strip())
        if not m:
            return None
        spec = next((s for s in all_tasks() if s.language == "zh" and s.question == m.group(2).strip()), None)
        return (spec.name, m.group(1)) if spec and m.group(1).strip() else None

    def chat(self, request: Request, config: GenConfig) -> Generation:
        return self.backend.generate([request], self._fitted(request, config))[0]

    def chat_streamed(self, request: Request, config: GenConfig, emit: Callable) -> Generation:
        """``chat``, emitting ("text", {text}) as the answer is written; a prompt too long fails before any piece."""
        return self.backend.generate_watched([request], self._fitted(request, config),
                                             lambda _, text: emit("text", {"text": text}))[0]

    def _fitted(self, request: Request, config: GenConfig) -> GenConfig:
        # The exact prompt where the backend renders it (llama.cpp, transformers); an estimate from the messages
        # where a server applies the template.
        prompt = self.backend.render(request) or "\n".join(m["content"] for m in request.messages)
        n = self.backend.count_tokens(prompt)
        if n >= self.backend.context_length:
            raise PromptTooLong(f"the prompt is {n} tokens; the model's context holds {self.backend.context_length}")
        # The answer must fit in the context too: shorten max_tokens rather than fail mid-generation.
        room = self.backend.context_length - n
        if config.max_tokens > room:
            config = GenConfig(**{**config.__dict__, "max_tokens": room})
        return config


class _Emitter(Watcher):
    """An analysis's progress as events, in the order the streamed ``/v1/analyze`` promises (docs/service.md):
    every ``decided`` of a task that can flag a post (suicide risk, its levels) comes before any ``text`` of that
    post, so the crisis resources (sent right after the first flagged decision) reach the reader before any
    explanation, however the sequences decoded together happen to be timed. Text that comes earlier is held back
    and sent, in order, when the last such decision is in, or before the post's first finished row (a failure).

    ``waiting`` counts, per post id, the flagging decisions still to come. Hooks may run on the batch engine's
    thread as well as the model thread: a lock keeps the events in one order."""

    def __init__(self, emit: Callable, waiting: dict[str, int]):
        self.emit, self.waiting = emit, dict(waiting)
        self.held: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def decided(self, analysis: Analysis) -> None:
        with self._lock:
            self.emit("decided", asdict(analysis))
            if self.waiting.get(analysis.id) and get_task(analysis.task).high_risk:
                self.waiting[analysis.id] -= 1
                if not self.waiting[analysis.id]:
                    self._release(analysis.id)

    def text(self, post_id: str, task: str, piece: str) -> None:
        with self._lock:
            event = {"id": post_id, "task": task, "text": piece}
            if self.waiting.get(post_id):
                self.held.setdefault(post_id, []).append(event)
            else:
                self.emit("text", event)

    def finished(self, analysis: Analysis) -> None:
        with self._lock:
            self.waiting[analysis.id] = 0  # its post's unit has ended: no decision of it is still to come
            self._release(analysis.id)
            self.emit("analysis", asdict(analysis))

    def _release(self, post_id: str) -> None:
        for event in self.held.pop(post_id, []):
            self.emit("text", event)
