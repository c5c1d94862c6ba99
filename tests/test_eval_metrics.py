"""Classification metrics on cases computed by hand, agreement with scikit-learn, and bootstrap determinism."""

import random

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mentalglm.evaluate.classification import (INVALID_LABEL, bootstrap_intervals, paired_difference_intervals, confusion, evaluate, per_class,
                                               score)
from mentalglm.tasks import get_task

LOW, HIGH = "低自杀风险", "高自杀风险"


def test_binary_by_hand_invalid_counts_wrong():
    spec = get_task("suicide_risk")
    gold = [(HIGH,), (HIGH,), (LOW,), (LOW,), (HIGH,)]
    pred = [(HIGH,), (LOW,), (LOW,), (), (HIGH,)]  # row 3 did not parse
    valid = [True, True, True, False, True]
    s = score(spec, gold, pred, valid)
    assert s["n"] == 5
    assert s["accuracy"] == pytest.approx(3 / 5)  # 0.8 if the invalid row were mapped to the default class
    assert s["invalid_rate"] == pytest.approx(1 / 5)
    # high: TP 2, FP 0, FN 1 -> F1 0.8; low: TP 1, FP 1, FN 1 (the invalid row) -> F1 0.5
    assert s["high_risk_f1"] == pytest.approx(0.8)
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5) / 2)
    assert s["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2) / 5)
    pc = per_class(spec, gold, pred, valid)
    assert pc[HIGH] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3,
                        "predicted": 2}
    assert pc[LOW]["precision"] == 0.5 and pc[LOW]["recall"] == 0.5 and pc[LOW]["predicted"] == 2
    cm = confusion(spec, gold, pred, valid)
    assert cm["columns"] == [LOW, HIGH, INVALID_LABEL]
    assert cm["matrix"] == [[1, 0, 1], [1, 2, 0]]


def test_valid_flag_overrides_labels():
    """A row marked invalid counts wrong even if a label was left in it."""
    spec = get_task("suicide_risk")
    s = score(spec, [(HIGH,), (LOW,)], [(HIGH,), (LOW,)], [True, False])
    assert s["accuracy"] == 0.5 and s["invalid_rate"] == 0.5


def test_levels_within_one_and_binary_collapse():
    spec = get_task("suicide_risk_levels")
    gold = [("6",), ("5",), ("0",), ("10",)]
    pred = [("7",), ("5",), (), ("6",)]
    s = score(spec, gold, pred, [True, True, False, True])
    assert s["accuracy"] == pytest.approx(0.25)
    assert s["within_one"] == pytest.approx(0.5)  # the invalid row would be "within one" of level 0 otherwise
    assert s["binary_accuracy"] == pytest.approx(0.75)  # invalid is wrong even though neither side is high
    assert s["binary_high_f1"] == pytest.approx(1.0)


def test_within_one_follows_the_spec_not_the_task_name():
    from dataclasses import replace

    levels = get_task("suicide_risk_levels")
    gold, pred = [("6",), ("3",)], [("7",), ("9",)]
    renamed = replace(levels, name="my_scale")  # any ordinal task, whatever its name
    assert score(renamed, gold, pred)["within_one"] == pytest.approx(0.5)
    assert "within_one" not in score(replace(levels, ordinal=False), gold, pred)
    with pytest.raises(ValueError, match="ordinal"):
        replace(get_task("emotion"), ordinal=True)  # labels that are not numbers make no scale


def test_multilabel_by_hand():
    spec = get_task("cognitive_distortion")
    a, b, c = "非此即彼", "以偏概全", "心理过滤"
    gold = [(a, b), (c,), (a,)]
    pred = [(a,), (b, c), ()]
    s = score(spec, gold, pred, [True, True, False])
    assert s["accuracy"] == 0  # exact set match
    assert s["micro_f1"] == pytest.approx(4 / 7)  # TP 2, FP 1, FN 2
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 12)  # all 12 labels, absent ones score 0
    assert s["weighted_f1"] == pytest.approx((2 / 3 * 2 + 0 * 1 + 1 * 1) / 4)
    assert s["samples_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert s["invalid_rate"] == pytest.approx(1 / 3)
    pc = per_class(spec, gold, pred, [True, True, False])
    assert (pc[a]["support"], pc[b]["predicted"], pc[c]["f1"]) == (2, 1, 1.0)
    assert confusion(spec, gold, pred) is None


def test_pathway_levels():
    spec = get_task("cognitive_pathway")
    gold = [("A2", "B1"), ("C1",)]
    pred = [("A3", "B1"), ()]  # "no pathway element" is a valid answer for this task
    s = score(spec, gold, pred)
    assert s["invalid_rate"] == 0
    assert s["level1_micro_f1"] == pytest.approx(0.8)  # parents: TP 2, FP 0, FN 1
    assert s["level2_micro_f1"] == pytest.approx(0.4)  # children: TP 1, FP 1, FN 2
    assert s["overall_micro_f1"] == pytest.approx(0.6)  # pooled: TP 3, FP 1, FN 3


@pytest.mark.parametrize("task", ["emotion", "suicide_risk_levels", "cognitive_distortion"])
def test_agrees_with_sklearn(task):
    spec = get_task(task)
    names = spec.label_names
    rng = random.Random(task)
    for _ in range(10):
        n = rng.randint(5, 80)
        if spec.multi_label:
            gold = [tuple(rng.sample(names, rng.randint(1, 3))) for _ in range(n)]
            pred = [tuple(rng.sample(names, rng.randint(0, 3))) for _ in range(n)]
            y = lambda rows: np.array([[name in r for name in names] for r in rows])  # noqa: E731
            yt, yp = y(gold), y(pred)
            averages = ("micro", "macro", "weighted", "samples")
        else:
            gold = [(rng.choice(names),) for _ in range(n)]
            pred = [(rng.choice(names),) if rng.random() > 0.2 else () for _ in range(n)]
            yt = [g[0] for g in gold]
            yp = [p[0] if p else INVALID_LABEL for p in pred]
            averages = ("macro", "weighted")
        s = score(spec, gold, pred)
        for avg in averages:
            kwargs = {} if spec.multi_label else {"labels": names}
            assert s[f"{avg}_f1"] == pytest.approx(f1_score(yt, yp, average=avg, zero_division=0, **kwargs))


def _random_run(n=300, seed=0):
    rng = random.Random(seed)
    names = get_task("emotion").label_names
    gold = [(rng.choice(names),) for _ in range(n)]
    pred = [g if rng.random() < 0.6 else (rng.choice(names),) for g in gold]
    return gold, pred


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    spec = get_task("emotion")
    gold, pred = _random_run()
    first = bootstrap_intervals(spec, gold, pred, resamples=500, seed=13)
    assert first == bootstrap_intervals(spec, gold, pred, resamples=500, seed=13)
    assert first != bootstrap_intervals(spec, gold, pred, resamples=500, seed=14)
    point = score(spec, gold, pred)
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        lo, hi = first[key]
        assert lo < point[key] < hi
        assert 0.05 < hi - lo < 0.2  # about +-1.96 * sqrt(p(1-p)/n) for accuracy at n=300
    assert bootstrap_intervals(spec, gold, pred, resamples=0) == {}


def test_paired_difference_interval_is_narrower_than_separate_intervals():
    """Comparing two systems on the same posts: the difference is bracketed, identical systems give exactly 0,
    and pairing removes the post-to-post variance the separate intervals both carry."""
    spec = get_task("emotion")
    gold, pred = _random_run()
    better = [p if i % 5 else g for i, (g, p) in enumerate(zip(gold, pred))]  # right on every 5th post
    assert paired_difference_intervals(spec, gold, pred, pred)["weighted_f1"] == (0.0, 0.0)
    lo, hi = paired_difference_intervals(spec, gold, pred, better)["accuracy"]
    gain = score(spec, gold, better)["accuracy"] - score(spec, gold, pred)["accuracy"]
    assert 0 < lo < gain < hi
    a, b = bootstrap_intervals(spec, gold, pred)["accuracy"], bootstrap_intervals(spec, gold, better)["accuracy"]
    assert hi - lo < min(a[1] - a[0], b[1] - b[0])


def test_evaluate_card_round_trips_to_json():
    import json

    spec = get_task("emotion")
    gold, pred = _random_run(60)
    card = evaluate(spec, gold, pred, resamples=200)
    d = json.loads(json.dumps(card.to_dict()))
    assert d["n"] == 60 and d["bootstrap"] == {"resamples": 200, "seed": 13, "level": 0.95}
    assert set(d["per_class"]) == set(spec.label_names)
    assert sum(map(sum, d["confusion"]["matrix"])) == 60


def test_expected_calibration_error_is_zero_when_confidence_matches_accuracy():
    import numpy as np

    from mentalglm.evaluate.classification import expected_calibration_error

    gold = np.eye(2)[[0, 0, 0, 1] * 25]  # 100 posts, 75% label 0
    calibrated = np.tile([0.75, 0.25], (100, 1))  # always says 0 with 75%: right 75% of the time
    overconfident = np.tile([0.99, 0.01], (100, 1))
    assert expected_calibration_error(calibrated, gold, multi_label=False) < 1e-9
    assert abs(expected_calibration_error(overconfident, gold, multi_label=False) - 0.24) < 1e-9
    # Multi-label: every label's own probability against its own gold.
    assert abs(expected_calibration_error(np.full((4, 2), 0.5), np.array([[1, 0]] * 4), multi_label=True)) < 1e-9
