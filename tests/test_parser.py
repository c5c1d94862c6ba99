"""The label parser: gold answers, round trips of every rendered answer, negation, invalid."""

from __future__ import annotations

import itertools
import random

import pytest

from mentalglm.data.sources import load_source
from mentalglm.tasks import FALLBACK, INVALID, OK, all_tasks, get_task, parse_answer

from .shared_data import requires_data


def _combinations(spec):
    names = spec.label_names
    if not spec.multi_label:
        return [(n,) for n in names]
    if len(names) <= 12:  # every non-empty subset: 4,095 for cognitive distortion
        return [c for k in range(1, len(names) + 1) for c in itertools.combinations(names, k)]
    # cognitive pathway (19 children, 524k subsets): every subset up to size 3, the full set, 2,000 random ones
    combos = [c for k in range(1, 4) for c in itertools.combinations(names, k)] + [tuple(names)]
    rng = random.Random(0)
    combos += [tuple(sorted(rng.sample(names, rng.randint(4, len(names))), key=names.index)) for _ in range(2000)]
    return combos


@pytest.mark.parametrize("spec", all_tasks(), ids=lambda s: s.name)
def test_every_rendered_answer_round_trips(spec):
    explanation = "帖子中写道“我总是失败”，所以如此判断。" if spec.language == "zh" else "The poster says they always fail."
    failures = []
    for combo in _combinations(spec):
        parsed = parse_answer(spec, spec.render_answer(combo, explanation))
        if parsed.labels != tuple(combo) or parsed.status != OK or parsed.explanation != explanation:
            failures.append((combo, parsed))
    if spec.empty_sentence:
        parsed = parse_answer(spec, spec.render_answer([], explanation))
        if parsed.labels != () or parsed.status != OK:
            failures.append(((), parsed))
    assert not failures, f"{len(failures)} answers of {spec.name} did not round-trip, first: {failures[:3]}"


@requires_data
def test_every_imhi_gold_answer_parses_to_its_gold_label():
    examples = load_source("imhi")
    assert len(examples) == 21702
    failures = [f"{e.id} ({e.source}, split {e.split}): got {p.labels} {p.status}, gold {e.labels}"
                for e in examples for p in [parse_answer(get_task(e.task), e.meta["answer"])]
                if p.labels != e.labels or p.status != OK]
    assert not failures, f"{len(failures)} of {len(examples)} gold answers failed, e.g. {failures[:5]}"


@pytest.mark.parametrize("task,text,labels", [
    ("cognitive_distortion", "体现了以偏概全的认知歪曲，而不是非此即彼。", ("以偏概全",)),
    ("cognitive_distortion", "这篇帖子没有非此即彼，但有明显的贴标签和灾难化。", ("放大", "乱贴标签")),
    ("cognitive_distortion", "All-or-nothing thinking and mind reading.", ("非此即彼", "读心术")),
    ("suicide_risk", "没有体现出高自杀风险，属于低自杀风险。", ("低自杀风险",)),
    ("suicide_risk", "该用户自杀风险较高，因为提到了具体方法。", ("高自杀风险",)),
    ("suicide_risk", "High suicide risk. Reasoning: mentions a plan.", ("高自杀风险",)),
    ("suicide_risk_levels", "自杀风险等级：10。理由：……", ("10",)),
    ("suicide_risk_levels", "我认为是 1 级，不是 7 级。", ("1",)),
    ("emotion", "情绪是悲伤（sad）。", ("悲伤",)),
    ("emotion", "The emotion is anger.", ("愤怒",)),
    ("emotion", "帖子并不愤怒，而是感到难过。", ("悲伤",)),
    ("DR", "No, the poster does not suffer from depression. Reasoning: they are fine.", ("no",)),
    ("DR", "Yes. The poster shows many signs.", ("yes",)),
    ("dreaddit", "I know the poster does not suffer from stress.", ("no",)),
    ("SAD", "This post shows the stress cause related to work.", ("work",)),
    ("cognitive_pathway", "这句话包含的认知路径要素为：A2、C1。", ("A2", "C1")),
])
def test_free_answers(task, text, labels):
    assert parse_answer(get_task(task), text).labels == labels


def test_label_only_in_the_explanation_is_a_fallback():
    parsed = parse_answer(get_task("emotion"), "我无法判断。理由：整体语气是悲伤的。")
    assert parsed.labels == ("悲伤",) and parsed.status == FALLBACK


@pytest.mark.parametrize("task,text", [
    ("emotion", "我不知道"),
    ("suicide_risk", ""),
    ("cognitive_distortion", "这篇帖子没有非此即彼的认知歪曲。"),  # only negated
    ("DR", "I cannot tell; not enough information. I know nothing."),  # "no" inside "not"/"know" must not count
])
def test_no_label_is_invalid_never_a_default_class(task, text):
    parsed = parse_answer(get_task(task), text)
    assert parsed.status == INVALID and parsed.labels == ()
    assert parsed.reason
