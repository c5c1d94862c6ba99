"""The one record every loader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import DataError  # noqa: F401 (re-exported: most readers of files import it from here)


@dataclass(frozen=True)
class Example:
    """A labelled post. ``labels`` are canonical label names of ``task`` (see ``mentalglm tasks``)."""

    id: str
    task: str
    text: str
    labels: tuple[str, ...]
    split: str
    source: str
    explanation: str | None = None  # a reference explanation where the source has one
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(**{**d, "labels": tuple(d["labels"]), "meta": d.get("meta") or {}})
