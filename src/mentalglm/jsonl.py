"""One resumable JSON-lines file: read what an earlier run wrote, append what this run produces.

Used by every output that a rerun continues (``analyze --out``, ``eval predict``, ``eval judge``, the teacher
cache of ``data build``), so they all survive a kill the same way:

- ``read_objects`` returns every complete line that is a JSON object, with its line number, and reports the
  others as ``BadLine`` (they stay in the file: they may be worth a look). A last line without its newline was
  being written when the process died: it is cut off the file, unless it is a whole object (then only the
  newline was missing, and it is added), so the next append starts on a fresh line.
- ``Appender`` writes one line per row and flushes it at once: a killed run loses only rows in flight.
- ``drop_lines`` rewrites the file without some lines (rows to be redone), atomically.
- A side file ``<out>.meta.json`` holds the settings a file was written with; ``check_settings`` refuses to
  continue it with other settings, naming the one that differs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

log = logging.getLogger("mentalglm")


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


def _parse(raw: bytes) -> tuple[dict | None, str]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg}; torn by an interrupted write?)"
    return (obj, "") if isinstance(obj, dict) else (None, "not a JSON object")


def read_objects(path: str | os.PathLike) -> tuple[list[tuple[int, dict]], list[BadLine]]:
    """(line number, object) for each good line, and the damaged lines; a torn last line is cut off the file."""
    path = Path(path)
    if not path.exists():
        return [], []
    data = path.read_bytes()
    rows: list[tuple[int, dict]] = []
    bad: list[BadLine] = []
    offset = 0
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        torn = not raw.endswith(b"\n")
        if raw.strip():
            obj, reason = _parse(raw)
            if obj is not None:
                rows.append((number, obj))
                if torn:  # a whole object that only lacks its newline: keep it, end the line
                    with open(path, "ab") as f:
                        f.write(b"\n")
            elif torn:
                bad.append(BadLine(number, "torn last line (an interrupted write); cut off"))
                with open(path, "r+b") as f:
                    f.truncate(offset)
            else:
                bad.append(BadLine(number, reason))
        offset += len(raw)
    return rows, bad


def drop_lines(path: str | os.PathLike, numbers: set[int]) -> None:
    """Rewrite the file without the given (1-based) lines; a temporary file and a rename, so a kill loses nothing."""
    if not numbers:
        return
    path = Path(path)
    kept = [raw for n, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1) if n not in numbers]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Appender:
    """Appends one JSON line per row, flushed at once; safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._end_torn_line()
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")

    def _end_torn_line(self) -> None:
        # Callers normally read the file first (which repairs it); this guards an append without a read.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    read_objects(self.path)

    def write(self, row: dict | str) -> None:
        line = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rows(rows, path: str | os.PathLike, on_row=None) -> None:
    """Append each row (an object with ``to_json``) as one line as it comes, flushed at once so a killed run loses
    nothing written; ``on_row`` is called after each (progress bars, in-memory copies)."""
    with Appender(path) as sink:
        for row in rows:
            sink.write(row.to_json())
            if on_row:
                on_row(row)


# ------------------------------------------------------------------------------------------- settings
def meta_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def check_settings(path: str | os.PathLike, settings: dict, flag: str = "--out") -> None:
    """Raise a DataError naming the first setting that differs from the ones ``path`` was written with.

    A file without a side file (written before there were side files, or by hand) is accepted."""
    meta = meta_path(path)
    if not Path(path).exists() or not meta.exists():
        return
    try:
        before = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(meta, None, f"unreadable settings file ({e}); delete it to continue {path} anyway") from None
    for key, value in settings.items():
        if key in before and before[key] != value:
            name = key.replace("_", " ")
            raise DataError(path, None, f"was written with {name} {_show(before[key])}, this run has {_show(value)}; "
                                        f"rerun with the same {name}, or write to another {flag} "
                                        "(or pass --overwrite to replace it)")


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else repr(value)


def save_settings(path: str | os.PathLike, settings: dict) -> None:
    meta = meta_path(path)
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(settings, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def remove(path: str | os.PathLike) -> None:
    """Delete an output and its settings file (``--overwrite``)."""
    Path(path).unlink(missing_ok=True)
    meta_path(path).unlink(missing_ok=True)
