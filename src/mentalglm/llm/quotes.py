"""Quotes that cannot be made up: while a generation has a quote open (“…), only tokens that continue a span of
the source text (the post), or close the quote, may be sampled.

An explanation's evidence is its quotes of the post (``mentalglm.evidence``); a model left to itself sometimes
"quotes" words the post never said. Repairing near misses afterwards catches slips of the pen, not inventions;
constraining the decoder removes the failure: every quote it opens ends as the post's own bytes (the check still
runs on the result). Matching is on UTF-8 bytes, so tokens that carry part of a character work as any other.
Outside a quote nothing is constrained, except tokens that open a quote and already start it with words the
post does not have.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

OPEN, CLOSE = "“".encode(), "”".encode()
LOOKAHEAD = 48  # bytes of the source after a match that a token may cover (tokens are shorter)


class TokenTable:
    """Each token's bytes, indexed for the guard: by exact bytes, and the tokens that hold a quote mark."""

    def __init__(self, pieces: Sequence[bytes]):
        self.size = len(pieces)
        self.by_bytes: dict[bytes, list[int]] = {}
        self.marked: list[tuple[int, bytes]] = []  # tokens holding a quote mark
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            if OPEN in piece or CLOSE in piece:
                self.marked.append((i, piece))
            else:
                self.by_bytes.setdefault(piece, []).append(i)
        self.longest = max((len(p) for p in self.by_bytes), default=1)

    @classmethod
    def of_llama(cls, llm) -> "TokenTable":
        """The table of a ``llama_cpp.Llama`` model's vocabulary (special tokens have no bytes)."""
        return cls([llm.detokenize([i]) for i in range(llm.n_vocab())])


class QuoteGuard:
    """The tokens allowed next, given what has been written, for quotes taken from ``source``."""

    def __init__(self, source: str, table: TokenTable):
        self.source, self.table = source.encode("utf-8"), table
        self._outside: np.ndarray | None = None  # the mask outside a quote: the same at every step, made once

    def _outside_mask(self) -> np.ndarray | None:
        if self._outside is None:
            self._outside = np.ones(self.table.size, dtype=bool)
            self._outside[[i for i, piece in self.table.marked if not self._fits_after_open(piece)]] = False
        return None if self._outside.all() else self._outside

    def open_quote(self, written: bytes) -> bytes | None:
        """The bytes of the quote ``written`` ends inside (None: no quote is open)."""
        start = written.rfind(OPEN)
        if start < 0 or CLOSE in written[start:]:
            return None
        return written[start + len(OPEN):]

    def mask(self, written: bytes) -> np.ndarray | None:
        """A boolean array over the vocabulary of the tokens that may come next (None: every token may)."""
        quote = self.open_quote(written)
        if quote is None:  # only tokens that open a quote with words the post does not have are barred
            return self._outside_mask()
        allowed = np.zeros(self.table.size, dtype=bool)
        for rest in self._continuations(quote):
            for k in range(1, min(len(rest), self.table.longest) + 1):
                allowed[self.table.by_bytes.get(rest[:k], [])] = True
        for i, piece in self.table.marked:  # "……”" or "”，": the quote's last bytes, then its close
            head, mark, _ = piece.partition(CLOSE)
            if mark and OPEN not in head and (quote or head) and quote + head in self.source:
                allowed[i] = True
        if not allowed.any():  # nothing continues it (cannot happen for a quote of the source): let it end
            return None
        return allowed

    def _continuations(self, quote: bytes):
        """The source after each place ``quote`` occurs in it (a quote just opened: after each character start)."""
        if not quote:
            for start, byte in enumerate(self.source):
                if byte & 0xC0 != 0x80:
                    yield self.source[start:start + LOOKAHEAD]
            return
        start = self.source.find(quote)
        while start >= 0:
            end = start + len(quote)
            yield self.source[end:end + LOOKAHEAD]
            start = self.source.find(quote, start + 1)

    def _fits_after_open(self, piece: bytes) -> bool:
        """A token with a quote mark, written outside a quote: whatever it starts quoting is in the source."""
        _, mark, after = piece.rpartition(OPEN)
        if not mark:
            return True  # a close mark alone, outside a quote: not a quote at all
        head, closed, _ = after.partition(CLOSE)
        return head in self.source if head or closed else True


def apply(logits: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """``logits`` with every token not ``allowed`` at minus infinity (in place)."""
    if allowed is not None:
        logits[~allowed] = -np.inf
    return logits
