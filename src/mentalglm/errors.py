"""The error a bad input file raises, at the bottom of the layers: ``data``, ``jsonl`` and ``inputs`` all raise it,
and a module of its own keeps ``jsonl`` (used by ``data``) from importing ``data`` back."""

from __future__ import annotations


class DataError(ValueError):
    """A bad input file: says which file, which line (1-based, as an editor shows it) and why."""

    def __init__(self, path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")
