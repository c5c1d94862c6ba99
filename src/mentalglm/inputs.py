"""Posts for ``analyze``: one string, a CSV/TSV/JSONL/TXT file, or stdin.

A bad row never stops the file: it becomes a ``Post`` with ``error`` set, which ``analyze``
records in the output like any other row. A bad *file* (missing column, unknown format)
is fatal before any work starts, with a message that names the column or file.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .data.records import DataError

TEXT_COLUMNS = ("text", "content", "post", "comment", "内容", "query")
ID_COLUMNS = ("id", "post_id", "ID")


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    error: str | None = None


def _decode(data: bytes) -> str:
    # surrogateescape keeps going past bad bytes; rows that contain them are reported one by one.
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _post(where: str, pid: str, text) -> Post:
    if text is None or not isinstance(text, str):
        return Post(pid, "", f"{where}: no text")
    if _bad_bytes(text):
        return Post(pid, "", f"{where}: not valid UTF-8; convert the file, e.g. `iconv -f GB18030 -t UTF-8`")
    if not text.strip():
        return Post(pid, "", f"{where}: empty post")
    return Post(pid, text.strip())


def _pick(columns, wanted: str | None, candidates, path, what: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DataError(path, 1, f"no {what} column {wanted!r}; columns are {list(columns)}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


def read_posts(path: str | Path | None, text_column: str | None = None, id_column: str | None = None,
               fmt: str | None = None) -> Iterator[Post]:
    """Posts from a file (format from the suffix or ``fmt``), or from stdin (one post per line) for None/'-'."""
    if path in (None, "-"):
        yield from _lines(sys.stdin.buffer.read(), "stdin")
        return
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    data = path.read_bytes()
    if fmt in ("txt", "text", ""):
        yield from _lines(data, str(path))
    elif fmt in ("csv", "tsv"):
        yield from _table(data, path, "\t" if fmt == "tsv" else ",", text_column, id_column)
    elif fmt in ("jsonl", "ndjson"):
        yield from _jsonl(data, path, text_column, id_column)
    else:
        raise DataError(path, None, f"unknown format {fmt!r}; use .csv, .tsv, .jsonl or .txt (or --format)")


def _lines(data: bytes, where: str) -> Iterator[Post]:
    for n, line in enumerate(_decode(data).splitlines(), 1):
        if line.strip():
            yield _post(f"{where} line {n}", str(n), line)


def _table(data: bytes, path: Path, delimiter: str, text_column, id_column) -> Iterator[Post]:
    reader = csv.DictReader(io.StringIO(_decode(data), newline=""), delimiter=delimiter)
    columns = reader.fieldnames or []
    text_col = _pick(columns, text_column, TEXT_COLUMNS, path, "text")
    if text_col is None:
        raise DataError(path, 1, f"no text column; pass --text-column (columns are {list(columns)})")
    id_col = _pick(columns, id_column, ID_COLUMNS, path, "id")
    for row in reader:
        line = reader.line_num
        pid = (row.get(id_col) or "").strip() if id_col else ""
        yield _post(f"{path} line {line}", pid or str(line), row.get(text_col))


def _jsonl(data: bytes, path: Path, text_column, id_column) -> Iterator[Post]:
    for n, line in enumerate(_decode(data).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield Post(str(n), "", f"{where}: invalid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            yield Post(str(n), "", f"{where}: expected a JSON object")
            continue
        text_col = text_column or next((c for c in TEXT_COLUMNS if c in obj), None)
        if text_col is None or text_col not in obj:
            yield Post(str(n), "", f"{where}: no text field (looked for {text_column or list(TEXT_COLUMNS)})")
            continue
        id_col = id_column or next((c for c in ID_COLUMNS if c in obj), None)
        pid = str(obj.get(id_col, "")).strip() if id_col else ""
        yield _post(where, pid or str(n), obj[text_col])
