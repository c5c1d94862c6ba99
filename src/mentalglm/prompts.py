"""Prompts built from a task spec, in two styles.

- ``zeroshot``: for general chat models. A system line, the task's labels with definitions,
  the answer format, then the post *last*: every prompt of one task shares everything before
  the post, which llama.cpp evaluates once and reuses.
- ``instruction``: the C-IMHI / IMHI instruction *form* (`考虑以下这个帖子：“<post>” 问题：<question>`), the
  form of the released C-IMHI and IMHI files. The question of each Chinese task is this project's wording: no
  source available here confirms the exact questions MentalGLM was trained on.
- ``heads``: the C-IMHI instruction under a system line that asks for quoted evidence. Label heads
  read the model's hidden state at the end of this prompt (nothing generated); the explanation
  continues the same prompt after the chosen label's sentence, so the prompt is evaluated once.

Only ``zeroshot`` prefills the answer, with the part of the label sentence that every label shares
("这篇帖子体现了"), which keeps small models in the format the parser reads. ``instruction`` leaves the
answer to the model (fine-tuned models write the format they learned); ``heads`` prefills the chosen
label's sentence and 理由： only when it asks for the explanation.
"""

from __future__ import annotations

import os

from .llm.base import Request
from .tasks import TaskSpec

SYSTEM_ZH = "你是一名心理健康研究助手，分析中文社交媒体帖子。你的分析仅供研究与初筛参考，不构成诊断。"
SYSTEM_EN = "You are a mental-health research assistant analysing social-media posts. Your analysis is for research and triage only, never a diagnosis."


def answer_prefix(spec: TaskSpec) -> str:
    """The start every label sentence of the task shares."""
    sentences = [spec.label_sentence([lab.name]) for lab in spec.labels]
    return os.path.commonprefix(sentences)


def format_hint(spec: TaskSpec) -> str:
    if spec.language == "zh":
        labels = "标签1、标签2" if spec.multi_label else "标签"
        return (spec.sentence_template.format(labels=labels) + "理由：简洁的解释，引用帖子原话作为依据"
                "\n（把“标签”换成上面列出的标签名称）")
    sentences = "\n".join(f"- {spec.label_sentence([lab.name])}" for lab in spec.labels)
    return f"one of these sentences:\n{sentences}\nthen: Reasoning: <a short explanation quoting the post>"


def task_instructions(spec: TaskSpec) -> str:
    if spec.language == "zh":
        pick = "可以选择一个或多个标签。" if spec.multi_label else "只能选择一个标签。"
        return (f"任务：{spec.title}。{spec.question}\n可选标签及定义：\n{spec.label_guide()}\n{pick}"
                f"\n请严格按以下格式用中文回答：\n{format_hint(spec)}\n理由不超过80字。")
    return (f"Task: {spec.title}. {spec.question}\nLabels:\n{spec.label_guide()}\n"
            f"Answer with {format_hint(spec)}")


SYSTEM_HEADS_ZH = (SYSTEM_ZH + "回答时先给出结论，再写“理由：”，用引号“”引用帖子中的原话作为依据，"
                   "说明这些原话为什么支持结论，理由不超过80字。")


def heads_request(spec: TaskSpec, text: str, labels: tuple[str, ...] = (), lead: str = "") -> Request:
    """The ``heads`` prompt; with ``labels`` the answer is prefilled with their sentence and 理由：, then ``lead``
    (``unsure_lead``: the explanation starts by saying the label is unsure). The label sentence always comes
    first; the prompt before the answer is the one the state was read from, so it is evaluated once."""
    prefix = f"{spec.label_sentence(labels)}{spec.reason_marker}{lead}" if labels else ""
    return Request(({"role": "system", "content": SYSTEM_HEADS_ZH},
                    {"role": "user", "content": spec.instruction_prompt(text)}), prefix)


def unsure_lead(spec: TaskSpec, labels: tuple[str, ...], runner_up: str, p_runner: float,
                p_label: float | None = None) -> str:
    """The prefilled start of an unsure row's explanation: it names the runner-up with the probabilities and asks
    for the two to be weighed, so the explanation does not sound certain (the label stays the one chosen)."""
    other = spec.label(runner_up).zh
    if spec.multi_label or p_label is None:
        return f"把握不大：{other}（{p_runner:.2f}）也可能成立，权衡两者："
    chosen = spec.label(labels[0]).zh
    return f"把握不大（{chosen} {p_label:.2f}，{other} {p_runner:.2f}），需要在{chosen}与{other}之间权衡："


def quote_lead(spec: TaskSpec, span: str) -> str:
    """The prefilled start of an explanation after 理由：: the post's clause the head weighs most, quoted."""
    return f"帖子中提到“{span}”，" if spec.language == "zh" else f'The post says "{span}", '


def build_request(spec: TaskSpec, text: str, style: str = "zeroshot", question: str | None = None) -> Request:
    if style == "heads":
        return heads_request(spec, text)
    if style == "instruction":
        return Request(({"role": "user", "content": spec.instruction_prompt(text, question)},))
    if style != "zeroshot":
        raise ValueError(f"unknown prompt style {style!r}; use 'zeroshot' or 'instruction'")
    system = SYSTEM_ZH if spec.language == "zh" else SYSTEM_EN
    post = f"帖子：“{text}”" if spec.language == "zh" else f'Post: "{text}"'
    if question:
        post += f"\n问题：{question}" if spec.language == "zh" else f"\nQuestion: {question}"
    user = f"{task_instructions(spec)}\n\n{post}"
    return Request(({"role": "system", "content": system}, {"role": "user", "content": user}), answer_prefix(spec))


def label_only_stops(spec: TaskSpec) -> tuple[str, ...]:
    """Stop strings that end an answer right after its label sentence (explanations off)."""
    return ("理由", "\n") if spec.language == "zh" else ("Reasoning", "\n")
