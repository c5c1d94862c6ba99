"""Many sequences decoded together in one llama.cpp context: batched, continuous decoding on a CPU.

A decode step that carries one token of each of N sequences costs much less than N steps of one token
(the weights are read, and matrix kernels run, once for all N). The engine keeps N slots (llama.cpp
sequence ids) in one context, each slot with its own KV stream (``kv_unified`` off): every token attends
only to its own sequence's cells. (In a unified cache every token's attention spans the cells of all
sequences: 32 sequences of 256 tokens decoded 1.7x slower so, see ``benchmarks/decode_batch.py --layouts``.)

- a job is a prompt (tokens) to evaluate, then a hidden state to read or tokens to generate;
- a new job takes the lowest free slot, keeps the part of its prompt that slot has cached, and if another
  slot holds a longer prefix of it it copies that slot's stream and cuts it to the shared prefix
  (``llama_memory_seq_cp``, a memory copy, no evaluation): the task's instruction, or the post the heads
  prompt starts with, is evaluated once;
- every step is one ``llama_decode`` call carrying the next prompt chunk of each job still reading
  its prompt and one token of each job generating; a job submitted while others run joins at the
  next step (continuous batching), and a finished job frees its slot at once (its cells stay cached
  for the next job that shares them).

A slot never holds more than ``slot_ctx`` tokens, so the ``slots x slot_ctx`` cells of the context
always suffice. Greedy decoding picks the same tokens as one-at-a-time decoding up to float rounding
(checked by the tests and by benchmarks/parallel.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .base import GenConfig, Generation
from .quotes import QuoteGuard
from .quotes import apply as apply_guard

# A job waits one step for another's prompt to be evaluated if that shares at least this many more tokens.
SHARE_AT_LEAST = 16
# Tokens before the end of a generation that llama.cpp's repeat penalty looks at (its default).
REPEAT_WINDOW = 64


@dataclass(eq=False)
class Job:
    tokens: list[int]  # the whole prompt
    future: Future
    config: GenConfig | None = None  # generate when set, else read the state at the prompt's end
    mean_span: tuple[int, int] | None = None  # state: also average the states of tokens [start, end)
    prefix: str = ""  # generation: text the answer starts with (already in the prompt)
    on_text: Callable[[str], None] | None = None  # generation: told each new piece of the answer
    guard: QuoteGuard | None = None  # generation: keeps its quotes inside a source text (llm/quotes.py)
    then: Callable | None = None  # state: the generation to run next in the same sequence (see ``state``)
    sent: int = 0  # characters of the answer already given to on_text
    slot: int = -1
    pos: int = 0  # prompt tokens in the slot's cache
    out: list[int] = field(default_factory=list)
    raw: bytes = b""  # the bytes of ``out``, grown a token at a time
    total: np.ndarray | None = None
    rng: np.random.Generator | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.tokens)


class BatchEngine:
    """A decode loop on its own thread over ``slots`` sequences; ``generate`` and ``state`` may be called from any
    thread."""

    def __init__(self, llm, slots: int, slot_ctx: int, n_batch: int = 512, threads: int = 1):
        import llama_cpp
        from llama_cpp import _internals

        n_batch = max(n_batch, slots)  # every running sequence takes part in every step
        self.llm, self.slots, self.slot_ctx, self.n_batch = llm, slots, slot_ctx, n_batch
        # The tokenizing context's settings (attention kernel, KV types, threads), so numbers match one at a time.
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = slots * slot_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = False  # a KV stream per slot (see the module's docstring)
        params.n_threads = params.n_threads_batch = threads
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        adapter = getattr(llm, "_lora_adapter", None)  # loaded by Llama(lora_path=...): this context applies it too
        if adapter is not None:
            import ctypes

            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            if llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(llm.lora_scale)):
                raise RuntimeError("llama.cpp could not apply the LoRA adapter to the batch context")
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.n_vocab, self.n_embd = llm.n_vocab(), llm.n_embd()
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # tokens in each slot's cells
        self.running: list[Job | None] = [None] * slots
        self.queue: deque[Job] = deque()
        # Statistics: decode calls, the tokens they carried, prompt tokens among them, most sequences in one call,
        # sequences moved to close a gap.
        self.steps = self.batch_tokens = self.prompt_tokens = self.peak_sequences = self.moves = 0
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llama-batch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def generate(self, tokens: list[int], config: GenConfig, prefix: str = "",
                 on_text: Callable[[str], None] | None = None, guard: QuoteGuard | None = None) -> Future:
        """A Future of the ``Generation`` continuing ``tokens``. ``on_text`` (called on the engine's thread; keep
        it quick) gets the answer piece by piece, ``prefix`` first; if it raises, the job ends with that error.
        Cancelling the Future stops the job at the next step."""
        job = Job(tokens, Future(), config=config, prefix=prefix, on_text=on_text, guard=guard,
                  rng=np.random.default_rng(config.seed))
        self._check(job, config.max_tokens)
        if on_text and prefix:  # before the job is queued: nothing of its answer can come first
            on_text(prefix)
        return self._submit(job, config.max_tokens)

    def state(self, tokens: list[int], mean_span: tuple[int, int] | None = None, then: Callable | None = None) -> Future:
        """A Future of the final-layer state of the last token (with ``mean_span``, then the span's mean state).

        With ``then``: it is called with the state on the engine's thread (keep it quick) and returns None or
        ``(tokens, config, prefix, on_text, guard)`` of a generation that continues in the same sequence at once, while
        the prompt is still in its cells (an explanation written after the label the state decided); the Future
        is then of ``(state, Future of that Generation or None)``."""
        return self._submit(Job(tokens, Future(), mean_span=mean_span, then=then), 0)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        self._batch.close()
        self._ctx.close()

    @property
    def active(self) -> int:
        return sum(job is not None for job in self.running)

    def _check(self, job: Job, max_tokens: int) -> None:
        if len(job.tokens) + max_tokens > self.slot_ctx:
            raise ValueError(f"prompt of {len(job.tokens)} tokens + {max_tokens} to generate exceeds the "
                             f"context of a sequence ({self.slot_ctx})")
        if not job.tokens:
            raise ValueError("empty prompt")

    def _submit(self, job: Job, max_tokens: int) -> Future:
        self._check(job, max_tokens)
        with self._wake:
            if self._closed:
                raise RuntimeError("the batch engine is closed")
            self.queue.append(job)
            self._wake.notify()
        return job.future

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self.queue and not self.active:
                    self._wake.wait()
                if self._closed:
                    for job in [*self.queue, *filter(None, self.running)]:
                        job.future.cancel() or job.future.set_exception(RuntimeError("the batch engine closed"))
                    return
                waiting = []
                while self.queue and None in self.running:
                    job = self.queue.popleft()
                    (waiting.append if self._better_after_next_step(job) else self._admit)(job)
                self.queue.extendleft(reversed(waiting))
                self._compact()
            try:
                self._step()
            except Exception as e:  # a failed decode fails the jobs it carried, not the engine
                for slot, job in enumerate(self.running):
                    if job is not None:
                        self._forget(slot)
                        _settle(job.future, error=e)

    def _better_after_next_step(self, job: Job) -> bool:
        """Whether a running job still reading its prompt shares a longer prefix with ``job`` than any cache
        holds: then ``job`` waits a step and copies those cells instead of evaluating them again."""
        cached = max(common_prefix(c, job.tokens) for c in self.cached)
        return any(j.prefilling and common_prefix(j.tokens, job.tokens) > cached + SHARE_AT_LEAST
                   for j in self.running if j is not None)

    def _admit(self, job: Job) -> None:
        # The lowest free slot, so that running sequences keep consecutive ids: llama.cpp splits a step over
        # per-sequence streams into runs of consecutive ids, and a run is one matrix product (32 sequences decode
        # at 65 tokens/s in slots 0-31, at 28 in every other slot: benchmarks/decode_batch.py --layouts).
        self._place(job, self.running.index(None))

    def _compact(self) -> None:
        """Move the highest running sequences down into free slots, so the running ones are consecutive (see
        ``_admit``) when jobs end at different times and no new job fills the gaps. A move copies a stream."""
        import llama_cpp

        mem = self._ctx.memory
        while None in self.running:
            low = self.running.index(None)
            high = max((s for s, job in enumerate(self.running) if job is not None), default=-1)
            if high < low:
                return
            job = self.running[high]
            llama_cpp.llama_memory_seq_cp(mem, high, low, -1, -1)
            llama_cpp.llama_memory_seq_rm(mem, high, -1, -1)
            self.cached[low], self.cached[high] = self.cached[high], []
            self.running[low], self.running[high] = job, None
            job.slot = low
            self.moves += 1

    def _place(self, job: Job, slot: int) -> None:
        """Start ``job`` in the free ``slot``, keeping or copying the longest cached prefix of its prompt."""
        import llama_cpp

        mem = self._ctx.memory
        # Always evaluate the last prompt token (its logits or state are the point); a state job's
        # mean span must be evaluated with states switched on.
        limit = len(job.tokens) - 1
        if job.mean_span:
            limit = min(limit, job.mean_span[0])
        cached = [common_prefix(c, job.tokens) for c in self.cached]
        keep = min(limit, cached[slot])
        llama_cpp.llama_memory_seq_rm(mem, slot, keep, -1)
        donor = max(range(self.slots), key=cached.__getitem__)
        shared = min(limit, cached[donor])
        if shared > keep:  # a longer prefix in another slot: copy its cells instead of evaluating them again
            # Between streams llama.cpp copies whole streams only (at the next decode, before its tokens).
            llama_cpp.llama_memory_seq_cp(mem, donor, slot, -1, -1)
            llama_cpp.llama_memory_seq_rm(mem, slot, shared, -1)
            keep = shared
        self.cached[slot] = job.tokens[:keep]
        job.slot, job.pos = slot, keep
        if job.mean_span:
            job.total = np.zeros(self.n_embd, dtype=np.float64)
        self.running[slot] = job

    def _step(self) -> None:
        import llama_cpp

        for job in self.running:
            if job is not None and job.future.cancelled():  # its caller is gone: free the slot
                self._forget(job.slot, keep_cache=True)
        jobs = [j for j in self.running if j is not None]
        if not jobs:
            return
        generating = [j for j in jobs if not j.prefilling]
        rows: list[tuple[Job, int, int, bool]] = []  # (job, token, position, output)
        for job in generating:  # one token each: the one sampled last
            rows.append((job, job.out[-1], len(self.cached[job.slot]), True))
        # States switched on make every token of the step an output (the vocabulary projection for each), so a
        # step either reads states (with the generating tokens, outputs anyway) or evaluates prompts without them;
        # a job whose prompt has to wait still puts one token in, so the step's sequences stay consecutive (_admit).
        prefilling = [j for j in jobs if j.prefilling]
        states = any(j.pos >= self._first_state(j) for j in prefilling)
        budget = self.n_batch - len(rows) - len(prefilling)  # beyond one token each
        for job in prefilling:
            if states and job.pos < self._first_state(job):
                stop = job.pos + 1
            else:
                stop = len(job.tokens) if states or job.config is not None else self._first_state(job)
            more = max(0, min(budget, stop - job.pos - 1))
            for k in range(job.pos, job.pos + 1 + more):
                rows.append((job, job.tokens[k], k, k == len(job.tokens) - 1 or self._in_span(job, k)))
            budget -= more
        rows.sort(key=lambda row: row[0].slot)  # consecutive ids together (see _admit); stable: positions in order
        b = self._batch.batch
        b.n_tokens = len(rows)
        for i, (job, token, position, output) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, position, 1, job.slot
            b.logits[i] = output or states  # with states on llama.cpp makes every token an output anyway
        ctx = self._ctx.ctx
        llama_cpp.llama_set_embeddings(ctx, states)
        try:
            code = llama_cpp.llama_decode(ctx, b)
        finally:
            if states:
                llama_cpp.llama_set_embeddings(ctx, False)
        if code != 0:
            raise RuntimeError(f"llama_decode failed ({code}) on a batch of {len(rows)} tokens")
        self.steps += 1
        self.batch_tokens += len(rows)
        self.peak_sequences = max(self.peak_sequences, len({job.slot for job, *_ in rows}))
        for i, (job, token, position, output) in enumerate(rows):
            self.cached[job.slot].append(token)
            if job.prefilling:
                job.pos += 1
                self.prompt_tokens += 1
            if job.config is None:
                if self._in_span(job, position):
                    job.total += output_row(llama_cpp.llama_get_embeddings_ith(ctx, i), self.n_embd)
                if position == len(job.tokens) - 1:
                    self._finish_state(job, output_row(llama_cpp.llama_get_embeddings_ith(ctx, i), self.n_embd))
            elif output and not job.prefilling and position == len(self.cached[job.slot]) - 1:
                self._next_token(job, output_row(llama_cpp.llama_get_logits_ith(ctx, i), self.n_vocab))

    # ------------------------------------------------------------------ per job
    @staticmethod
    def _first_state(job: Job) -> int:
        """The first prompt position whose state a job reads (past the prompt for a generation)."""
        if job.config is not None:
            return len(job.tokens)
        return job.mean_span[0] if job.mean_span else len(job.tokens) - 1

    @staticmethod
    def _in_span(job: Job, k: int) -> bool:
        return job.mean_span is not None and job.mean_span[0] <= k < job.mean_span[1]

    def _finish_state(self, job: Job, last: np.ndarray) -> None:
        if job.mean_span:
            start, end = job.mean_span
            last = np.concatenate([last, (job.total / max(1, end - start)).astype(np.float32)])
        slot = job.slot
        self._forget(slot, keep_cache=True)
        if job.then is None:
            _settle(job.future, last)
            return
        try:
            follow = job.then(last)
            if follow is not None:
                tokens, config, prefix, on_text, guard = follow
                follow = Job(tokens, Future(), config=config, prefix=prefix, on_text=on_text, guard=guard,
                             rng=np.random.default_rng(config.seed))
                self._check(follow, config.max_tokens)
                if on_text and prefix:
                    on_text(prefix)
                self._place(follow, slot)  # the slot it just read, before any other job can take it
        except Exception as e:  # noqa: BLE001 - the caller's decision failed: this job fails, not the engine
            _settle(job.future, error=e)
            return
        _settle(job.future, (last, follow.future if follow is not None else None))

    def _next_token(self, job: Job, logits: np.ndarray) -> None:
        import llama_cpp

        config = job.config
        recent = job.out[-REPEAT_WINDOW:]
        if len(recent) < REPEAT_WINDOW:  # the window reaches back into the prompt
            recent = job.tokens[len(recent) - REPEAT_WINDOW:] + recent
        if job.guard is not None:
            apply_guard(logits, job.guard.mask(job.prefix.encode("utf-8") + job.raw))
        token = _sample(logits, config, job.rng, recent)
        reason = ""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            reason = "stop"
        else:
            job.out.append(token)
            job.raw += self.llm.detokenize([token])
        raw = job.raw
        text = raw.decode("utf-8", errors="ignore")
        cut = min((i for i in (text.find(s) for s in config.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        elif not reason and len(job.out) >= config.max_tokens and not _torn_utf8(raw):
            reason = "length"  # as llama-cpp-python: a character split over tokens is completed first
        if job.on_text:
            # Text that may still turn out to begin a stop string waits until it does not.
            shown = len(text) if reason else len(text) - held_back(text, config.stop)
            if shown > job.sent:
                try:
                    job.on_text(text[job.sent:shown])
                except Exception as e:  # noqa: BLE001 - the watcher failed (a client gone): end this job only
                    self._forget(job.slot, keep_cache=True)
                    _settle(job.future, error=e)
                    return
                job.sent = shown
        if not reason:
            return
        self._forget(job.slot, keep_cache=True)
        _settle(job.future, Generation(
            text=job.prefix + text, prompt_tokens=len(job.tokens), completion_tokens=len(job.out),
            latency_ms=(time.perf_counter() - job.started) * 1000, finish_reason=reason, prefilled=True))

    def _forget(self, slot: int, keep_cache: bool = False) -> None:
        """Free a slot; its cells stay for a later job sharing them, unless the job failed."""
        import llama_cpp

        self.running[slot] = None
        if not keep_cache:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, -1, -1)
            self.cached[slot] = []


def _sample(logits: np.ndarray, config: GenConfig, rng: np.random.Generator, recent: list[int]) -> int:
    """The next token: greedy at temperature 0, else llama.cpp's order (penalty, top-k, top-p, temperature)."""
    if config.repeat_penalty != 1.0 and recent:
        ids = np.unique(recent)
        seen = logits[ids]
        logits[ids] = np.where(seen > 0, seen / config.repeat_penalty, seen * config.repeat_penalty)
    if config.temperature <= 0:
        return int(np.argmax(logits))
    order = np.argsort(-logits)
    if config.top_k:
        order = order[:config.top_k]
    z = logits[order] / config.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if config.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), config.top_p)) + 1
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(rng.choice(order, p=p))


def _settle(future: Future, result=None, error: Exception | None = None) -> None:
    """Give a job's caller its result, unless the caller cancelled it."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def held_back(text, stops) -> int:
    """Characters (or bytes) at the end of ``text`` that begin some stop string and may yet complete it."""
    return max((n for s in stops if s for n in range(1, min(len(s) - 1, len(text)) + 1) if text.endswith(s[:n])),
               default=0)


def output_row(pointer, size: int) -> np.ndarray:
    """A copy of one batch row's logits or hidden state, as llama.cpp returned it."""
    if not pointer:
        raise RuntimeError("llama.cpp returned no output for a batch row")
    return np.ctypeslib.as_array(pointer, shape=(size,)).astype(np.float32, copy=True)


def _torn_utf8(raw: bytes) -> bool:
    """Whether ``raw`` ends inside a multi-byte UTF-8 character."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 != 0x80:  # the lead byte: does the character need more than it has?
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return need > back
    return False


def common_prefix(a, b) -> int:
    """How many leading tokens two token lists share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
