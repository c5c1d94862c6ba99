"""Render a model's own Jinja chat template (as transformers does), so a raw prompt can end with
an answer prefix after the assistant header."""

from __future__ import annotations

from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# ChatML: what Qwen-family templates produce; used when a model carries no template.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _raise(message):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(template: str | None, messages, answer_prefix: str = "", bos_token: str = "",
                eos_token: str = "") -> str:
    prompt = _compile(template or CHATML).render(messages=list(messages), add_generation_prompt=True,
                                                 bos_token=bos_token, eos_token=eos_token, tools=None)
    return prompt + answer_prefix
