"""The main job: posts in, for each task a label plus an explanation out.

posts -> (redact) -> prompt from the task spec -> backend -> parse with the task spec -> Analysis
(+ high-risk flag). With label heads (``style="heads"``, the default model mentalglm-mini) the label
is not generated: the heads give every label of the task a probability from the model's hidden
state at the end of the prompt, the label is decided over that closed set, and the explanation is
generated afterwards, after the chosen label's sentence: for the tasks the heads folder's trained explainer (a LoRA
adapter on a smaller model, ``heads.explainer``) was measured to write better, by it; else by the heads' model
continuing the prompt its state was read from (``AnalyzeConfig.explainer``); when the decision is close
(``heads.unsure``) the row names the runner-up and the explanation is asked to weigh the two. Quotes that are
near misses of the post's words are repaired to the post's closest span, then every quote is checked against
the post (``evidence_ok``), and a reader says which label the explanation argues for (``heads.reader``).
Files are written one JSON line per (post, task) as results are produced (``mentalglm.jsonl``), and
``--resume`` skips the pairs an earlier run already wrote, redoing its errors.

``Analyzer`` is the one run engine: ``analyze``, ``eval predict``, the service's requests and its jobs all go
through it. A backend failure is either recorded in the rows it hit (a file of posts goes on) or raised (the
service answers 502/503): the caller chooses with ``on_error``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .evidence import check_evidence, repair_quotes
from .inputs import Post
from .jsonl import drop_lines, read_objects
from .llm.base import Backend, GenConfig, Request, batches
from .prompts import build_request, heads_request, label_only_stops, quote_lead, unsure_lead
from .safety import redact as redact_pii
from .tasks import DEFAULT_TASKS, INVALID, OK, TaskSpec, get_task, parse_answer

log = logging.getLogger("mentalglm")
ERROR = "error"
RECORD, RAISE = "record", "raise"  # what the engine does with a backend failure: an error row, or the exception


@dataclass
class Analysis:
    id: str
    task: str
    labels: list[str]
    explanation: str
    raw: str
    parse_status: str  # ok | fallback | invalid | error
    model: str
    latency_ms: float
    high_risk: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    label_en: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # label -> calibrated probability (label heads)
    evidence_ok: bool | None = None  # every quote of the explanation is in the post (None: no explanation)
    # Added later, at the end with defaults so older rows (resume) still load:
    runner_up: dict | None = None  # unsure rows (label heads): {"label": the runner-up, "p": its probability}
    explanation_labels: list[str] | None = None  # the label the explanation argues for, read from it alone
    explanation_consistent: bool | None = None  # that label agrees with the row's (None: no explanation or reader)
    quotes_repaired: int = 0  # near-miss quotes replaced by the post's closest span (each named in warnings)
    decided_by: str | None = None  # label heads: "model" (the stack on the model's state) or "screen" (heads.screen)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class Watcher:
    """What a caller that shows an analysis while it is made is told (the service streams it to clients).
    Each hook runs on the thread doing the analysis, between tokens. Under ``on_error=RAISE`` a hook that raises
    stops the analysis (the service's way to stop generating for a client that went away)."""

    def decided(self, analysis: Analysis) -> None:
        """Label heads: the labels, scores and high-risk flag of a (post, task), known before its explanation is
        written (``explanation`` is empty, ``raw`` the label sentence)."""

    def text(self, post_id: str, task: str, piece: str) -> None:
        """The next piece of a (post, task)'s answer (``raw``) as the model writes it."""

    def finished(self, analysis: Analysis) -> None:
        """A (post, task) row is complete."""


BRIEF_STOPS = ("。", "！", "？")


def sentence_ended(text: str) -> str:
    """A brief explanation cut at its first sentence's end (the stop string is not part of the answer): the quote it
    was in closed (a post's own sentence may end inside a quote), a clause mark it was left on dropped (a writer that
    stops right after the quote lead, ``帖子中提到“…”，``), and the full stop put back."""
    if not text:
        return text
    if text.count("“") > text.count("”"):
        text += "”"
    text = text.rstrip("，、；：,;:")
    return text if text.endswith(BRIEF_STOPS) else text + "。"


@dataclass(frozen=True)
class AnalyzeConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    explain: bool = True
    max_tokens: int = 160
    redact: bool = False
    style: str = "zeroshot"
    temperature: float = 0.0
    heads: str | None = None  # heads folder for style "heads" (default: the packaged mentalglm-mini)
    risk_threshold: float | None = None  # P(high risk) that flags a post (default: the heads' operating point)
    # Who writes a heads row's explanation: "auto", the heads folder's explainer (heads/explainer.py) for the tasks its
    # manifest names (where it beat the base on validation), the base for the others; "trained", the explainer for
    # every task; "base", the heads' own model continuing the prompt its state was read from.
    explainer: str = "auto"
    # A heads row's explanation starts by quoting the post's clause the head's n-gram part weighs most for the label
    # (TaskHead.evidence): its evidence is then the post's own words, whoever writes the rest.
    quote_first: bool = True
    # The writer of a heads row's explanation may only quote the post: while a quote is open, decoding is held to
    # the post's words (llm/quotes.py; llama.cpp), so no quote is made up. The evidence check still runs.
    guard_quotes: bool = True
    # Screening (heads.screen): the heads' n-gram part decides the posts it is sure of, the model only the rest;
    # screen_threshold moves every task's operating point (default: the heads folder's screen.json).
    screen: bool = False
    screen_threshold: float | None = None
    # A heads row's explanation ends with its first sentence (after the quote it starts with): a shorter answer;
    # full analysis at 1.18x the posts/s (docs/analyze.md, "Brief explanations").
    brief: bool = False


class Analyzer:
    """Runs the task specs over posts with one backend; ``on_error`` is RECORD or RAISE (see the module doc)."""

    def __init__(self, backend: Backend, config: AnalyzeConfig = AnalyzeConfig(), on_error: str = RECORD):
        if on_error not in (RECORD, RAISE):
            raise ValueError(f"on_error must be {RECORD!r} or {RAISE!r}, got {on_error!r}")
        self.backend = backend
        self.config = config
        self.on_error = on_error
        self.specs: list[TaskSpec] = [get_task(t) for t in config.tasks]
        self._budget: dict[str, int] = {}
        self.headset = None
        self.readers: dict = {}  # task -> heads.reader.ExplanationReader
        self.explainer = None  # the trained explainer's backend, when it writes some explanations
        self.explained: frozenset[str] = frozenset()  # the tasks it writes
        self.state_model = backend  # the model whose states the heads read (heads.HeadSet.state_model)
        self.post_model = None  # the classifier that heads with pool "post" read (heads.HeadSet.post_model)
        self._per_post: OrderedDict = OrderedDict()  # (pool, post) -> state, for per-post pools (features.PER_POST)
        if config.style == "heads":
            self.headset, self.readers = _open_heads(backend, config)
            self.state_model = self.headset.state_model(backend)
            self.post_model = self.headset.post_model(backend)
            spec = self.headset.explainer
            if config.explain and spec is not None and config.explainer != "base":
                self.explained = frozenset(config.tasks if config.explainer == "trained" else spec.tasks) \
                    & frozenset(config.tasks)
            if self.explained:
                from .heads.explainer import open_explainer

                self.explainer = open_explainer(spec, parallel=backend.batch_size)

    def gen_config(self, spec: TaskSpec) -> GenConfig:
        if self.config.explain:
            return GenConfig(max_tokens=self.config.max_tokens, temperature=self.config.temperature)
        # Labels only: stop right after the label sentence; a few tokens suffice.
        return GenConfig(max_tokens=24, temperature=self.config.temperature, stop=label_only_stops(spec))

    def request(self, spec: TaskSpec, text: str) -> Request:
        """The prompt for one post; subclasses change it (few-shot examples as earlier chat turns)."""
        return build_request(spec, text, self.config.style)

    def _post_budget(self, spec: TaskSpec) -> int:
        """Tokens a post may take: the context minus the prompt around it and the answer."""
        if spec.name not in self._budget:
            empty = self.request(spec, "")
            overhead = sum(self.backend.count_tokens(m["content"]) for m in empty.messages) + 64
            self._budget[spec.name] = self.backend.context_length - overhead - self.gen_config(spec).max_tokens
        return self._budget[spec.name]

    def _fit(self, spec: TaskSpec, text: str) -> tuple[str, list[str]]:
        budget = self._post_budget(spec)
        n = self.backend.count_tokens(text)
        if n <= budget:
            return text, []
        keep = max(1, int(len(text) * budget / n * 0.95))
        while keep > 1 and self.backend.count_tokens(text[:keep]) > budget:
            keep = int(keep * 0.9)
        return text[:keep], [f"post truncated from {n} to about {budget} tokens (context {self.backend.context_length})"]

    def _error(self, post: Post, spec: TaskSpec, message: str) -> Analysis:
        return Analysis(post.id, spec.name, [], "", "", ERROR, self.backend.name, 0.0, error=message)

    def _backend_failed(self, posts: Sequence[Post], spec: TaskSpec, e: Exception) -> list[Analysis]:
        """Error rows for the posts a failed backend call was for; under RAISE the caller gets the exception."""
        if self.on_error == RAISE:
            raise e
        log.error("task %s: backend failed on %d post(s): %s", spec.name, len(posts), e)
        return [self._error(post, spec, f"backend error: {e}") for post in posts]

    @staticmethod
    def _told(watch: Watcher | None, keys: list[tuple[str, str]]) -> Callable[[int, str], None] | None:
        """What tells a watcher the text of answer ``i`` (``keys``: each answer's (post id, task))."""
        return None if watch is None else (lambda i, text: watch.text(*keys[i], text))

    def _group(self, spec: TaskSpec, posts: Sequence[Post], watch: Watcher | None = None) -> list[Analysis]:
        """One task over a group of posts the backend runs at once."""
        if self._post_budget(spec) < 16:
            message = (f"the context ({self.backend.context_length} tokens) cannot hold the {spec.name} prompt and "
                       f"an answer of {self.gen_config(spec).max_tokens} tokens; use a larger --n-ctx")
            return [self._error(post, spec, post.error or message) for post in posts]
        out: list[Analysis | None] = [None] * len(posts)
        todo, requests, notes = [], [], []
        for i, post in enumerate(posts):
            if post.error:
                out[i] = self._error(post, spec, post.error)
                continue
            text = redact_pii(post.text) if self.config.redact else post.text
            text, warnings = self._fit(spec, text)
            for w in warnings:
                log.warning("post %s, task %s: %s", post.id, spec.name, w)
            todo.append(i)
            requests.append(self.request(spec, text))
            notes.append(warnings)
        if requests:
            try:
                generations = self.backend.generate_watched(
                    requests, self.gen_config(spec), self._told(watch, [(posts[i].id, spec.name) for i in todo]))
            except Exception as e:
                for i, row in zip(todo, self._backend_failed([posts[i] for i in todo], spec, e)):
                    out[i] = row
                return out  # type: ignore[return-value]
            for i, gen, warnings in zip(todo, generations, notes):
                out[i] = self._analysis(posts[i], spec, gen.text, gen.latency_ms, warnings)
        return out  # type: ignore[return-value]

    def _analysis(self, post: Post, spec: TaskSpec, raw: str, latency_ms: float, warnings: list[str]) -> Analysis:
        parsed = parse_answer(spec, raw)
        if parsed.status == INVALID:
            warnings = [*warnings, f"model output did not parse: {parsed.reason}"]
        explanation, evidence_ok, repaired = _evidence(spec, parsed.explanation, post.text, warnings)
        return Analysis(post.id, spec.name, list(parsed.labels), explanation, raw, parsed.status,
                        self.backend.name, round(latency_ms, 1), spec.high_risk_in(parsed.labels), warnings,
                        label_en=[spec.label(n).en for n in parsed.labels], evidence_ok=evidence_ok,
                        quotes_repaired=repaired)

    def _by_heads(self, pairs: Sequence[tuple[Post, TaskSpec]], watch: Watcher | None = None) -> list[Analysis]:
        """Label (post, task) pairs by the tasks' heads over their closed label sets, then (optionally) explain each
        chosen label. The backend reads every state, then writes every explanation, as one batch: a backend that
        decodes sequences together (llama.cpp with ``--parallel``) runs them at once."""
        from .heads.explainer import explainer_request
        from .heads.features import PER_POST, POST_CHARS, head_text, mean_of

        out: list[Analysis | None] = [None] * len(pairs)
        live, texts, notes = [], [], []
        for i, (post, spec) in enumerate(pairs):
            if post.error:
                out[i] = self._error(post, spec, post.error)
                continue
            live.append(i)
            texts.append(head_text(redact_pii(post.text) if self.config.redact else post.text))
            notes.append([f"post cut to its first {POST_CHARS} characters"] if len(post.text.strip()) > POST_CHARS
                         else [])
        if not live:
            return out  # type: ignore[return-value]
        start = time.perf_counter()
        heads = [self.headset.head(pairs[i][1].name) for i in live]
        probs: list = [None] * len(live)
        labels: list = [None] * len(live)
        asked: list = [None] * len(live)
        # (runner-up, the explanation's prefilled lead: the unsure lead, then the quote it starts with)
        unsure: list = [(None, "")] * len(live)
        by_explainer = [pairs[i][1].name in self.explained for i in live]  # else the model writes the explanation

        def decided(k: int, p, chosen: list[str] | None = None) -> None:
            """Row k's decision (the screen's ``chosen``, else the head's from ``p``), and the explanation to write,
            if asked for. A watcher hears the decision before the explanation is written (the crisis banner need
            not wait for it)."""
            (post, spec), head = pairs[live[k]], heads[k]
            probs[k], labels[k] = p, chosen or head.decide(p)
            unsure[k] = self._unsure(spec, head, probs[k], labels[k])
            span = head.evidence(texts[k], labels[k]) if self.config.explain and self.config.quote_first else None
            if span:
                unsure[k] = (unsure[k][0], unsure[k][1] + quote_lead(spec, span))
            if watch is not None:
                watch.decided(self._heads_row(post, spec, head, probs[k], labels[k], spec.label_sentence(labels[k]),
                                              "", 0.0, list(notes[k]), {"runner_up": unsure[k][0],
                                                                        "decided_by": by[k]}))
            if self.config.explain:
                request = (explainer_request if by_explainer[k] else heads_request)(
                    spec, texts[k], tuple(labels[k]), unsure[k][1])
                asked[k] = replace(request, quote_source=texts[k]) if self.config.guard_quotes else request

        by = ["model"] * len(live)
        for k, (p, chosen) in (self._screened(heads, texts) if self.config.screen else {}).items():
            by[k] = "screen"
            decided(k, p, chosen)
        model = [k for k in range(len(live)) if by[k] == "model"]

        def decide(j: int, state) -> Request | None:
            """The head's decision from model row j's state; the request the model then continues, if any."""
            decided(model[j], heads[model[j]].probabilities(texts[model[j]], state))
            return None if by_explainer[model[j]] else asked[model[j]]

        keys = [(pairs[i][0].id, pairs[i][1].name) for i in live]
        explaining = GenConfig(max_tokens=self.config.max_tokens, temperature=self.config.temperature,
                               stop=("\n\n",) + (BRIEF_STOPS if self.config.brief else ()))
        gens: list = [None] * len(live)
        try:
            requests = [heads_request(pairs[live[k]][1], texts[k]) for k in model]
            pools = [mean_of(texts[k], heads[k].pool) for k in model]
            shared = [j for j, k in enumerate(model) if heads[k].pool in PER_POST]
            if shared:  # the same state for every task of a post (features.PER_POST)
                for j, state in zip(shared, self._post_states([texts[model[j]] for j in shared],
                                                              [requests[j] for j in shared],
                                                              [heads[model[j]].pool for j in shared])):
                    decide(j, state)
            rest = [j for j in range(len(model)) if heads[model[j]].pool not in PER_POST]
            if rest and self.state_model is self.backend:  # states, then the explanations continuing each prompt
                done = self.backend.states_then_generate(
                    [requests[j] for j in rest], [pools[j] for j in rest], lambda i, state: decide(rest[i], state),
                    explaining, self._told(watch, [keys[model[j]] for j in rest]))
                for j, g in zip(rest, done):
                    gens[model[j]] = g
            elif rest:  # the states of a shallower copy: the full model writes from the start (_write_rest)
                for j, state in zip(rest, self.state_model.prompt_states([requests[j] for j in rest],
                                                                         [pools[j] for j in rest])):
                    decide(j, state)
            self._write_rest(asked, gens, explaining, self._told(watch, keys), by_explainer)
            raws = [g.text if g else pairs[i][1].label_sentence(lab) for i, g, lab in zip(live, gens, labels)]
            explanations = [(lead + g.text[len(r.answer_prefix):]).strip() if g else ""
                            for g, r, (_, lead) in zip(gens, asked, unsure)]
            if self.config.brief:
                explanations = [sentence_ended(e) if g and g.finish_reason == "stop" else e
                                for e, g in zip(explanations, gens)]
        except Exception as e:
            for i in live:
                out[i] = self._backend_failed([pairs[i][0]], pairs[i][1], e)[0]
            return out  # type: ignore[return-value]
        latency = round((time.perf_counter() - start) * 1000, 1)
        for k, i in enumerate(live):
            (post, spec), warnings = pairs[i], notes[k]
            checks = self._checked(spec, labels[k], explanations[k], texts[k], warnings, unsure[k][1])
            out[i] = self._heads_row(post, spec, heads[k], probs[k], labels[k], raws[k], checks.pop("explanation"),
                                     latency, warnings, {"runner_up": unsure[k][0], "decided_by": by[k], **checks})
        return out  # type: ignore[return-value]

    def _post_states(self, texts: list[str], requests: list[Request], pools: list[str]) -> list:
        """Each post's state of a per-post pool (features.PER_POST), read once per post and kept for the last posts
        (the tasks of a post come together, in one batch or one after another)."""
        from .heads.features import post_states

        for pool in set(pools):
            todo: dict[tuple[str, str], Request] = {}
            for text, request, p in zip(texts, requests, pools):
                if p == pool and (pool, text) not in self._per_post:
                    todo.setdefault((pool, text), request)
            if todo:
                model = self.post_model if pool == "post" else self.state_model
                read = post_states(model, [t for _, t in todo], list(todo.values()), pool)
                self._per_post.update(zip(todo, read))
        out = [self._per_post[(pool, text)] for text, pool in zip(texts, pools)]
        while len(self._per_post) > 64:
            self._per_post.popitem(last=False)
        return out

    def _write_rest(self, asked: list, gens: list, config: GenConfig, told, explained: list[bool]) -> None:
        """Write every asked explanation not yet written (into ``gens``): the explainer's (rows ``explained``), and
        those the model writes with no prompt of its own to continue (screened rows, states of a shallower copy)."""
        for writer, mine in ((self.explainer, True), (self.backend, False)):
            todo = [k for k, request in enumerate(asked) if request is not None and gens[k] is None
                    and explained[k] == mine]
            if todo:
                done = writer.generate_watched([asked[k] for k in todo], config,
                                               told and (lambda j, text, todo=todo: told(todo[j], text)))
                for k, g in zip(todo, done):
                    gens[k] = g

    def _screened(self, heads: list, texts: list[str]) -> dict[int, tuple]:
        """{k: (the screen's probabilities, its labels)} for the rows the screen is sure of (``heads.screen``)."""
        out = {}
        for k, (head, text) in enumerate(zip(heads, texts)):
            screen = self.headset.screens.get(head.task)
            if screen is not None:
                p = screen.probabilities(head, text)
                chosen = screen.decide(head, p, self.config.screen_threshold)
                if chosen:
                    out[k] = (p, chosen)
        return out

    def _unsure(self, spec: TaskSpec, head, probs, labels: list[str]) -> tuple[dict | None, str]:
        """(the runner-up of an unsure decision, the lead its explanation starts with), or (None, "")."""
        from .heads.unsure import runner_up

        runner = runner_up(head, probs, labels, self.headset.unsure_threshold(spec.name))
        if runner is None:
            return None, ""
        p_label = None if head.multi_label else float(probs[head.labels.index(labels[0])])
        return runner, unsure_lead(spec, tuple(labels), runner["label"], runner["p"], p_label)

    def _checked(self, spec: TaskSpec, labels: list[str], explanation: str, post: str, warnings: list[str],
                 lead: str = "") -> dict:
        """An explanation's checks: near-miss quotes repaired, then ``evidence_ok``; the label it argues for (read
        without ``lead`` and the quotes) and whether that is the row's label."""
        explanation, evidence_ok, repaired = _evidence(spec, explanation, post, warnings)
        out = {"explanation": explanation, "evidence_ok": evidence_ok, "quotes_repaired": repaired}
        reader = self.readers.get(spec.name)
        if explanation and reader is not None:
            from .heads.reader import argument

            argued = reader.argued(argument(explanation, lead))
            out["explanation_labels"] = None if argued is None else [argued]
            out["explanation_consistent"] = reader.consistent(argued, labels)
        return out

    def _pair_by_pair(self, pairs: Sequence[tuple[Post, TaskSpec]], watch: Watcher | None = None) -> list[Analysis]:
        """``_by_heads`` one sequence at a time, each pair alone: its explanation continues the prompt its state left
        in the cache, before the next pair's prompt replaces it. The tasks that can flag a post go first, so a
        streamed reader has the crisis resources before any explanation without waiting; rows come back in the
        order given."""
        out: list[Analysis | None] = [None] * len(pairs)
        for i in sorted(range(len(pairs)), key=lambda i: not pairs[i][1].high_risk):
            out[i] = self._by_heads([pairs[i]], watch)[0]
        return out  # type: ignore[return-value]

    def _heads_row(self, post: Post, spec: TaskSpec, head, probs, labels: list[str], raw: str, explanation: str,
                   latency_ms: float, warnings: list[str], checks: dict | None = None) -> Analysis:
        """A label-heads row; ``checks``: more of its fields (runner_up, evidence_ok and the other checks)."""
        return Analysis(post.id, spec.name, list(labels), explanation, raw, OK, self.backend.name, latency_ms,
                        head.flagged(probs, self.config.risk_threshold), warnings,
                        label_en=[spec.label(n).en for n in labels],
                        scores={lab: round(float(x), 4) for lab, x in zip(head.labels, probs)}, **(checks or {}))

    def units(self, posts: Iterable[Post], done: set[tuple[str, str]] = frozenset(), chunk: int = 16,
              watch: Watcher | None = None) -> Iterator[Callable[[], list[Analysis]]]:
        """The work for ``posts`` as small units in the order they run; calling one runs it and returns its rows.

        Posts are taken ``chunk`` at a time. Within a chunk, generated labels go task by task, so consecutive
        prompts share the task's instruction prefix (llama.cpp reuses it from its KV cache), in groups of the
        backend's ``batch_size``; label heads take every task of ``batch_size`` posts at once, post by post,
        because their prompt puts the post first and a post's tasks share its evaluation. (id, task) pairs in
        ``done`` are skipped. Building the units calls no
        backend: the server's job runner builds them on its own thread and runs each one on the model worker,
        so interactive requests get in between units. ``watch`` sees each answer as it is written."""
        posts = iter(posts)
        while batch := list(islice(posts, chunk)):
            if self.headset is not None:
                for group in batches(batch, self.backend.batch_size):
                    pairs = [(p, s) for p in group for s in self.specs if (p.id, s.name) not in done]
                    if pairs:
                        yield partial(self._by_heads if self.backend.batch_size > 1 else self._pair_by_pair,
                                      pairs, watch)
                continue
            for spec in self.specs:
                todo = [p for p in batch if (p.id, spec.name) not in done]
                for group in batches(todo, self.backend.batch_size):
                    yield partial(self._group, spec, group, watch)

    def stream(self, posts: Iterable[Post], done: set[tuple[str, str]] = frozenset(),
               chunk: int = 16, watch: Watcher | None = None, ahead: bool = True) -> Iterator[Analysis]:
        """Analyses for many posts as they finish (the order of ``units``), for writing to a file as they come.

        A backend that batches calls from several threads (llama.cpp with ``--parallel``) gets the next unit while
        the current one finishes, so its sequences do not idle while the last answers of a unit are written."""
        units = self.units(posts, done, chunk, watch)
        if ahead and self.backend.thread_safe and self.backend.batch_size > 1:
            units = _one_ahead(units)
        for unit in units:
            for analysis in unit():
                if watch is not None:
                    watch.finished(analysis)
                yield analysis

    def run(self, posts: Sequence[Post], watch: Watcher | None = None) -> list[Analysis]:
        """Every task over a few posts, in input order: post by post, each post's tasks in order. ``watch`` is told
        the labels, the answer's text and each finished row as they come (see ``Watcher``)."""
        posts = list(posts)
        results = list(self.stream(posts, chunk=max(1, len(posts)), watch=watch, ahead=False))  # one chunk
        if self.headset is not None:  # already post by post
            return results
        n = len(posts)  # one chunk, task by task: row t * n + p is task t of post p
        return [results[t * n + p] for p in range(n) for t in range(len(self.specs))]

    def analyze(self, text: str, post_id: str = "1") -> list[Analysis]:
        post = Post(post_id, text.strip(), None if text.strip() else "empty post")
        return self.run([post])


def _one_ahead(units: Iterator[Callable[[], list[Analysis]]]) -> Iterator[Callable[[], list[Analysis]]]:
    """``units`` in order, each started on a thread as soon as the one before it is taken."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mentalglm-unit") as pool:
        ahead = None
        try:
            for unit in units:
                running = pool.submit(unit)
                if ahead is not None:
                    yield ahead.result
                ahead = running
            if ahead is not None:
                yield ahead.result
        finally:
            if ahead is not None:
                ahead.cancel()


def _evidence(spec: TaskSpec, explanation: str, post: str, warnings: list[str]) -> tuple[str, bool | None, int]:
    """(the explanation with its near-miss quotes repaired, whether its quotes are then all in the post, how many
    were repaired); a warning names each repaired quote and each quote still not in the post."""
    if not explanation:
        return explanation, None, 0
    names = [f for lab in spec.labels for f in lab.surface_forms()]
    fixed = repair_quotes(explanation, post, ignore=names)
    for quote, span in fixed.repaired:
        warnings.append(f"quote repaired to the post's words: “{quote[:20]}” → “{span[:20]}”")
    found = check_evidence(fixed.text, post, ignore=names)
    for quote in found.missing:
        warnings.append(f"quoted evidence not in the post: “{quote[:20]}”")
    return fixed.text, found.ok, len(fixed.repaired)


def _open_heads(backend: Backend, config: AnalyzeConfig):
    from .heads import HeadsError, load_heads

    if not backend.hidden_states:
        raise HeadsError(f"label heads read a model's hidden states, which {backend.name} does not expose; "
                         "use a llama.cpp (GGUF) model")
    from .heads.reader import explanation_reader, load_trained

    headset = load_heads(config.heads)
    headset.check_base(backend.path)  # every backend with hidden states (llama.cpp) reads a model file
    for task in config.tasks:
        headset.head(task)  # a task without a head: fail before any post is read
    if not config.explain:  # no explanation to read
        return headset, {}
    trained = load_trained()
    return headset, {task: explanation_reader(headset.head(task), get_task(task).ordinal, trained)
                     for task in config.tasks}


def resume_rows(out_path: Path, retry_errors: bool = True) -> tuple[dict[tuple[str, str], str], int]:
    """(parse_status of each (id, task) already in an output file, how many error rows were removed to be redone).

    The file is read with the shared JSON-lines reader (a torn last line is cut off). With ``retry_errors``,
    ``error`` rows (a backend hiccup, a bad input row since fixed) are removed from the file so they are redone,
    and one (id, task) never has two rows."""
    rows, bad = read_objects(out_path)
    for b in bad:
        log.warning("%s:%d: skipping a damaged line (%s)", out_path, b.line, b.reason)
    done: dict[tuple[str, str], str] = {}
    redo: set[int] = set()
    for line, row in rows:
        if "id" not in row or "task" not in row:
            log.warning("%s:%d: skipping a line without id and task", out_path, line)
        elif retry_errors and row.get("parse_status") == ERROR:
            redo.add(line)
        else:
            done[(str(row["id"]), row["task"])] = row.get("parse_status", "")
    drop_lines(out_path, redo)
    return done, len(redo)


def completed_pairs(out_path: Path, retry_errors: bool = True) -> set[tuple[str, str]]:
    """(id, task) pairs already in an output file that a resumed run skips (see ``resume_rows``)."""
    return set(resume_rows(out_path, retry_errors)[0])
