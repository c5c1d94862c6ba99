"""The declarative task spec: one object per task drives data, prompts, parsing and metrics.

A spec knows its labels (Chinese and English names, definitions, synonyms), the question
asked about a post, how an answer is written (label sentence + 理由/Reasoning + explanation)
and how a model's free text is read back (see ``parser.py``). Adding a task means adding
one ``TaskSpec`` to the registry, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Label:
    """One class of a task.

    ``name`` is the canonical value stored in records and predictions (the Chinese name for
    C-IMHI tasks, the English one for English IMHI). ``sentence`` is the exact label sentence
    for single-label tasks whose answers use a fixed sentence per label (English IMHI).
    ``synonyms`` are extra surface forms the parser accepts; ``code`` is a short id
    (cognitive pathway children: A1..D2); ``parent`` groups hierarchical labels.
    """

    name: str
    zh: str
    en: str
    definition: str = ""
    synonyms: tuple[str, ...] = ()
    sentence: str | None = None
    code: str | None = None
    parent: str | None = None

    def surface_forms(self) -> list[str]:
        forms = [self.name, self.zh, self.en, *self.synonyms]
        if self.code:
            forms.append(self.code)
        seen: list[str] = []
        for f in forms:
            if f and f not in seen:
                seen.append(f)
        return seen


@dataclass(frozen=True)
class TaskSpec:
    """Everything the system needs to know about one analysis task."""

    name: str
    language: str  # "zh" or "en"
    title: str
    title_en: str
    labels: tuple[Label, ...]
    question: str
    multi_label: bool = False
    # Label sentence for a set of label names, e.g. "这篇帖子体现了非此即彼、以偏概全的认知歪曲。"
    sentence_template: str = ""
    joiner: str = "、"
    # A regex whose group 1 names a label directly (e.g. the level number "6级").
    label_pattern: str | None = None
    source: str = ""
    metrics: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1")
    # Labels that mean "high risk" for the safety flag.
    high_risk: tuple[str, ...] = ()
    # Group of a multi-task family (English IMHI tasks share their prompt style).
    family: str = "c-imhi"
    description: str = ""
    hierarchy: tuple[str, ...] = field(default=())  # parent names, in order (cognitive pathway)
    # Multi-label tasks where "no label" is a valid answer say so with this sentence.
    empty_sentence: str | None = None
    # The labels are the ordered levels of one scale, named by their numbers (SOS-4K's 0-10): a prediction one
    # level off is scored as near (within-one accuracy).
    ordinal: bool = False

    def __post_init__(self) -> None:
        if self.ordinal and (self.multi_label or not all(lab.name.isdigit() for lab in self.labels)):
            raise ValueError(f"task {self.name!r}: an ordinal task is single-label with labels named by numbers")

    # ------------------------------------------------------------------ labels
    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def label(self, name: str) -> Label:
        for lab in self.labels:
            if lab.name == name:
                return lab
        raise KeyError(f"task {self.name!r} has no label {name!r}; labels: {', '.join(self.label_names)}")

    def normalize_labels(self, names: Sequence[str]) -> tuple[str, ...]:
        """Order label names as the spec lists them and drop duplicates."""
        wanted = set(names)
        unknown = wanted - set(self.label_names)
        if unknown:
            raise KeyError(f"task {self.name!r} has no label(s) {sorted(unknown)}; labels: {', '.join(self.label_names)}")
        return tuple(n for n in self.label_names if n in wanted)

    # ----------------------------------------------------------------- answers
    @property
    def reason_marker(self) -> str:
        return "理由：" if self.language == "zh" else "Reasoning:"

    def label_sentence(self, names: Sequence[str]) -> str:
        names = self.normalize_labels(names)
        if not names and self.empty_sentence:
            return self.empty_sentence
        if not names:
            raise ValueError(f"task {self.name!r}: an answer needs at least one label")
        if not self.multi_label and len(names) != 1:
            raise ValueError(f"task {self.name!r} is single-label, got {list(names)}")
        if not self.multi_label and self.label(names[0]).sentence:
            return self.label(names[0]).sentence  # fixed English IMHI sentence
        shown = self.joiner.join(self._display(n) for n in names)
        return self.sentence_template.format(labels=shown)

    def _display(self, name: str) -> str:
        lab = self.label(name)
        return lab.zh if self.language == "zh" else lab.en

    def render_answer(self, names: Sequence[str], explanation: str) -> str:
        """The answer format of C-IMHI / IMHI: label sentence, then 理由/Reasoning, then why."""
        if self.language == "zh":
            return f"{self.label_sentence(names)}理由：{explanation.strip()}"
        return f"{self.label_sentence(names)} Reasoning: {explanation.strip()}"

    # ----------------------------------------------------------------- prompts
    def instruction_prompt(self, text: str, question: str | None = None) -> str:
        """The C-IMHI / IMHI instruction style that fine-tuned models were trained on."""
        q = question or self.question
        if self.language == "zh":
            return f"考虑以下这个帖子：“{text}” 问题：{q}"
        return f'Consider this post: "{text}" Question: {q}'

    def label_guide(self) -> str:
        """Label names with short definitions, one per line, for prompts and docs."""
        lines = []
        for lab in self.labels:
            head = lab.zh if self.language == "zh" else lab.en
            if self.language == "zh" and lab.en and lab.en != lab.zh:
                head = f"{lab.zh}（{lab.en}）"
            lines.append(f"- {head}：{lab.definition}" if lab.definition else f"- {head}")
        return "\n".join(lines)

    def high_risk_in(self, names: Sequence[str]) -> bool:
        return any(n in self.high_risk for n in names)


_SPECS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: TaskSpec, aliases: Sequence[str] = ()) -> TaskSpec:
    if spec.name in _SPECS:
        raise ValueError(f"task {spec.name!r} registered twice")
    _SPECS[spec.name] = spec
    for a in (spec.name, *aliases):
        _ALIASES[a.lower()] = spec.name
    return spec


def get_task(name: str) -> TaskSpec:
    key = _ALIASES.get(name.lower())
    if key is None:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(_SPECS)} (see `mentalglm tasks`)")
    return _SPECS[key]


def all_tasks(family: str | None = None) -> list[TaskSpec]:
    return [s for s in _SPECS.values() if family is None or s.family == family]


def split_answer(text: str) -> tuple[str, str]:
    """Split a model answer into (label part, explanation) at 理由/Reasoning or the first sentence."""
    m = re.search(r"(理由|原因|解释|分析|Reasoning|Explanation|Reason)\s*[：:]", text, flags=re.I)
    if m:
        return text[: m.start()].strip(), text[m.end():].strip()
    m = re.search(r"[。.!！?？\n]", text)
    if m:
        return text[: m.end()].strip(), text[m.end():].strip()
    return text.strip(), ""

