"""The one small protocol every LLM backend implements, and the records it exchanges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

T = TypeVar("T")


@dataclass(frozen=True)
class GenConfig:
    """Decoding settings. Greedy by default: analyses should be reproducible."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: tuple[str, ...] = ()
    seed: int = 0
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class Request:
    """Chat messages, plus text the answer is made to start with.

    Backends that see the raw prompt (llama.cpp, transformers) render the chat template and
    append ``answer_prefix`` after the assistant header, so the model continues a well-formed
    answer ("这篇帖子体现了…"); HTTP backends cannot, and say so with ``prefilled=False``.
    """

    messages: tuple[dict, ...]
    answer_prefix: str = ""
    # Every quote (“…”) of the answer is taken from this text, where the backend can constrain decoding
    # (llama.cpp: llm/quotes.py); empty: unconstrained.
    quote_source: str = ""


@dataclass(frozen=True)
class Generation:
    text: str  # the answer, starting with answer_prefix when it was prefilled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""
    prefilled: bool = False


@dataclass(frozen=True)
class Piece:
    """One step of a streamed answer: the text added since the previous piece. The last piece also carries the
    whole answer as ``generate`` would have returned it (its ``text`` is every piece's text joined)."""

    text: str
    generation: Generation | None = None


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says how to get it."""


@runtime_checkable
class Backend(Protocol):
    """What every backend offers, declared so that no caller has to probe for an attribute.

    Backends subclass this protocol and inherit the defaults below (one request at a time, no raw prompt,
    no hidden states, nothing to close); they override what they can do better.
    """

    name: str
    context_length: int
    # How many requests one ``generate`` call is worth handed at once: a padded batch (transformers, vLLM),
    # parallel HTTP requests (OpenAI-compatible servers), or one (llama.cpp, which runs one prompt at a time).
    # The run engine sends posts in groups of this size, so results are written as soon as each group is done.
    batch_size: int = 1
    # Whether ``prompt_state`` works: the hidden state at the end of a prompt, which label heads score.
    # Only a backend that sees the model's activations has it (llama.cpp); heads refuse any other.
    hidden_states: bool = False
    # Whether several threads may call ``generate`` at once (an HTTP client); local models hold one context and
    # are called from one thread. The service and the teacher size their thread pools by it.
    thread_safe: bool = False

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        """Answer every request, in order. Implementations batch or parallelise as they can."""

    def stream(self, request: Request, config: GenConfig) -> Iterator[Piece]:
        """Answer one request piece by piece as it is written (same stops and max_tokens as ``generate``). This
        default yields the whole answer at once, so every backend can be streamed; backends that decode token by
        token (llama.cpp) yield as they go. Closing the iterator early stops the generation."""
        [generation] = self.generate([request], config)
        yield Piece(generation.text, generation)

    def generate_watched(self, requests: Sequence[Request], config: GenConfig,
                         on_text: Callable[[int, str], None] | None) -> list[Generation]:
        """``generate``, telling ``on_text(index, piece)`` (if given) each answer as it is written. This default
        streams a lone request and tells several whole once all are done; llama.cpp with ``--parallel`` streams
        them all."""
        if on_text is None:
            return self.generate(requests, config)
        if len(requests) != 1:
            generations = self.generate(requests, config)
            for i, generation in enumerate(generations):
                on_text(i, generation.text)
            return generations
        generation = None
        for piece in self.stream(requests[0], config):
            if piece.text:
                on_text(0, piece.text)
            generation = piece.generation or generation
        return [generation]

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under this model's tokenizer (an estimate for HTTP backends)."""

    def render(self, request: Request) -> str | None:
        """The exact prompt text the model reads, or None where the server applies the chat template (HTTP)."""
        return None

    def prompt_state(self, request: Request, mean_of: str | None = None):
        """The final-layer hidden state at the end of the rendered prompt (only where ``hidden_states``);
        with ``mean_of`` (a text in the prompt), the mean state of that text's tokens is appended."""
        raise NotImplementedError(f"{self.name} does not expose hidden states")

    def prompt_states(self, requests: Sequence[Request], mean_of: Sequence[str | None], mean_only: bool = False) -> list:
        """``prompt_state`` of several prompts; backends that decode sequences together read them at once. With
        ``mean_only``, only the mean state of each ``mean_of`` text (the prompt is read no further than its end)."""
        states = [self.prompt_state(r, m) for r, m in zip(requests, mean_of)]
        return [s[len(s) // 2:] for s in states] if mean_only else states

    def states_then_generate(self, requests: Sequence[Request], mean_of: Sequence[str | None],
                             follow_up: Callable[[int, object], Request | None], config: GenConfig,
                             on_text: Callable[[int, str], None] | None = None) -> list[Generation | None]:
        """Each request's state handed to ``follow_up(index, state)``, then the request it returns generated: the
        generations, in order, None where it returned None. How label heads decide and then explain (the
        decision is ``follow_up``'s to keep). This default reads every state, then generates; llama.cpp with
        ``--parallel`` continues each sequence right after its state, while its prompt is still cached.
        ``follow_up`` may run on another thread: keep it quick."""
        states = self.prompt_states(requests, mean_of)
        follow = [follow_up(i, s) for i, s in enumerate(states)]
        todo = [i for i, r in enumerate(follow) if r is not None]
        gens: list = [None] * len(requests)
        if todo:
            done = self.generate_watched([follow[i] for i in todo], config,
                                         (lambda k, text: on_text(todo[k], text)) if on_text else None)
            for i, generation in zip(todo, done):
                gens[i] = generation
        return gens

    def close(self) -> None:
        return None


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive groups of ``size`` (a backend's ``batch_size``): what one ``generate`` call is given,
    so that callers write each group's results as soon as it is done."""
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class Usage:
    """Running token accounting across calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, g: Generation) -> None:
        self.prompt_tokens += g.prompt_tokens
        self.completion_tokens += g.completion_tokens
        self.calls += 1


def answers(backend: Backend, calls: Sequence[tuple[Request, GenConfig]],
            refused: tuple[type[Exception], ...] = ()) -> Iterator[tuple[int, "Generation | Exception"]]:
    """Each call's answer as soon as it is written: ``(index, Generation)``, or ``(index, exception)`` for a request
    the model refused (an exception of a ``refused`` type; any other stops the run). A backend that takes calls from
    several threads (HTTP, llama.cpp with ``--parallel``) gets ``batch_size`` of them at once, so they are answered
    together; any other gets one at a time. For callers that store each answer as it comes (the teacher's cache)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def one(i: int):
        request, config = calls[i]
        try:
            return i, backend.generate([request], config)[0]
        except refused as e:
            return i, e

    workers = min(len(calls), backend.batch_size) if backend.thread_safe else 1
    if workers <= 1:
        yield from (one(i) for i in range(len(calls)))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mentalglm-answers") as pool:
        futures = [pool.submit(one, i) for i in range(len(calls))]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # the reader stopped (or failed): calls not yet started never start
            for future in futures:
                future.cancel()
