"""The model-side work of the service. Everything here runs on the model worker (see worker.py), never on the
event loop; with a local model, never two calls at once."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from typing import Sequence

from ..analyze import Analysis, AnalyzeConfig, Analyzer
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


class _FailureRecorder:
    """Passes calls to the backend and keeps the exception of a failed ``generate``.

    ``Analyzer`` records a backend failure on each row, which is right for a file of posts; the API must instead
    answer 502/503 when the model itself failed, so the service re-raises what this recorded."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name = backend.name
        self.context_length = backend.context_length
        self._local = threading.local()  # one failure slot per worker thread

    @property
    def failure(self) -> Exception | None:
        return getattr(self._local, "failure", None)

    @failure.setter
    def failure(self, value: Exception | None) -> None:
        self._local.failure = value

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        try:
            return self.backend.generate(requests, config)
        except Exception as e:
            self.failure = e
            raise

    def prompt_state(self, request: Request):
        try:
            return self.backend.prompt_state(request)
        except Exception as e:
            self.failure = e
            raise

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def close(self) -> None:  # the caller of create_app owns the backend
        pass

    def __getattr__(self, name: str):  # batch_size, concurrency, render...: what the Analyzer asks the backend
        return getattr(self.backend, name)


class AnalysisService:
    def __init__(self, backend: Backend, prompt_style: str, settings: ServeSettings):
        self.backend = backend
        self.prompt_style = prompt_style
        self.settings = settings
        self._recorder = _FailureRecorder(backend)
        self._analyzers: OrderedDict[AnalyzeConfig, Analyzer] = OrderedDict()  # they cache prompt budgets
        self._lock = threading.Lock()

    def config(self, tasks: Sequence[str], explain: bool, redact: bool,
               risk_threshold: float | None = None) -> AnalyzeConfig:
        s = self.settings
        return AnalyzeConfig(tasks=tuple(tasks), explain=explain, max_tokens=s.max_tokens, redact=redact,
                             style=self.prompt_style, heads=s.heads,
                             risk_threshold=s.risk_threshold if risk_threshold is None else risk_threshold)

    def _analyzer(self, config: AnalyzeConfig) -> Analyzer:
        with self._lock:
            analyzer = self._analyzers.get(config)
            if analyzer is None:
                analyzer = self._analyzers[config] = Analyzer(self._recorder, config)
                if len(self._analyzers) > 32:
                    self._analyzers.popitem(last=False)
            self._analyzers.move_to_end(config)
            return analyzer

    def run_task(self, task: str, posts: Sequence[Post], config: AnalyzeConfig) -> list[Analysis]:
        """One task over posts: consecutive prompts share the task's instruction prefix (llama.cpp reuses it)."""
        self._recorder.failure = None
        results = self._analyzer(config).run_task(get_task(task), list(posts))
        if self._recorder.failure is not None:
            raise self._recorder.failure
        return results

    def analyze(self, posts: Sequence[Post], config: AnalyzeConfig) -> list[Analysis]:
        """Task by task over all posts, returned grouped post by post."""
        by_task = [self.run_task(task, posts, config) for task in config.tasks]
        return [by_task[t][p] for p in range(len(posts)) for t in range(len(config.tasks))]

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
        render = getattr(self.backend, "render", None)  # llama.cpp and transformers render the exact prompt
        prompt = render(request) if render else "\n".join(m["content"] for m in request.messages)
        n = self.backend.count_tokens(prompt)
        if n >= self.backend.context_length:
            raise PromptTooLong(f"the prompt is {n} tokens; the model's context holds {self.backend.context_length}")
        # The answer must fit in the context too: shorten max_tokens rather than fail mid-generation.
        room = self.backend.context_length - n
        if config.max_tokens > room:
            config = GenConfig(**{**config.__dict__, "max_tokens": room})
        return self.backend.generate([request], config)[0]
