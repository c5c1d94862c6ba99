"""Safety around the analysis: the high-risk flag with a resources message, and PII redaction.

The resources text is configurable (``--resources FILE`` or ``MENTALGLM_RESOURCES``); the
default names well-known Chinese crisis lines and says where the numbers come from.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Order matters: ID numbers and phone numbers before shorter digit runs.
_PII = [
    ("[邮箱]", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("[身份证号]", re.compile(r"(?<!\d)\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)")),
    ("[手机号]", re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")),
    ("[电话]", re.compile(r"(?<!\d)(?:0\d{2,3}[- ]?)\d{7,8}(?!\d)|(?<!\d)(?:400|800)[- ]?\d{3}[- ]?\d{4}(?!\d)")),
    ("[用户]", re.compile(r"@[\w\u4e00-\u9fff\-]{1,30}")),
]


def redact(text: str) -> str:
    """Mask e-mail addresses, ID-card numbers, phone numbers and @handles before text reaches a model."""
    for token, pattern in _PII:
        text = pattern.sub(token, text)
    return text


def contains_pii(text: str) -> bool:
    return any(p.search(text) for _, p in _PII)


@lru_cache(maxsize=4)
def resources_message(path: str | None = None) -> str:
    path = path or os.environ.get("MENTALGLM_RESOURCES")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return resources.files("mentalglm").joinpath("resources/crisis_resources_zh.txt").read_text(encoding="utf-8").strip()
