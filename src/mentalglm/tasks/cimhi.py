"""C-IMHI tasks: cognitive distortion, suicide risk (binary and 11 levels), emotion.

Label sets follow the source corpora (../shared/data/README.md); definitions follow Burns as
used by the SocialCD-3K authors, and the SOS-4K 11-level scale.
"""

from __future__ import annotations

from .spec import Label, TaskSpec, register

L = Label

COGNITIVE_DISTORTION = register(
    TaskSpec(
        name="cognitive_distortion",
        language="zh",
        title="认知歪曲识别",
        title_en="Cognitive distortion detection",
        multi_label=True,
        question="这个帖子体现了什么认知歪曲？",
        sentence_template="这篇帖子体现了{labels}的认知歪曲。",
        labels=(
            L("非此即彼", "非此即彼", "all-or-nothing thinking", "用绝对化的两极眼光看事情，不是全好就是全坏",
              ("全或无", "全有或全无", "黑白思维", "二分法思维", "all-or-nothing", "black-and-white thinking")),
            L("以偏概全", "以偏概全", "overgeneralization", "从一件事得出普遍的负面结论，常用“总是”“从来”",
              ("过度概括", "过度泛化", "过度类化", "overgeneralizing")),
            L("心理过滤", "心理过滤", "mental filter", "只盯住一个负面细节，忽略其余",
              ("选择性关注", "精神过滤", "mental filtering")),
            L("否定正面思考", "否定正面思考", "disqualifying the positive", "把正面经历说成不算数",
              ("否定正面", "否定积极", "贬低正面", "discounting the positive")),
            L("读心术", "读心术", "mind reading", "没有证据就认定别人在负面地看待自己",
              ("读心", "mind-reading")),
            L("先知错误", "先知错误", "fortune-teller error", "预言事情一定会变糟，并当成事实",
              ("预言错误", "算命", "先知式错误", "fortune telling", "fortune-telling")),
            L("放大", "放大", "magnification", "夸大问题或缺点的严重性（灾难化）",
              ("夸大", "灾难化", "放大和缩小", "magnification and minimization", "catastrophizing")),
            L("情绪化推理", "情绪化推理", "emotional reasoning", "把感受当作事实：我觉得如此，所以就是如此",
              ("情绪推理", "情感推理")),
            L("应该式", "应该式", "should statements", "用“应该”“必须”苛求自己或他人",
              ("应该句式", "应该陈述", "应该思维", "should statement")),
            L("乱贴标签", "乱贴标签", "labeling", "给自己或他人贴上笼统的负面标签",
              ("贴标签", "标签化", "mislabeling", "labelling")),
            L("罪责归己", "罪责归己", "self-blame", "把不由自己负责的负面事件归咎于自己",
              ("自责", "个人化", "归咎于己", "personalization")),
            L("罪责归他", "罪责归他", "blaming others", "把问题全部归咎于他人或环境",
              ("责怪他人", "归咎他人", "归咎于他人", "other-blame")),
        ),
        source="SocialCD-3K (github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval, data/SocialCD-3k)",
        metrics=("micro_f1", "macro_f1", "samples_f1", "weighted_f1"),
        description="Multi-label: which of Burns' 12 cognitive distortions a post shows.",
    ),
    aliases=("cd", "distortion"),
)

SUICIDE_RISK = register(
    TaskSpec(
        name="suicide_risk",
        language="zh",
        title="自杀风险识别",
        title_en="Suicide risk (binary)",
        question="这个帖子的发布者的自杀风险是高还是低？",
        sentence_template="这篇帖子体现了{labels}。",
        labels=(
            L("低自杀风险", "低自杀风险", "low suicide risk", "有负面情绪或痛苦，但没有明确的自杀意图、计划或方法",
              ("低风险", "自杀风险较低", "自杀风险低", "low risk")),
            L("高自杀风险", "高自杀风险", "high suicide risk", "表达了明确的自杀意图、计划、方法或正在进行",
              ("高风险", "自杀风险较高", "自杀风险高", "high risk")),
        ),
        source="SOS-HL-1K (github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval, data/suicide)",
        metrics=("accuracy", "weighted_f1", "macro_f1", "high_risk_f1"),
        high_risk=("高自杀风险",),
        description="Binary: low or high suicide risk.",
    ),
    aliases=("suicide", "sos-hl-1k"),
)

_LEVELS = [
    ("没有生存痛苦，只有日常的负面情绪", "no existential distress, only everyday negativity"),
    ("有一些生存痛苦，没有自杀愿望", "some distress, no suicidal wish"),
    ("明显的生存痛苦，没有自杀愿望", "clear distress, no wish"),
    ("强烈的生存痛苦，没有自杀愿望", "strong distress, no wish"),
    ("表达了自杀愿望，没有方法或计划", "wish expressed, no method or plan"),
    ("强烈的自杀愿望，方法未知", "strong wish, method unknown"),
    ("在计划自杀，日期未定", "planning, date unknown"),
    ("已决定自杀方法，日期未定", "method decided, date unknown"),
    ("在计划自杀，日期大致确定", "planning, date roughly set"),
    ("已决定方法，可能在几天内行动", "method decided, may act within days"),
    ("自杀可能正在进行", "possibly in progress"),
]

SUICIDE_RISK_LEVELS = register(
    TaskSpec(
        name="suicide_risk_levels",
        language="zh",
        title="自杀风险等级（0–10）",
        title_en="Suicide risk level (0-10, SOS-4K scale)",
        question="这个帖子的发布者的自杀风险等级是多少（0–10级）？",
        sentence_template="这篇帖子的自杀风险等级为{labels}。",
        labels=tuple(
            L(str(i), f"{i}级", f"level {i}", zh_def, (f"{i}级（{zh_def}）",)) for i, (zh_def, _) in enumerate(_LEVELS)
        ),
        # "等级为6级", "6 级", "level 6", "风险等级：6"; two digits first so "10" is not read as "1".
        label_pattern=r"(?<![\d.])(10|[0-9])\s*级|(?:等级|level)\s*(?:为|是|[:：])?\s*(10|[0-9])(?![\d.])",
        source="SOS-4K (github.com/HongzhiQ/RSLF-Framework-and-SOS4K-Dataset, data_final)",
        metrics=("accuracy", "weighted_f1", "macro_f1", "within_one", "binary_high_f1"),
        high_risk=tuple(str(i) for i in range(6, 11)),
        ordinal=True,
        description="11 ordered levels; levels 6-10 count as high risk.",
    ),
    aliases=("suicide_levels", "sos-4k"),
)

EMOTION = register(
    TaskSpec(
        name="emotion",
        language="zh",
        title="情绪识别",
        title_en="Emotion recognition",
        question="这个帖子体现了什么情绪？",
        sentence_template="这篇帖子体现的情绪是{labels}。",
        labels=(
            L("积极", "积极", "happy", "开心、感激、祝福、期待等正面情绪",
              ("开心", "高兴", "快乐", "喜悦", "正面", "积极情绪", "happiness", "joy", "positive")),
            L("愤怒", "愤怒", "angry", "生气、不满、指责",
              ("生气", "气愤", "愤慨", "不满", "anger")),
            L("悲伤", "悲伤", "sad", "难过、失落、痛心",
              ("难过", "伤心", "悲痛", "sadness")),
            L("恐惧", "恐惧", "fear", "害怕、担忧、焦虑",
              ("害怕", "担忧", "担心", "焦虑", "恐慌", "fearful", "afraid")),
            L("惊奇", "惊奇", "surprise", "惊讶、意外、震惊",
              ("惊讶", "意外", "震惊", "吃惊", "surprised")),
            L("无情绪", "无情绪", "neutral", "客观陈述，没有明显情绪",
              ("中性", "没有明显情绪", "无明显情绪", "没有情绪", "中立", "no emotion")),
        ),
        source="SMP2020-EWECT (as mirrored at github.com/BrownSweater/BERT_SMP2020-EWECT, data/raw)",
        metrics=("accuracy", "weighted_f1", "macro_f1"),
        description="Six emotion classes of Weibo posts.",
    ),
    aliases=("ewect", "smp2020"),
)

# Raw label values of the source files -> canonical label names.
EMOTION_FROM_SOURCE = {lab.en: lab.name for lab in EMOTION.labels}
