"""Checking an explanation's quoted evidence against the post it explains.

Explanations are asked to quote the post's own words (“…”). A quote that is not in the post is a
made-up piece of evidence, the failure that matters most in an explanation a person will trust;
``check_evidence`` finds every quoted span and tests it against the post.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

# “…”, 「…」, 『…』, "…" (the straight quotes a small model sometimes writes).
_QUOTES = re.compile(r"“([^”]{1,200})”|「([^」]{1,200})」|『([^』]{1,200})』|\"([^\"]{1,200})\"")
_ELLIPSIS = re.compile(r"(?:…+|\.{3,}|⋯+)")
_IGNORED = re.compile(r"[\s，,。.！!？?、；;：:~～]+")


def _norm(text: str) -> str:
    """NFKC, lower case, no white space or sentence punctuation: a quote may differ from the post in those."""
    return _IGNORED.sub("", unicodedata.normalize("NFKC", text).lower())


@dataclass(frozen=True)
class Evidence:
    quotes: tuple[str, ...]
    missing: tuple[str, ...]  # quotes not found in the post

    @property
    def ok(self) -> bool | None:
        """True: at least one quote and all found in the post; False: none quoted, or one not in it."""
        return bool(self.quotes) and not self.missing


def quotes_in(explanation: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in _QUOTES.finditer(explanation)]


def check_evidence(explanation: str, post: str, ignore: Iterable[str] = ()) -> Evidence:
    """Every quoted span of ``explanation``, and those not in ``post`` (an elided quote "A……B" needs A and B).

    Quotes equal to one of ``ignore`` (the task's label names: “读心术” names a label, it cites nothing)
    are not evidence and are skipped."""
    haystack = _norm(post)
    skip = {_norm(s) for s in ignore}
    quotes, missing = [], []
    for quote in quotes_in(explanation):
        if _norm(quote) in skip:
            continue
        pieces = [_norm(p) for p in _ELLIPSIS.split(quote)]
        pieces = [p for p in pieces if p]
        if not pieces:
            continue
        quotes.append(quote)
        if not all(p in haystack for p in pieces):
            missing.append(quote)
    return Evidence(tuple(quotes), tuple(missing))
