"""An append-only JSONL cache of teacher calls, so a killed build loses nothing and repeats nothing.

One line per finished call, keyed by (sample id, prompt hash); the prompt hash covers the messages,
the model and the decoding settings, so a regeneration with another seed is another key. A line is
written and flushed the moment its call returns (``mentalglm.jsonl``). Reading tolerates damage: a line
that is not a complete record (a disk hiccup, a hand edit) is reported with its line number and skipped;
a torn last line (a build killed mid-write) is reported and cut off, so the next append starts on a fresh line.
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

from ..jsonl import Appender, BadLine, read_objects

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


class TeacherCache:
    """``get(id, hash)`` / ``put(call)`` over one JSONL file; thread-safe appends."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.calls: dict[tuple[str, str], CachedCall] = {}
        self.bad_lines: list[BadLine] = []
        self._lock = threading.Lock()
        self._load()
        self._sink = Appender(self.path)

    def _load(self) -> None:
        rows, bad = read_objects(self.path)  # cuts a torn last line, so appends start on a fresh line
        for number, obj in rows:
            reason = self._add(obj)
            if reason:
                bad.append(BadLine(number, reason))
        self.bad_lines = sorted(bad, key=lambda b: b.line)
        for b in self.bad_lines:
            # Callers report ``bad_lines`` (the CLI prints them); debug level, not to say it twice.
            log.debug("%s:%d: skipping a damaged cache line (%s)", self.path, b.line, b.reason)

    def _add(self, obj: dict) -> str | None:
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
        with self._lock:
            self._sink.write(asdict(call))  # flushed before the next call starts: a kill loses only calls in flight
            self.calls[(call.id, call.prompt_hash)] = call

    def __len__(self) -> int:
        return len(self.calls)

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
