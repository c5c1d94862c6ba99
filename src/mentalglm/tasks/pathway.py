"""Cognitive pathway extraction (Jiang et al. 2024 scheme, ABCD model): a clinical-style task.

Each sentence of a post gets zero or more of 19 child labels, each under one of 4 parents.
Scored by micro-F1 at level 1 (parents), level 2 (children) and overall. The original data
were withdrawn by their authors; the loaders read its schema (span JSONL, sentence TSV).
"""

from __future__ import annotations

from .spec import Label, TaskSpec, register

PARENTS = {
    "A": ("触发性事件", "activating event"),
    "B": ("认知歪曲", "belief (cognitive distortion)"),
    "C": ("情绪反应", "consequence"),
    "D": ("驳斥", "disputation"),
}

_CHILDREN = [
    ("A1", "疾病症状", "illness symptoms", "身体或精神疾病的症状"),
    ("A2", "社会关系", "social relationships", "与家人、朋友、同事等的关系事件"),
    ("A3", "生活", "life", "日常生活中的事件"),
    ("A4", "学习工作", "study and work", "学业或工作中的事件"),
    ("A5", "情感", "romance", "恋爱、婚姻等情感事件"),
    ("B1", "非此即彼", "all-or-nothing thinking", "两极化看待事情"),
    ("B2", "以偏概全", "overgeneralization", "由一件事得出普遍结论"),
    ("B3", "心理过滤", "mental filter", "只关注负面细节"),
    ("B4", "否定正面思考", "disqualifying the positive", "否认正面经历"),
    ("B5", "妄下结论", "jumping to conclusions", "读心术或先知错误"),
    ("B6", "放大和缩小", "magnification and minimization", "夸大坏事、缩小好事"),
    ("B7", "情绪化推理", "emotional reasoning", "把感受当事实"),
    ("B8", "应该句式", "should statements", "用应该、必须苛求"),
    ("B9", "乱贴标签", "labeling", "贴负面标签"),
    ("B10", "罪责归己/他", "personalization and blame", "归咎于自己或他人"),
    ("C1", "情感效应", "emotional consequence", "由此产生的情绪"),
    ("C2", "行为效应", "behavioural consequence", "由此产生的行为"),
    ("D1", "习惯性驳斥", "habitual disputation", "习惯性的自我反驳"),
    ("D2", "有效驳斥", "effective disputation", "有效的理性反驳"),
]

COGNITIVE_PATHWAY = register(
    TaskSpec(
        name="cognitive_pathway",
        language="zh",
        title="认知路径抽取",
        title_en="Cognitive pathway extraction",
        multi_label=True,
        question="这句话包含哪些认知路径要素（触发性事件、认知歪曲、情绪反应、驳斥及其子类）？",
        sentence_template="这句话包含的认知路径要素为：{labels}。",
        empty_sentence="这句话不包含认知路径要素。",
        labels=tuple(
            Label(code, name, en, definition, (f"{PARENTS[code[0]][0]}-{name}",), code=code,
                  parent=PARENTS[code[0]][0])
            for code, name, en, definition in _CHILDREN
        ),
        metrics=("level1_micro_f1", "level2_micro_f1", "overall_micro_f1"),
        hierarchy=tuple(p for p, _ in PARENTS.values()),
        source="Jiang et al. 2024 cognitive-pathway scheme (data withdrawn; fixtures in its schema)",
        description="Sentence-level hierarchical multi-label extraction: 4 parents, 19 children.",
    ),
    aliases=("pathway",),
)


def child_by_name(name: str) -> Label:
    """A child label by code (A2) or Chinese name (社会关系)."""
    for lab in COGNITIVE_PATHWAY.labels:
        if name in (lab.code, lab.zh, lab.name):
            return lab
    raise KeyError(f"unknown cognitive-pathway child {name!r}; expected one of "
                   f"{', '.join(f'{l.code} {l.zh}' for l in COGNITIVE_PATHWAY.labels)}")


def parents_of(codes) -> list[str]:
    return sorted({child_by_name(c).parent for c in codes}, key=COGNITIVE_PATHWAY.hierarchy.index)
