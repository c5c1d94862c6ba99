"""Loaders for the Chinese corpora in their original formats (see docs/data.md for where to get them)."""

from __future__ import annotations

from pathlib import Path

from ...tasks import get_task
from ...tasks.cimhi import EMOTION_FROM_SOURCE
from ..records import DataError, Example
from .io import nonempty, read_json_array, read_table


def _check(path, line, task: str, labels) -> tuple[str, ...]:
    spec = get_task(task)
    bad = [lab for lab in labels if lab not in spec.label_names]
    if bad:
        raise DataError(path, line, f"label(s) {bad} outside the label set of {task}: {spec.label_names}")
    if not labels and not spec.empty_sentence:
        raise DataError(path, line, f"no label set (task {task} needs at least one)")
    return spec.normalize_labels(labels)


def load_socialcd3k(path: Path, split: str = "train") -> list[Example]:
    """SocialCD-3K TSV: 12 label columns of 0/1, then 内容 (the post)."""
    names = get_task("cognitive_distortion").label_names
    out = []
    for line, row in read_table(path, names + ["内容"]):
        bad = {c: row[c] for c in names if row[c].strip() not in ("0", "1")}
        if bad:
            raise DataError(path, line, f"label columns must be 0 or 1, found {bad}")
        labels = [c for c in names if row[c].strip() == "1"]
        out.append(Example(f"socialcd3k-{split}-{line}", "cognitive_distortion", nonempty(path, line, row["内容"]),
                           _check(path, line, "cognitive_distortion", labels), split, "socialcd3k"))
    return out


def load_sos_hl_1k(path: Path, split: str = "train") -> list[Example]:
    """SOS-HL-1K TSV: id, label (0 = 低自杀风险, 1 = 高自杀风险), comment."""
    names = get_task("suicide_risk").label_names
    out = []
    for line, row in read_table(path, ["id", "label", "comment"]):
        raw = row["label"].strip()
        if raw not in ("0", "1"):
            raise DataError(path, line, f"label must be 0 (low) or 1 (high), found {raw!r}")
        out.append(Example(f"sos_hl_1k-{split}-{row['id'].strip()}", "suicide_risk",
                           nonempty(path, line, row["comment"]), (names[int(raw)],), split, "sos_hl_1k"))
    return out


def load_sos4k(path: Path, split: str | None = None) -> list[Example]:
    """SOS-4K TSV: comment, myLabel (0-10), explain (a Chinese explanation kept as the reference)."""
    split = split or Path(path).stem
    out = []
    for line, row in read_table(path, ["comment", "myLabel", "explain"]):
        level = row["myLabel"].strip()
        out.append(Example(f"sos4k-{split}-{line}", "suicide_risk_levels", nonempty(path, line, row["comment"]),
                           _check(path, line, "suicide_risk_levels", [level]), split, "sos4k",
                           explanation=row["explain"].strip() or None))
    return out


def load_smp2020(path: Path, split: str | None = None) -> list[Example]:
    """SMP2020-EWECT JSON array of {id, content, label} with English label strings."""
    stem = Path(path).stem  # virus_train, virus_eval, usual_eval
    split = split or ("train" if stem.endswith("train") else stem)
    out = []
    for item_no, item in read_json_array(path, ["id", "content", "label"]):
        raw = str(item["label"]).strip()
        if raw not in EMOTION_FROM_SOURCE:
            raise DataError(path, None, f"item {item_no} (id {item['id']}): label {raw!r} not one of "
                            f"{sorted(EMOTION_FROM_SOURCE)}")
        text = str(item["content"] or "").strip()
        if not text:
            raise DataError(path, None, f"item {item_no} (id {item['id']}): empty content")
        out.append(Example(f"smp2020-{stem}-{item['id']}", "emotion", text, (EMOTION_FROM_SOURCE[raw],), split,
                           f"smp2020_ewect/{stem}"))
    return out
