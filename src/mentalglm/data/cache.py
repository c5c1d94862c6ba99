"""An append-only JSONL cache of teacher calls, so a killed build loses nothing and repeats nothing.

One line per finished call, keyed by (sample id, prompt hash); the prompt hash covers the messages,
the model and the decoding settings, so a regeneration with another seed is another key. A line is
written and flushed the moment its call returns. Reading tolerates damage: a line that is not a
complete record (a build killed mid-write, a disk hiccup) is reported with its line number and
skipped, and the next append starts on a fresh line so it cannot be glued to the torn one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("mentalglm.data")

_REQUIRED = ("id", "prompt_hash", "text")


def prompt_hash(payload: dict) -> str:
    """A short stable hash of a JSON-able request description (sorted keys, UTF-8)."""
    data = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class CachedCall:
    id: str
    prompt_hash: str
    text: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""
    attempt: int = 0
    created: float = 0.0
    error: str = ""  # set on failed calls, which are never written


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


class TeacherCache:
    """``get(id, hash)`` / ``put(call)`` over one JSONL file; thread-safe appends."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.calls: dict[tuple[str, str], CachedCall] = {}
        self.bad_lines: list[BadLine] = []
        self._lock = threading.Lock()
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        self._file = open(self.path, "a", encoding="utf-8")

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                reason = self._read_line(raw)
                if reason:
                    self.bad_lines.append(BadLine(number, reason))
                    # Callers report ``bad_lines`` (the CLI prints them); debug level, not to say it twice.
                    log.debug("%s:%d: skipping a damaged cache line (%s)", self.path, number, reason)

    def _read_line(self, raw: bytes) -> str | None:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return "not valid UTF-8"
        except json.JSONDecodeError as e:
            return f"invalid JSON ({e.msg}; torn by an interrupted write?)"
        if not isinstance(obj, dict):
            return "not a JSON object"
        missing = [k for k in _REQUIRED if not isinstance(obj.get(k), str)]
        if missing:
            return f"missing or non-string field(s) {missing}"
        known = {k: obj[k] for k in CachedCall.__dataclass_fields__ if k in obj}
        try:
            call = CachedCall(**known)
        except TypeError as e:  # pragma: no cover - fields are filtered above
            return str(e)
        self.calls[(call.id, call.prompt_hash)] = call
        return None

    def get(self, sample_id: str, key: str) -> CachedCall | None:
        return self.calls.get((sample_id, key))

    def put(self, call: CachedCall) -> None:
        if not call.created:
            call = CachedCall(**{**asdict(call), "created": round(time.time(), 3)})
        line = json.dumps(asdict(call), ensure_ascii=False)
        with self._lock:
            if self._needs_newline:
                self._file.write("\n")
                self._needs_newline = False
            self._file.write(line + "\n")
            self._file.flush()  # on disk before the next call starts: a kill loses at most calls in flight
            self.calls[(call.id, call.prompt_hash)] = call

    def __len__(self) -> int:
        return len(self.calls)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
