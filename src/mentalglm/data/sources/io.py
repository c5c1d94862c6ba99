"""Strict readers shared by the loaders: exact encoding, columns and line numbers in every error."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..records import DataError

csv.field_size_limit(1 << 24)


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), or a DataError naming the line of the first bad byte."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, line, f"not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 2]!r}); "
                        "convert it first, e.g. `iconv -f GB18030 -t UTF-8 in > out`") from None


def read_table(path: Path, required: list[str], delimiter: str = "\t") -> list[tuple[int, dict]]:
    """Rows of a delimited file as (line number, {column: value}), checking the header and field counts.

    TSV files are read without quote handling: Weibo posts contain bare quote characters.
    """
    text = read_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, 1, "empty file (no header)") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, 1, f"missing column(s) {missing}; found {header}")
    rows = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(path, line, f"expected {len(header)} fields ({delimiter!r}-separated), found {len(row)}")
        rows.append((line, dict(zip(header, row))))
    return rows


def read_json_array(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    """A JSON array of objects as (1-based item number, object)."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(data, list):
        raise DataError(path, 1, "expected a JSON array of objects")
    out = []
    for i, item in enumerate(data, 1):
        missing = [k for k in required if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(path, None, f"item {i}: missing key(s) {missing}")
        out.append((i, item))
    return out


def read_jsonl(path: Path, required: list[str] = ()) -> list[tuple[int, dict]]:
    """Objects of a JSON-lines file as (line number, object); blank lines are skipped."""
    out = []
    for line_no, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, "expected a JSON object")
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataError(path, line_no, f"missing key(s) {missing}")
        out.append((line_no, obj))
    return out


def nonempty(path: Path, line: int | None, text: str, what: str = "post") -> str:
    text = (text or "").strip()
    if not text:
        raise DataError(path, line, f"empty {what}")
    return text
