"""Cognitive-pathway formats (Jiang et al. 2024 schema; the original data were withdrawn).

- span JSONL: ``{"id", "text", "label": [[start, end, code], ...]}``; a post is split into
  sentences and each sentence gets the children whose spans overlap it.
- sentence TSV: ``text<TAB>parent,parent##child,child`` (children by code or Chinese name;
  an empty label field means the sentence has no pathway element).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...tasks.pathway import COGNITIVE_PATHWAY, child_by_name, parents_of
from ..records import DataError, Example
from .io import read_jsonl, read_text

_SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]*")


def sentences_with_offsets(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0)) for m in _SENTENCE.finditer(text) if m.group(0).strip()]


def _child(path, line, name: str) -> str:
    try:
        return child_by_name(name.strip()).name
    except KeyError as e:
        raise DataError(path, line, str(e.args[0])) from None


def load_pathway_spans(path: Path, split: str = "train") -> list[Example]:
    out = []
    for line, obj in read_jsonl(path, ["id", "text", "label"]):
        text = obj["text"]
        spans = []
        for span in obj["label"]:
            if not (isinstance(span, list) and len(span) == 3):
                raise DataError(path, line, f"each label must be [start, end, code], found {span!r}")
            start, end, code = span
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
                raise DataError(path, line, f"span {span!r} outside the text (length {len(text)})")
            spans.append((start, end, _child(path, line, code)))
        for k, (s, e, sentence) in enumerate(sentences_with_offsets(text)):
            codes = COGNITIVE_PATHWAY.normalize_labels([c for a, b, c in spans if a < e and b > s])
            out.append(Example(f"pathway-{obj['id']}-{k}", "cognitive_pathway", sentence.strip(), codes, split,
                               "pathway_spans", meta={"post_id": str(obj["id"]), "parents": parents_of(codes)}))
    return out


def load_pathway_sentences(path: Path, split: str = "train") -> list[Example]:
    out = []
    for line, raw in enumerate(read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        text, sep, label_field = raw.partition("\t")
        if not sep:
            raise DataError(path, line, "expected `text<TAB>parent,parent##child,child`")
        if not text.strip():
            raise DataError(path, line, "empty sentence")
        parents_part, _, children_part = label_field.strip().partition("##")
        codes = [_child(path, line, c) for c in children_part.split(",") if c.strip()]
        declared = {p.strip() for p in parents_part.split(",") if p.strip()}
        unknown = declared - set(COGNITIVE_PATHWAY.hierarchy)
        if unknown:
            raise DataError(path, line, f"unknown parent(s) {sorted(unknown)}; expected {list(COGNITIVE_PATHWAY.hierarchy)}")
        if declared != set(parents_of(codes)):
            raise DataError(path, line, f"parents {sorted(declared)} do not match children {codes}")
        codes = COGNITIVE_PATHWAY.normalize_labels(codes)
        out.append(Example(f"pathway-{Path(path).stem}-{line}", "cognitive_pathway", text.strip(), codes, split,
                           "pathway_sentences", meta={"parents": parents_of(codes)}))
    return out
