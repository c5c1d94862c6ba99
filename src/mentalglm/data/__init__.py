"""Records, loaders for the raw corpora, and (later) the C-IMHI builder."""

from .records import DataError, Example

__all__ = ["DataError", "Example"]
