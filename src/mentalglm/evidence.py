"""Checking an explanation's quoted evidence against the post it explains.

Explanations are asked to quote the post's own words (“…”). A quote that is not in the post is a
made-up piece of evidence, the failure that matters most in an explanation a person will trust;
``check_evidence`` finds every quoted span and tests it against the post.

``repair_quotes`` runs first, after generation: a quote that is a near miss of the post's words (character
similarity ``SequenceMatcher.ratio`` of at least ``REPAIR_SIMILARITY`` to some span of the post, found by a window
search over spans of about the quote's length) is replaced by the post's closest span, and named, so the
explanation cites what the post says. A quote with no span that close stays as written and fails the check:
the check is never dropped, it only runs on the repaired text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
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


# A near miss: at least this similar (difflib ratio, 2 * matched / total characters, after _norm) to a span of
# the post; quotes shorter than REPAIR_MIN_CHARS (after _norm) are never repaired: two or three characters are
# too few to tell a slip of the pen from another phrase.
REPAIR_SIMILARITY = 0.6
REPAIR_MIN_CHARS = 4


_CLAUSE_END = re.compile(r"[。！？!?；;，,\n…~～]+|\.{3,}|\s{2,}")


def clauses(post: str, low: int = REPAIR_MIN_CHARS, high: int = 40) -> list[str]:
    """The post's clauses (split at sentence and clause punctuation), exactly as written, of ``low`` to ``high``
    characters (``low`` counted as ``_norm`` counts them): the spans an explanation may be started with."""
    out = []
    for part in _CLAUSE_END.split(post):
        part = part.strip().strip("“”\"'「」『』()（）")
        if len(_norm(part)) >= low and len(part) <= high and part not in out:
            out.append(part)
    return out


def quotes_in(explanation: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in _QUOTES.finditer(explanation)]


def without_quotes(explanation: str) -> str:
    """``explanation`` with every quote (marks included) removed: its argument without the evidence it cites."""
    return _QUOTES.sub("", explanation)


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


@dataclass(frozen=True)
class Repair:
    text: str  # the explanation with every near-miss quote replaced by the post's closest span
    repaired: tuple[tuple[str, str], ...]  # (the quote as written, the post's span that replaced it)


def _normalized_with_positions(post: str) -> tuple[str, list[int]]:
    """``_norm(post)`` character by character, and for each of its characters the index of the post's character
    it came from (so a span found in the normalized text maps back to the post's own words)."""
    chars, where = [], []
    for i, ch in enumerate(post):
        for c in _norm(ch):
            chars.append(c)
            where.append(i)
    return "".join(chars), where


def closest_span(quote: str, post: str) -> tuple[float, str]:
    """(similarity, the post's span most similar to ``quote``), compared after ``_norm``; spans of 75-125% of the
    quote's length are tried at every position (``quick_ratio`` skips the hopeless ones)."""
    target = _norm(quote)
    haystack, where = _normalized_with_positions(post)
    if not target or not haystack:
        return 0.0, ""
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(target)
    best, span = 0.0, (0, 0)
    n = len(target)
    for length in range(max(1, n - n // 4), min(len(haystack), n + n // 4) + 1):
        for start in range(len(haystack) - length + 1):
            matcher.set_seq1(haystack[start:start + length])
            if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
                continue
            ratio = matcher.ratio()
            if ratio > best:
                best, span = ratio, (start, start + length)
    if best == 0.0:
        return 0.0, ""
    return best, post[where[span[0]]:where[span[1] - 1] + 1]


def repair_quotes(explanation: str, post: str, ignore: Iterable[str] = (),
                  similarity: float = REPAIR_SIMILARITY) -> Repair:
    """``explanation`` with each quote that is not in ``post`` but close to a span of it (see the module doc)
    replaced by that span, inside the same quote marks. Elided quotes ("A……B"), label names (``ignore``) and
    quotes under ``REPAIR_MIN_CHARS`` characters are left as written."""
    haystack = _norm(post)
    skip = {_norm(s) for s in ignore}
    parts, repaired, last = [], [], 0
    for m in _QUOTES.finditer(explanation):
        group = next(i for i, g in enumerate(m.groups(), start=1) if g is not None)
        quote = m.group(group)
        target = _norm(quote)
        if (target in skip or len(target) < REPAIR_MIN_CHARS or target in haystack
                or _ELLIPSIS.search(quote)):
            continue
        ratio, span = closest_span(quote, post)
        if ratio < similarity or not _norm(span):
            continue
        parts += [explanation[last:m.start(group)], span]
        last = m.end(group)
        repaired.append((quote, span))
    parts.append(explanation[last:])
    return Repair("".join(parts), tuple(repaired))
