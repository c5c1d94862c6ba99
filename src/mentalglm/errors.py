"""The errors of the bottom layer: a bad input file (``data``, ``jsonl`` and ``inputs`` all raise it; a module of its
own keeps ``jsonl``, used by ``data``, from importing ``data`` back) and a missing optional extra."""

from __future__ import annotations


class DataError(ValueError):
    """A bad input file: says which file, which line (1-based, as an editor shows it) and why."""

    def __init__(self, path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")


# The optional parts of the install (pyproject's [project.optional-dependencies]) and what each one brings.
EXTRAS = {
    "train": "training and the Hugging Face backend (torch, transformers, peft, accelerate)",
    "cluster": "analysis on a Ray cluster (ray[data], pyarrow)",
    "parquet": "Parquet input and output (pyarrow)",
    "vllm": "the vLLM backend (GPU machines only)",
}


class MissingExtra(RuntimeError):
    """A feature whose packages are an optional extra that is not installed: says which extra and how to get it."""

    def __init__(self, extra: str, module: str, feature: str | None = None):
        self.extra, self.module = extra, module
        what = feature or EXTRAS.get(extra, extra)
        super().__init__(f"{what} needs the '{extra}' extra ({module} is not installed): "
                         f"pip install 'mentalglm[{extra}]'")


def require(module: str, extra: str, feature: str | None = None):
    """Import ``module`` or raise ``MissingExtra`` naming the extra to install; call it before loading anything."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(extra, module, feature) from e


def missing(modules, extra: str, feature: str | None = None) -> MissingExtra | None:
    """The ``MissingExtra`` that ``require`` would raise for the first of ``modules`` not installed, else None;
    found without importing anything (for availability checks, which must not load what they check)."""
    import importlib.util

    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return MissingExtra(extra, module, feature)
        except ImportError:  # a dotted name whose parent is not installed
            return MissingExtra(extra, module, feature)
        except ValueError:  # already imported, without a spec
            continue
    return None
