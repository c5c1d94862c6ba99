"""Quality control of built samples: per-sample rules on the explanation, and post de-duplication.

Every rule has a name that shows up in ``qc_report.json`` and the data card, with how often it
failed. A sample that fails any rule is regenerated (see ``builder.py``) and, when it keeps failing,
dropped with the name of the rule it failed last.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Sequence

import numpy as np

from ..safety import contains_pii, redact
from ..tasks import TaskSpec, parse_answer
from ..tasks.parser import mentions
from .records import Example
from .splits import normalize_text

# name -> what it checks (shown in the data card)
RULES = {
    "teacher_error": "the teacher refused the request (a server's content filter after its retries, a post longer "
                     "than a local model's context)",
    "empty": "the teacher returned no explanation",
    "truncated": "the teacher hit its token limit (explanation cut off)",
    "garbled": "replacement characters (U+FFFD) or control characters: broken decoding, not text",
    "parse_mismatch": "the rendered answer does not parse back, with the task's own parser, to exactly the gold labels",
    "not_chinese": "share of CJK characters among letters and digits below the threshold",
    "too_short": "explanation shorter than the minimum length (characters)",
    "too_long": "explanation longer than the maximum length (characters)",
    "copies_post": "the longest passage shared with the post is most of the explanation",
    "contradicts_label": "the explanation names another label of the task as what the post shows, and no gold label",
    "ungrounded": "no stretch of 4+ characters of the post (normalised) in the explanation, for posts of 8+ characters",
    "prompt_leak": "talks about the prompt instead of the post (正确标签, 专家标注, 给定的标签 ...)",
    "invented_quote": "a passage in quotation marks that is neither in the post nor a label name or definition",
    "refusal": "a refusal or an AI disclaimer outside quotes (抱歉，我…, 我无法回答, 作为一个AI, I'm sorry ...)",
    "pii": "a phone number, ID number, e-mail address or @handle (mentalglm.safety.contains_pii)",
    "duplicate_explanation": "the same explanation (normalised) was already accepted for another post of the task",
    "argues_other_label": "with --consistent: the consistency reader (the one `analyze` reports with, "
                          "heads.reader) reads the explanation alone as arguing for another label than the gold one",
}
DEDUP_KINDS = {
    "leak": "the same post (normalised) in two splits: dropped from the later split",
    "duplicate_exact": "the same post (normalised) twice in one split: later copy dropped",
    "duplicate_near": "character 5-gram Jaccard with an earlier post at or above the threshold: dropped",
}

_GARBLED = re.compile(r"[\ufffd\x00-\x08\x0b-\x1f\x7f]")
_PROMPT_LEAK = re.compile(r"正确标签|专家标注|专家的标注|标注的标签|标注为|所给的?标签|给定的?标签|根据(?:题目|提示)")
_CJK_QUOTED = re.compile(r"“[^”]*”|「[^」]*」|『[^』]*』")
_QUOTED = re.compile(r"“[^”]*”|「[^」]*」|『[^』]*』|‘[^’]*’|\"[^\"]*\"")
_REFUSAL = re.compile(
    r"(?:^|[。！!\n])\s*(?:很|非常)?(?:抱歉|对不起)|(?:很|非常)抱歉|(?:抱歉|对不起)[，,]?\s*我|"
    r"我(?:无法|不能|没法|不便)(?:回答|提供|协助|帮助|完成|判断|分析|为)|无法(?:为您|为你)|"
    r"作为(?:一个|一名)?(?:AI|人工智能|语言模型|AI助手|人工智能助手)|"
    r"I'?m sorry|I am sorry|I cannot|I can'?t|As an AI|as a language model", re.I)


def _is_ideograph(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def cjk_share(text: str) -> float:
    """Chinese characters over Chinese characters + other letters and digits (punctuation ignored)."""
    cjk = other = 0
    for ch in text:
        if _is_ideograph(ch):
            cjk += 1
        elif ch.isalnum():
            other += 1
    return cjk / (cjk + other) if cjk + other else 0.0


def copy_ratio(explanation: str, post: str) -> float:
    """Length of the longest passage the explanation shares with the post, over the explanation's length.

    Quoting a few words of the post is what the teacher is asked to do; an explanation that is
    mostly one stretch of the post is a copy.
    """
    if not explanation or not post:
        return 0.0
    m = SequenceMatcher(None, post, explanation, autojunk=False).find_longest_match(0, len(post), 0, len(explanation))
    return m.size / len(explanation)


def named_labels(spec: TaskSpec, text: str) -> list[str]:
    """Labels the text names affirmatively: level patterns ("6级") where the task has them, else label
    names and synonyms outside a negation (the parser's own mention finder)."""
    if spec.label_pattern:  # a bare digit is not a level: only the task's own pattern counts
        found = []
        for m in re.finditer(spec.label_pattern, text, flags=re.I):
            value = next(g for g in m.groups() if g is not None)
            if value in spec.label_names:
                found.append(value)
        return list(dict.fromkeys(found))
    return mentions(spec, text)[0]


def grounding(explanation: str, post: str) -> int:
    """Length of the longest stretch of the post (normalised) that the explanation repeats."""
    a, b = normalize_text(post), normalize_text(explanation)
    if not a or not b:
        return 0
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def _grounded(quote: str, source: str) -> bool:
    """A quote is in the source verbatim, or (longer quotes) three-character-or-longer stretches of it cover
    three quarters of it: a dropped particle or an ellipsis is quoting, a made-up sentence is not."""
    if quote in source:
        return True
    if len(quote) <= 4:
        return False
    blocks = SequenceMatcher(None, source, quote, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks if b.size >= 3) >= 0.75 * len(quote)


def invented_quotes(spec: TaskSpec, text: str, post: str) -> list[str]:
    """Passages in Chinese quotation marks (“…”, 「…」, 『…』) found neither in the post nor in the task's
    label names and definitions. ASCII quotes are skipped: in Chinese text their pairing is unreliable."""
    source = "|".join(normalize_text(t) for t in (
        post, redact(post), spec.label_guide(), " ".join(f for lab in spec.labels for f in lab.surface_forms())))
    out = []
    for m in _CJK_QUOTED.finditer(text):
        quote = normalize_text(m.group(0)[1:-1])
        if len(quote) >= 2 and not _grounded(quote, source):
            out.append(m.group(0))
    return out


def is_refusal(explanation: str) -> bool:
    """A refusal outside quotations: a quoted "我无法入睡" from the post is not one."""
    return bool(_REFUSAL.search(_QUOTED.sub("", explanation)))


@dataclass(frozen=True)
class QCConfig:
    min_chars: int = 15
    max_chars: int = 500  # SOS-4K's own explanations: median 199, 99.5% within 500
    min_cjk_share: float = 0.6
    max_copy_ratio: float = 0.7
    near_duplicate_jaccard: float = 0.85
    shingle: int = 5


def check(spec: TaskSpec, example: Example, explanation: str, output: str, cfg: QCConfig,
          finish_reason: str = "", accepted: set[str] | frozenset = frozenset(),
          consistent: bool | None = None) -> list[str]:
    """The names of every rule this sample fails (empty list: it passes). ``consistent``: whether a consistency
    reader finds the explanation arguing for the gold label (None: not read)."""
    if finish_reason == "error":
        return ["teacher_error"]
    text = explanation.strip()
    if not text:
        return ["empty"]
    failed = []
    if finish_reason == "length":
        failed.append("truncated")
    if _GARBLED.search(text):
        failed.append("garbled")
    parsed = parse_answer(spec, output)
    if parsed.status != "ok" or tuple(parsed.labels) != tuple(example.labels):
        failed.append("parse_mismatch")
    if cjk_share(text) < cfg.min_cjk_share:
        failed.append("not_chinese")
    if len(text) < cfg.min_chars:
        failed.append("too_short")
    if len(text) > cfg.max_chars:
        failed.append("too_long")
    if copy_ratio(text, example.text) > cfg.max_copy_ratio:
        failed.append("copies_post")
    named = named_labels(spec, text)
    if named and not set(named) & set(example.labels):
        failed.append("contradicts_label")
    if len(normalize_text(example.text)) >= 8 and grounding(text, example.text) < 4:
        failed.append("ungrounded")
    if _PROMPT_LEAK.search(text):
        failed.append("prompt_leak")
    if invented_quotes(spec, text, example.text):
        failed.append("invented_quote")
    if is_refusal(text):
        failed.append("refusal")
    if contains_pii(text):
        failed.append("pii")
    if normalize_text(text) in accepted:
        failed.append("duplicate_explanation")
    if consistent is False:
        failed.append("argues_other_label")
    return failed


# ---------------------------------------------------------------------------------------------- posts
def shingles(text: str, n: int = 5) -> set[str]:
    norm = normalize_text(text)
    if len(norm) <= n:
        return {norm}
    return {norm[i:i + n] for i in range(len(norm) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _minhash(sets: Sequence[set[str]], num_perm: int = 64, seed: int = 13) -> np.ndarray:
    """MinHash signatures with multiply-shift hashing of CRC32 shingle ids (deterministic across runs)."""
    rng = np.random.default_rng(seed)
    xor = rng.integers(0, 2 ** 63, num_perm, dtype=np.uint64)
    mul = rng.integers(0, 2 ** 62, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    sigs = np.empty((len(sets), num_perm), dtype=np.uint64)
    with np.errstate(over="ignore"):  # the multiplication is meant to wrap modulo 2**64
        for i, s in enumerate(sets):
            x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in s), dtype=np.uint64, count=len(s))
            sigs[i] = (((x[:, None] ^ xor[None, :]) * mul[None, :]) >> np.uint64(32)).min(axis=0)
    return sigs


def near_duplicate_pairs(texts: Sequence[str], threshold: float = 0.85, n: int = 5,
                         bands: int = 16, rows: int = 4) -> list[tuple[int, int, float]]:
    """(i, j, jaccard) with i < j for texts whose character n-gram Jaccard is >= threshold.

    MinHash with LSH banding proposes candidates (a pair at Jaccard 0.85 is proposed with probability
    > 0.999 with 16 bands of 4), then the exact Jaccard decides, so no false positives.
    """
    sets = [shingles(t, n) for t in texts]
    if len(sets) < 2:
        return []
    sigs = _minhash(sets, bands * rows)
    candidates: set[tuple[int, int]] = set()
    for b in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, row in enumerate(sigs[:, b * rows:(b + 1) * rows]):
            buckets[row.tobytes()].append(i)
        for members in buckets.values():
            if 1 < len(members) <= 500:  # a huge bucket is one short shingle shared by many: verify below anyway
                candidates.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    pairs = []
    for i, j in sorted(candidates):
        score = jaccard(sets[i], sets[j])
        if score >= threshold:
            pairs.append((i, j, score))
    return pairs


@dataclass(frozen=True)
class Removed:
    id: str
    split: str
    kind: str  # leak | duplicate_exact | duplicate_near
    of: str  # id of the post that was kept
    of_split: str
    similarity: float = 1.0


def dedupe(splits: dict[str, list[Example]], cfg: QCConfig = QCConfig()
           ) -> tuple[dict[str, list[Example]], list[Removed]]:
    """Drop later copies of a post: across splits (leaks), within a split (exact), and near duplicates.

    Splits are visited in the given order (train first), so a copy is always removed from the later split.
    """
    flat = [(split, e) for split, examples in splits.items() for e in examples]
    removed: dict[int, Removed] = {}
    first_by_text: dict[str, int] = {}
    for k, (split, e) in enumerate(flat):
        key = normalize_text(e.text)
        if key in first_by_text:
            j = first_by_text[key]
            kind = "leak" if flat[j][0] != split else "duplicate_exact"
            removed[k] = Removed(e.id, split, kind, flat[j][1].id, flat[j][0])
        else:
            first_by_text[key] = k
    rest = [k for k in range(len(flat)) if k not in removed]
    for a, b, score in near_duplicate_pairs([flat[k][1].text for k in rest], cfg.near_duplicate_jaccard, cfg.shingle):
        i, j = rest[a], rest[b]
        if j not in removed:
            removed[j] = Removed(flat[j][1].id, flat[j][0], "duplicate_near", flat[i][1].id, flat[i][0],
                                 round(score, 3))
    kept: dict[str, list[Example]] = {split: [] for split in splits}
    for k, (split, e) in enumerate(flat):
        if k not in removed:
            kept[split].append(e)
    return kept, sorted(removed.values(), key=lambda r: (r.kind, r.split, r.id))
