"""llama.cpp backend (llama-cpp-python): the offline default on a CPU.

Prompts are rendered with the GGUF's own chat template and sent as raw completions, so the
answer prefix is prefilled. llama-cpp-python keeps the KV cache of the previous prompt and
only evaluates the tokens after the longest common prefix: callers that send prompts which
share their instruction part (same task, post last) pay for that part once.

``prompt_state`` reads the hidden state of the file's last block (normalised) at the end of a prompt (what label
heads score; a copy cut after a middle block, ``truncate.py``, gives that block's) and leaves the prompt in that
cache, so an explanation generated next continues it without evaluating it again.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import os
import queue
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .base import Backend, GenConfig, Generation, ModelUnavailable, Piece, Request
from .chat_template import render_chat
from .llamacpp_batch import common_prefix, held_back, output_row
from .machine import cores


class LlamaCppBackend(Backend):
    hidden_states = True  # prompt_state below: label heads can score this model

    def __init__(self, model_path: str | os.PathLike, name: str | None = None, lora_path: str | None = None,
                 n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512, seed: int = 0,
                 verbose: bool = False, parallel: int = 1):
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - the package is a hard dependency
            raise ModelUnavailable(f"llama-cpp-python is not installed ({e}); pip install llama-cpp-python") from e
        path = Path(model_path)
        if not path.exists():
            raise ModelUnavailable(f"GGUF file {path} not found")
        if lora_path is not None:
            lora_path = str(_gguf_adapter(lora_path))
        threads = n_threads or cores()  # llama-cpp-python's own default is 1 thread here
        # With parallel sequences the engine's context does all the work; this one only tokenizes.
        from llama_cpp._utils import suppress_stdout_stderr

        # llama.cpp reports each LoRA tensor it cannot repack (harmless) on stderr, past its own log level.
        with suppress_stdout_stderr(disable=verbose or lora_path is None):
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx if parallel <= 1 else 64, n_threads=threads,
                             n_threads_batch=threads, n_batch=n_batch if parallel <= 1 else 64, seed=seed,
                             lora_path=lora_path, verbose=verbose)
        self.name = name or path.name
        self.path = path
        self.context_length = n_ctx if parallel > 1 else self.llm.n_ctx()
        self.engine = None
        self._token_table = None  # llm/quotes.py, made when a request first constrains its quotes
        if parallel > 1:
            from .llamacpp_batch import BatchEngine

            self.engine = BatchEngine(self.llm, parallel, n_ctx, n_batch, threads)
            self.batch_size = parallel
            self.thread_safe = True  # the engine's loop serialises the model; callers only queue jobs
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        self._bos = self._token_text(self.llm.token_bos())
        self._eos = self._token_text(self.llm.token_eos())

    def _token_text(self, token_id: int) -> str:
        if token_id is None or token_id < 0:
            return ""
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore")

    def render(self, request: Request) -> str:
        return render_chat(self.template, request.messages, request.answer_prefix, self._bos, self._eos)

    def _quote_guard(self, request: Request):
        """The guard keeping the answer's quotes inside ``request.quote_source`` (None: unconstrained)."""
        if not request.quote_source:
            return None
        from .quotes import QuoteGuard, TokenTable

        if self._token_table is None:  # the vocabulary's bytes, read once (about a second for 150,000 tokens)
            self._token_table = TokenTable.of_llama(self.llm)
        return QuoteGuard(request.quote_source, self._token_table)

    def _quote_processor(self, request: Request):
        """``_quote_guard`` as a llama-cpp-python logits processor (one request at a time)."""
        guard = self._quote_guard(request)
        if guard is None:
            return None
        from llama_cpp import LogitsProcessorList

        from .quotes import apply

        prefix, prompt = request.answer_prefix.encode("utf-8"), []

        def constrain(input_ids, scores):
            if not prompt:  # the first call sees the prompt alone
                prompt.append(len(input_ids))
            return apply(scores, guard.mask(prefix + self.llm.detokenize(list(input_ids[prompt[0]:]))))

        return LogitsProcessorList([constrain])

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, requests: Sequence[Request], config: GenConfig) -> list[Generation]:
        if self.engine is not None:  # all at once: they decode together
            return self._engine_generate(requests, config)
        out = []
        for request in requests:
            prompt = self.render(request)
            start = time.perf_counter()
            result = self.llm.create_completion(
                prompt, max_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p,
                top_k=config.top_k or 0, stop=list(config.stop) or None, repeat_penalty=config.repeat_penalty,
                seed=config.seed, logits_processor=self._quote_processor(request))
            choice = result["choices"][0]
            usage = result.get("usage", {})
            out.append(Generation(
                text=request.answer_prefix + choice["text"], prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                latency_ms=(time.perf_counter() - start) * 1000, finish_reason=choice.get("finish_reason") or "",
                prefilled=True))
        return out

    def stream(self, request: Request, config: GenConfig) -> Iterator[Piece]:
        """``generate`` for one request, token by token, ending exactly where ``generate`` ends (same text, usage
        and finish reason): llama-cpp-python's streaming completion with the same arguments drives the decoding,
        so sampling, stops and max_tokens are its own. Its chunk texts are not used: they are decoded token by
        token and drop characters whose UTF-8 bytes span two tokens. The pieces are decoded here from the tokens
        it sampled instead, holding back text that could still become a stop string. The answer prefix is the
        first piece. One stream at a time, and nothing else on this backend until it is exhausted or closed.

        With ``--parallel`` above 1 the batch engine decodes it beside the other sequences and hands each new
        piece over as it is written; closing the iterator cancels the sequence."""
        if self.engine is not None:
            pieces: queue.SimpleQueue = queue.SimpleQueue()
            future = self.engine.generate(self._tokens(self.render(request)), config, request.answer_prefix,
                                          on_text=pieces.put, guard=self._quote_guard(request))
            future.add_done_callback(lambda _: pieces.put(None))  # after the last piece
            try:
                while (piece := pieces.get()) is not None:
                    yield Piece(piece)
                yield Piece("", future.result())
            finally:
                future.cancel()
            return
        prompt = self.render(request)
        start = time.perf_counter()
        sampled: dict = {"prompt": [], "tokens": []}
        generate = self.llm.generate

        def recording(prompt_tokens, *args, **kwargs):  # create_completion samples through Llama.generate
            sampled["prompt"] = list(prompt_tokens)
            for token in generate(prompt_tokens, *args, **kwargs):
                sampled["tokens"].append(token)
                yield token

        stops = [s.encode("utf-8") for s in config.stop if s]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")  # as generate's text: bad bytes dropped
        parts, sent, finish = [request.answer_prefix], 0, ""
        if request.answer_prefix:
            yield Piece(request.answer_prefix)
        self.llm.generate = recording
        try:
            for event in self.llm.create_completion(
                    prompt, max_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p,
                    top_k=config.top_k or 0, stop=list(config.stop) or None, repeat_penalty=config.repeat_penalty,
                    seed=config.seed, stream=True, logits_processor=self._quote_processor(request)):
                finish = event["choices"][0].get("finish_reason") or finish
                answer, tokens = self._streamed_answer(sampled, stops, final=bool(finish))
                piece = decoder.decode(answer[sent:], final=bool(finish))
                sent = len(answer)
                if piece:
                    parts.append(piece)
                    yield Piece(piece)
        finally:
            del self.llm.generate  # the class's method again
        yield Piece("", Generation(
            text="".join(parts), prompt_tokens=len(sampled["prompt"]), completion_tokens=len(tokens),
            latency_ms=(time.perf_counter() - start) * 1000, finish_reason=finish, prefilled=True))

    def _streamed_answer(self, sampled: dict, stops: list[bytes], final: bool) -> tuple[bytes, list[int]]:
        """(answer bytes safe to show, completion tokens) from the tokens sampled so far, cut as create_completion
        cuts its text: an end-of-generation token is not part of it, and it ends before the first stop string."""
        import llama_cpp

        tokens = sampled["tokens"]
        if tokens and llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, tokens[-1]):
            tokens = tokens[:-1]
        data = self.llm.detokenize(tokens, prev_tokens=sampled["prompt"])
        found = [s for s in stops if s in data]
        if final:
            return (data[:data.index(found[0])] if found else data), tokens
        if found:
            return data[:min(data.index(s) for s in found)], tokens
        return data[:len(data) - held_back(data, stops)], tokens

    def generate_watched(self, requests: Sequence[Request], config: GenConfig,
                         on_text: Callable[[int, str], None] | None) -> list[Generation]:
        if self.engine is None:
            return super().generate_watched(requests, config, on_text)
        return self._engine_generate(requests, config, on_text)

    def _engine_generate(self, requests: Sequence[Request], config: GenConfig,
                         on_text: Callable[[int, str], None] | None = None) -> list[Generation]:
        futures = [self.engine.generate(self._tokens(self.render(r)), config, r.answer_prefix,
                                        on_text=functools.partial(on_text, i) if on_text else None,
                                        guard=self._quote_guard(r))
                   for i, r in enumerate(requests)]
        with _cancelled_on_failure(futures):
            return [f.result() for f in futures]

    def states_then_generate(self, requests, mean_of, follow_up, config, on_text=None):
        if self.engine is None:
            return super().states_then_generate(requests, mean_of, follow_up, config, on_text)

        def then(i: int):
            def next_job(state):
                request = follow_up(i, state)
                if request is None:
                    return None
                return (self._tokens(self.render(request)), config, request.answer_prefix,
                        functools.partial(on_text, i) if on_text else None, self._quote_guard(request))
            return next_job

        futures = [self.engine.state(*self._state_prompt(r, m), then=then(i))
                   for i, (r, m) in enumerate(zip(requests, mean_of))]
        gens, alive = [], list(futures)
        with _cancelled_on_failure(alive):
            for future in futures:
                _, follow = future.result()  # the state went to follow_up
                if follow is not None:
                    alive.append(follow)  # cancelled too if a later one fails
                gens.append(follow.result() if follow is not None else None)
        return gens

    def prompt_state(self, request: Request, mean_of: str | None = None) -> np.ndarray:
        """The final-layer hidden state of the last token of the rendered prompt (float32, n_embd).

        With ``mean_of`` (a text inside the prompt, the post), the mean of the states of that text's
        tokens follows it (2 x n_embd): mean pooling keeps what a single position forgets, which helps
        rare labels. Only the tokens whose state is read are decoded with embeddings switched on; the
        rest of the prompt is evaluated as for generation (or reused from the cache), so reading
        states costs about one prompt evaluation."""
        return self.prompt_states([request], [mean_of])[0]

    def prompt_states(self, requests: Sequence[Request], mean_of: Sequence[str | None],
                      mean_only: bool = False) -> list[np.ndarray]:
        """``prompt_state`` of several prompts (read together where sequences decode in parallel). With
        ``mean_only``, the mean state of each ``mean_of`` text alone, the prompt read no further than its end."""
        prompts = [self._state_prompt(r, m) for r, m in zip(requests, mean_of)]
        if mean_only:
            prompts = [(tokens[:span[1]], span) for tokens, span in prompts]
        states = self._states(prompts)
        return [s[len(s) // 2:] for s in states] if mean_only else states

    def text_states(self, texts: Sequence[str], max_tokens: int | None = None) -> list[np.ndarray]:
        """The last token's state of each text read alone (no template, no question; at most its first
        ``max_tokens`` tokens): what a classifier adapter was trained to read (train/classifier.py)."""
        prompts = []
        for text in texts:
            tokens = self._tokens(text)[:max_tokens]
            if not tokens:
                raise ValueError("an empty text has no state")
            if len(tokens) > self.context_length:
                raise ValueError(f"text of {len(tokens)} tokens exceeds the context ({self.context_length})")
            prompts.append((tokens, None))
        return self._states(prompts)

    def _states(self, prompts: list[tuple[list[int], tuple[int, int] | None]]) -> list[np.ndarray]:
        if self.engine is not None:
            futures = [self.engine.state(tokens, span) for tokens, span in prompts]
            with _cancelled_on_failure(futures):
                return [f.result() for f in futures]
        return [self._read_state(tokens, span) for tokens, span in prompts]

    def _state_prompt(self, request: Request, mean_of: str | None) -> tuple[list[int], tuple[int, int] | None]:
        """The prompt's tokens, and the span [start, end) of ``mean_of``'s tokens in it (None without it)."""
        rendered = self.render(request)
        tokens = self._tokens(rendered)
        if len(tokens) > self.context_length:
            raise ValueError(f"prompt of {len(tokens)} tokens exceeds the context ({self.context_length})")
        if not mean_of:
            return tokens, None
        at = rendered.rfind(mean_of)
        if at < 0:
            raise ValueError("mean_of is not part of the rendered prompt")
        start = common_prefix(tokens, self._tokens(rendered[:at]))
        return tokens, (start, max(start + 1, common_prefix(tokens, self._tokens(rendered[:at + len(mean_of)]))))

    def _read_state(self, tokens: list[int], span: tuple[int, int] | None) -> np.ndarray:
        """One sequence: tokens before the span (or the last token) evaluated as for generation (or reused from the
        cache), the rest with states switched on."""
        import llama_cpp

        llm = self.llm
        start, end = span or (len(tokens) - 1, len(tokens) - 1)
        same = min(common_prefix(llm.input_ids[:llm.n_tokens], tokens), start)
        llm.n_tokens = same  # eval() drops the cache beyond n_tokens
        if start > same:
            llm.eval(tokens[same:start])
        ctx = llm._ctx.ctx
        llama_cpp.llama_set_embeddings(ctx, True)
        try:
            total, last = np.zeros(llm.n_embd(), dtype=np.float64), None
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            for i in range(start, len(tokens), llm.n_batch):
                part = tokens[i:min(len(tokens), i + llm.n_batch)]
                batch = llm._batch
                # Every token decoded with embeddings on is an output (llama.cpp insists, with a warning).
                batch.set_batch(batch=part, n_past=i, logits_all=True)
                llm._ctx.decode(batch)
                llm.input_ids[i:i + len(part)] = part
                llm.n_tokens = i + len(part)
                for j in range(len(part)):
                    if i + j < end:
                        total += output_row(llama_cpp.llama_get_embeddings_ith(ctx, j), llm.n_embd())
                last = output_row(llama_cpp.llama_get_embeddings_ith(ctx, len(part) - 1), llm.n_embd())
            if span is None:
                return last
            return np.concatenate([last, (total / (end - start)).astype(np.float32)])
        finally:
            llama_cpp.llama_set_embeddings(ctx, False)

    def _tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.llm.close()


def _gguf_adapter(adapter: str) -> Path:
    """A GGUF LoRA file, or a training run / adapter folder that holds one."""
    path = Path(adapter)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf")) + sorted(path.glob("export/*.gguf")) + sorted(path.glob("**/*.gguf"))
        if found:
            return found[0]
        raise ModelUnavailable(f"adapter folder {path} holds no GGUF adapter; llama.cpp needs one "
                               "(convert a PEFT adapter with `mentalglm train export-gguf`, or use a transformers model)")
    raise ModelUnavailable(f"adapter {path} not found")


@contextlib.contextmanager
def _cancelled_on_failure(futures: list):
    """If collecting the answers fails (one request's error, a caller's decision), the engine stops the other
    sequences of the call at its next step instead of decoding them for nobody."""
    try:
        yield
    except BaseException:
        for future in futures:
            future.cancel()
        raise
