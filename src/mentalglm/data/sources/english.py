"""Loader for the English IMHI instruction CSVs (MentaLLaMA): ``query`` and ``gpt-3.5-turbo``."""

from __future__ import annotations

import re
from pathlib import Path

from ...tasks import get_task, split_answer
from ...tasks.imhi import IMHI_FILES
from ..records import DataError, Example
from .io import read_table

_QUERY = re.compile(r'^Consider this post: "(.*)" Question: (.*)$', re.S)


def load_imhi(path: Path, split: str | None = None, task: str | None = None) -> list[Example]:
    """One IMHI CSV. The gold label is read from the answer's exact label sentence (the released
    files have no label column); a sentence that is not one of the task's is an error."""
    path = Path(path)
    task = task or IMHI_FILES.get(path.stem) or IMHI_FILES.get(path.parent.name)
    if task is None:
        raise DataError(path, None, f"cannot tell the IMHI task from the file name; known: {sorted(IMHI_FILES)}")
    split = split or (path.stem if path.parent.parent.name == "train" else path.parent.name)
    spec = get_task(task)
    sentences = {spec.label_sentence([lab.name]): lab.name for lab in spec.labels}
    out = []
    for line, row in read_table(path, ["query", "gpt-3.5-turbo"], delimiter=","):
        m = _QUERY.match(row["query"].strip())
        if not m:
            raise DataError(path, line, 'query is not `Consider this post: "<post>" Question: <question>`')
        head, explanation = split_answer(row["gpt-3.5-turbo"])
        if head not in sentences:
            raise DataError(path, line, f"answer does not start with a label sentence of {task}: {head[:80]!r}")
        post = m.group(1).strip()
        if not post:
            raise DataError(path, line, "empty post")
        out.append(Example(f"imhi-{task}-{split}-{line}", task, post, (sentences[head],), split, f"imhi/{path.parent.name}",
                           explanation=explanation, meta={"question": m.group(2).strip(),
                                                          "answer": row["gpt-3.5-turbo"]}))
    return out
