"""Read a model's free text back into labels, for any task spec.

Order of evidence, strongest first, looked for in the label part of the answer (before
理由/Reasoning, else the first sentence), then in the whole text as a fallback:

1. the spec's own "no label" sentence (multi-label tasks where that is valid);
2. an exact label sentence (English IMHI: "No, the poster does not suffer from depression.");
3. the spec's ``label_pattern`` (e.g. "6级" for the 0-10 scale);
4. a leading "Yes"/"No"-style one-word answer;
5. mentions of label names in Chinese or English or their synonyms; overlapping mentions
   keep the longest, and a mention preceded by a negation in its clause does not count.

Nothing found means ``invalid``, never a default class (MentaLLaMA's parser silently maps
those to class 0; we report an explicit invalid rate instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .spec import TaskSpec, split_answer

OK, FALLBACK, INVALID = "ok", "fallback", "invalid"

_CLAUSE_END = re.compile(r"[，,。.；;！!？?\n：:、]")
_NEG_ZH = re.compile(r"不是|并非|并不|没有|并没有|不存在|不属于|未|不|没|无|非")
# Words that start with a negation character but do not negate what follows.
_NOT_NEG_ZH = re.compile(r"不仅|不但|不只|不断|不少|不过|不停|无论|不管|非常|无法|并且|未来|无比")
_NEG_EN = re.compile(r"\b(?:not|no|never|without|neither|nor|isn't|doesn't|don't|didn't|aren't|wasn't|cannot)\b", re.I)
_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:答案|回答|答|Answer|Response)\s*[：:]\s*", re.I)


@dataclass(frozen=True)
class Parsed:
    labels: tuple[str, ...]
    status: str  # ok | fallback | invalid
    explanation: str
    reason: str = ""

    @property
    def valid(self) -> bool:
        return self.status != INVALID


def _clean(text: str) -> str:
    text = text.replace("**", "").replace("\r", "")
    return _PREFIX.sub("", text.strip())


def _is_ascii(s: str) -> bool:
    return all(ord(c) < 128 for c in s)


@lru_cache(maxsize=None)
def _surface_regex(spec: TaskSpec) -> tuple[re.Pattern, dict[str, str]]:
    """One alternation over every surface form, longest first, mapped back to label names."""
    owner: dict[str, str] = {}
    for lab in spec.labels:
        for form in lab.surface_forms():
            owner.setdefault(form.lower(), lab.name)
    parts = []
    for form in sorted(owner, key=len, reverse=True):
        esc = re.escape(form)
        # ASCII words need word boundaries: "no" must not match inside "not" or "know".
        parts.append(rf"(?<![A-Za-z0-9]){esc}(?![A-Za-z0-9])" if _is_ascii(form) else esc)
    return re.compile("|".join(parts), re.I), owner


def _negated(text: str, start: int, language: str) -> bool:
    clause_start = 0
    for m in _CLAUSE_END.finditer(text, 0, start):
        clause_start = m.end()
    window = text[clause_start:start]
    if language == "zh" or not _is_ascii(window):
        window = _NOT_NEG_ZH.sub("", window[-8:])
        return bool(_NEG_ZH.search(window)) or bool(_NEG_EN.search(window))
    return bool(_NEG_EN.search(" ".join(window.split()[-6:])))


def mentions(spec: TaskSpec, text: str) -> tuple[list[str], list[str]]:
    """(labels mentioned affirmatively, labels only mentioned under negation), in text order."""
    regex, owner = _surface_regex(spec)
    found, negated = [], []
    for m in regex.finditer(text):  # leftmost, longest alternative first: overlaps resolve to the longest
        name = owner[m.group(0).lower()]
        (negated if _negated(text, m.start(), spec.language) else found).append(name)
    found = list(dict.fromkeys(found))
    negated = [n for n in dict.fromkeys(negated) if n not in found]
    return found, negated


@lru_cache(maxsize=None)
def _sentences(spec: TaskSpec) -> list[tuple[str, str]]:
    if spec.multi_label:
        return []
    pairs = [(spec.label_sentence([lab.name]).lower(), lab.name) for lab in spec.labels]
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


def _from_pattern(spec: TaskSpec, text: str) -> list[str]:
    if not spec.label_pattern:
        return []
    names = []
    for m in re.finditer(spec.label_pattern, text, flags=re.I):
        value = next(g for g in m.groups() if g is not None)
        if value in spec.label_names and not _negated(text, m.start(), spec.language):
            names.append(value)
    return list(dict.fromkeys(names))


def _leading_word(spec: TaskSpec, text: str) -> list[str]:
    m = re.match(r"^\W*([A-Za-z]+)\b", text)
    if not m:
        return []
    word = m.group(1).lower()
    return [lab.name for lab in spec.labels if lab.en.lower() == word or lab.name.lower() == word][:1]


def _labels_in(spec: TaskSpec, text: str) -> tuple[list[str], list[str]]:
    low = text.lower()
    for sentence, name in _sentences(spec):
        if sentence in low:
            return [name], []
    for finder in (_from_pattern, _leading_word):
        names = finder(spec, text)
        if names:
            return names, []
    return mentions(spec, text)


def parse_answer(spec: TaskSpec, raw: str) -> Parsed:
    text = _clean(raw or "")
    head, explanation = split_answer(text)
    if not text:
        return Parsed((), INVALID, "", "empty answer")
    for scope, status in ((head, OK), (text, FALLBACK)):
        if spec.empty_sentence and spec.empty_sentence in scope:
            return Parsed((), status, explanation)
        names, negated = _labels_in(spec, scope)
        if names:
            if not spec.multi_label:
                names = names[:1]
            return Parsed(spec.normalize_labels(names), status, explanation)
    why = f"no label of task {spec.name!r} found"
    if negated:
        why += f" (only negated mentions: {', '.join(negated)})"
    return Parsed((), INVALID, explanation, why)
