"""Posts for ``analyze``: one string, a CSV/TSV/JSONL/TXT/Parquet file, or stdin.

A bad row never stops the file: it becomes a ``Post`` with ``error`` set, which ``analyze``
records in the output like any other row. A bad *file* (missing column, unknown format, an
encoding that cannot be read, no posts at all) is fatal before any work starts, with a message
that names the column or file and, where it can tell, what to do (``--format tsv``, ``iconv``).

Encodings: UTF-8 with or without a BOM; UTF-16 with a BOM (LE or BE), or without one when its
zero bytes give it away; GB18030 when no line with non-ASCII bytes is valid UTF-8 and the whole
file decodes as GB18030 (a UTF-8 file with a few bad lines stays UTF-8: those lines become error rows).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

from .columnar import is_parquet
from .errors import DataError

log = logging.getLogger("mentalglm")

TEXT_COLUMNS = ("text", "content", "post", "comment", "内容", "query")
ID_COLUMNS = ("id", "post_id", "ID")
ICONV = "convert it first, e.g. `iconv -f GB18030 -t UTF-8 {name} > {stem}.utf8{suffix}`"


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    error: str | None = None
    line: int | None = None  # where the post starts in its file (for messages about duplicate ids)


def _iconv(where) -> str:
    if str(where) == "stdin":
        return "convert it first, e.g. `iconv -f GB18030 -t UTF-8`"
    p = Path(str(where))
    return ICONV.format(name=p.name, stem=p.stem, suffix=p.suffix)


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when zero bytes sit at every other position (ASCII in UTF-16), else None."""
    sample = data[:4000]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    # Text files hold no NUL bytes, except UTF-16: there every ASCII character has one, on one side of the pair
    # (a CJK character has one only when its code ends in 00, as 一 U+4E00 does).
    odd, even = sample[1::2].count(0), sample[0::2].count(0)
    if odd >= 4 and even <= odd // 4:
        return "utf-16-le"
    if even >= 4 and odd <= even // 4:
        return "utf-16-be"
    return None


def decode(data: bytes, where) -> str:
    """The text of a whole input file (see the module docstring for the encodings it recognises).

    Undecodable bytes of a UTF-8 file are kept as surrogates (``surrogateescape``), so the rows holding
    them are reported one by one instead of failing the file."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return _strict(data[len(bom):], codec, where) if codec != "utf-8" else _utf8(data[len(bom):], where)
    codec = _utf16_without_bom(data)
    if codec:
        return _strict(data, codec, where)
    return _utf8(data, where)


def _strict(data: bytes, codec: str, where) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        raise DataError(where, None, f"read as {codec.upper()} (from its byte-order mark), but byte {e.start} "
                                     f"is not valid {codec.upper()}; save it again as UTF-8") from None


def _utf8(data: bytes, where) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    non_ascii = [line for line in data.splitlines() if not line.isascii()]
    if any(_is_utf8(line) for line in non_ascii):  # a UTF-8 file with some bad lines: report those rows
        return data.decode("utf-8", errors="surrogateescape")
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        raise DataError(where, None, "not UTF-8, UTF-16 (with a byte-order mark) or GB18030: no line with "
                                     f"non-ASCII bytes is valid UTF-8; {_iconv(where)} (with its real encoding "
                                     "after -f)") from None
    log.info("%s: not UTF-8; read as GB18030", where)
    return text


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _post(where: str, pid: str, text, line: int | None = None) -> Post:
    if text is None or not isinstance(text, str):
        return Post(pid, "", f"{where}: no text", line)
    if _bad_bytes(text):
        return Post(pid, "", f"{where}: not valid UTF-8; convert the file, e.g. `iconv -f GB18030 -t UTF-8`", line)
    if not text.strip():
        return Post(pid, "", f"{where}: empty post", line)
    return Post(pid, text.strip(), None, line)


def _pick(columns, wanted: str | None, candidates, path, what: str, hint: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DataError(path, 1, f"no {what} column {wanted!r}; columns are {list(columns)}{hint}")
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
    if is_parquet(path, fmt):
        yield from _parquet(path, text_column, id_column)
        return
    if fmt not in ("txt", "text", "", "csv", "tsv", "jsonl", "ndjson"):
        raise DataError(path, None, f"unknown format {fmt!r}; use .csv, .tsv, .jsonl, .txt or .parquet (or --format)")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, None, "empty file: no posts")
    if fmt in ("txt", "text", ""):
        yield from _lines(data, str(path))
    elif fmt in ("csv", "tsv"):
        yield from _table(data, path, "\t" if fmt == "tsv" else ",", text_column, id_column)
    else:
        yield from _jsonl(data, path, text_column, id_column)


def _lines(data: bytes, where: str) -> Iterator[Post]:
    for n, line in enumerate(decode(data, where).splitlines(), 1):
        if line.strip():
            yield _post(f"{where} line {n}", str(n), line, n)


def _delimiter_hint(header: str, delimiter: str, path: Path) -> str:
    """A hint for a header that is split by the other delimiter (a tab-separated file named .csv, or the reverse)."""
    other, fmt, kind = ("\t", "tsv", "tab") if delimiter == "," else (",", "csv", "comma")
    if other in header and delimiter not in header:
        return f"; {path.name} looks {kind}-separated: pass --format {fmt}"
    return ""


def _table(data: bytes, path: Path, delimiter: str, text_column, id_column) -> Iterator[Post]:
    text = decode(data, path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = reader.fieldnames or []
    hint = _delimiter_hint(text.partition("\n")[0], delimiter, path)
    text_col = _pick(columns, text_column, TEXT_COLUMNS, path, "text", hint)
    if text_col is None:
        raise DataError(path, 1, f"no text column; pass --text-column (columns are {list(columns)}){hint}")
    id_col = _pick(columns, id_column, ID_COLUMNS, path, "id", hint)
    start = 2
    for row in reader:
        line = reader.line_num
        pid = (row.get(id_col) or "").strip() if id_col else ""
        yield _post(f"{path} line {line}", pid or str(line), row.get(text_col), start)
        start = line + 1


def _parquet(path: Path, text_column, id_column) -> Iterator[Post]:
    """Posts from a Parquet file (the ``parquet`` extra; ``mentalglm.columnar``): columns picked as for CSV."""
    from .columnar import parquet_columns, parquet_rows

    columns = parquet_columns(path)
    text_col = _pick(columns, text_column, TEXT_COLUMNS, path, "text", "")
    if text_col is None:
        raise DataError(path, None, f"no text column; pass --text-column (columns are {columns})")
    id_col = _pick(columns, id_column, ID_COLUMNS, path, "id", "")
    for n, row in enumerate(parquet_rows(path, list(dict.fromkeys(c for c in (text_col, id_col) if c))), 1):
        pid = str(row[id_col]).strip() if id_col and row[id_col] is not None else ""
        yield _post(f"{path} row {n}", pid or str(n), row[text_col], n)


def _jsonl(data: bytes, path: Path, text_column, id_column) -> Iterator[Post]:
    # A field named by --text-column/--id-column that no line has is a usage error, like a missing CSV column;
    # a line that lacks a field the others have is a bad row.
    seen_text = seen_id = objects = 0
    for n, line in enumerate(decode(data, path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield Post(str(n), "", f"{where}: invalid JSON ({e.msg})", n)
            continue
        if not isinstance(obj, dict):
            yield Post(str(n), "", f"{where}: expected a JSON object", n)
            continue
        objects += 1
        text_col = text_column or next((c for c in TEXT_COLUMNS if c in obj), None)
        id_col = id_column or next((c for c in ID_COLUMNS if c in obj), None)
        seen_text += text_col in obj
        seen_id += id_col in obj
        if text_col is None or text_col not in obj:
            yield Post(str(n), "", f"{where}: no text field (looked for {text_column or list(TEXT_COLUMNS)})", n)
            continue
        pid = str(obj.get(id_col, "")).strip() if id_col else ""
        yield _post(where, pid or str(n), obj[text_col], n)
    for field, wanted, seen in (("text", text_column, seen_text), ("id", id_column, seen_id)):
        if objects and not seen and (wanted or field == "text"):
            looked = repr(wanted) if wanted else f"(looked for {', '.join(TEXT_COLUMNS)})"
            raise DataError(path, None, f"no line has the {field} field {looked}; pass --{field}-column")


def unique_ids(posts: Iterable[Post], where: str, dedupe: bool = False) -> list[Post]:
    """The posts, checked for ids used twice (the output is keyed by (id, task), so two posts would collide).

    A duplicate is a DataError naming both lines, unless ``dedupe``: then the second and later posts with an
    id get ``#2``, ``#3``, ... (skipping any suffix another post already has), the same on every run."""
    posts = list(posts)
    taken = {p.id for p in posts}
    first: dict[str, Post] = {}
    out = []
    for post in posts:
        if post.id not in first:
            first[post.id] = post
            out.append(post)
            continue
        if not dedupe:
            raise DataError(where, None, f"id {post.id!r} on line {post.line} was already used on line "
                                         f"{first[post.id].line}; make the ids unique, or pass --dedupe-ids "
                                         f"to number repeats ({post.id}#2, ...)")
        n = 2
        while f"{post.id}#{n}" in taken:
            n += 1
        taken.add(f"{post.id}#{n}")
        out.append(replace(post, id=f"{post.id}#{n}"))
    return out
