"""The expert-review kit: agreement statistics on textbook values, and the sample -> sheets -> stats round trip."""

from __future__ import annotations

import csv
import json

import pytest

from mentalglm.cli import main
from mentalglm.data.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha
from mentalglm.data.review import COLUMNS, CRITERIA
from teachers import write_build_folder


def test_cohen_kappa_textbook_example():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("weights", ["linear", "quadratic"])
def test_weighted_cohen_kappa_matches_scikit_learn(weights):
    from sklearn.metrics import cohen_kappa_score

    a = [0, 1, 2, 3, 3, 2, 1, 0, 2, 3, 1, 2, 3, 0, 1]
    b = [0, 2, 2, 3, 2, 2, 1, 1, 3, 3, 0, 2, 3, 1, 1]
    assert cohen_kappa(a, b, weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights))


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) as on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[cat for cat, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.210, abs=5e-4)


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_textbook_example(level, expected):
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values
    n = None
    observers = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
                 [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
                 [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
                 [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    units = [list(col) for col in zip(*observers)]
    assert krippendorff_alpha(units, level) == pytest.approx(expected, abs=5e-4)


RATINGS = {  # per rater: fluency, completeness, reliability, overall, label_correct for each of 8 sampled rows
    "alice": [[3, 2, 2, 2, 1], [2, 2, 1, 2, 1], [3, 3, 3, 3, 1], [1, 1, 0, 1, 0],
              [3, 2, 2, 2, 1], [2, 1, 1, 1, 1], [3, 3, 2, 3, 1], [0, 1, 0, 0, 0]],
    "bob": [[3, 3, 2, 2, 1], [2, 1, 1, 1, 1], [3, 3, 3, 3, 1], [1, 0, 0, 1, 0],
            [2, 2, 2, 2, 1], [2, 2, 1, 1, 0], [3, 2, 2, 3, 1], [1, 1, 0, 0, 0]],
    "chen": [[2, 2, 2, 2, 1], [2, 2, 2, 2, 1], [3, 3, 2, 3, 1], [1, 1, 1, 1, 0],
             [3, 2, 2, 2, 1], [1, 1, 1, 1, 1], [3, 3, 3, 3, 1], [0, 0, 0, 0, 1]],
}


def test_review_sample_then_stats_round_trip(tmp_path, capsys):
    from openpyxl import load_workbook

    build = write_build_folder(tmp_path / "build")
    assert main(["data", "review-sample", str(build), "--n", "8", "--out", str(tmp_path / "review" / "batch")]) == 0
    with open(tmp_path / "review" / "batch.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and list(rows[0]) == list(COLUMNS)
    assert sorted(r["task"] for r in rows).count("emotion") == 4  # stratified: 12 + 12 posts -> 4 + 4
    assert all(r["post"].startswith("第") and r["answer"].startswith("这篇帖子") for r in rows)
    wb = load_workbook(tmp_path / "review" / "batch.xlsx")
    ws = wb["review"]
    assert [c.value for c in ws[1]] == list(COLUMNS) and ws.max_row == 9 and "guide" in wb.sheetnames
    ranges = {str(dv.sqref): (dv.formula1, dv.formula2) for dv in ws.data_validations.dataValidation}
    assert ("0", "3") in ranges.values() and ("0", "1") in ranges.values()

    # alice and chen fill the XLSX, bob the CSV
    cols = [*CRITERIA, "label_correct"]
    for rater in ("alice", "chen"):
        wb = load_workbook(tmp_path / "review" / "batch.xlsx")
        ws = wb["review"]
        for i, values in enumerate(RATINGS[rater], 2):
            for col, v in zip(cols, values):
                ws.cell(row=i, column=COLUMNS.index(col) + 1, value=v)
        wb.save(tmp_path / "review" / f"{rater}.xlsx")
    bob = [dict(r, **dict(zip(cols, map(str, values)))) for r, values in zip(rows, RATINGS["bob"])]
    with open(tmp_path / "review" / "bob.csv", "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(bob)

    sheets = [str(tmp_path / "review" / n) for n in ("alice.xlsx", "bob.csv", "chen.xlsx")]
    out = tmp_path / "review" / "stats.json"
    assert main(["data", "review-stats", *sheets, "--weights", "quadratic", "--json", str(out)]) == 0
    stats = json.loads(out.read_text(encoding="utf-8"))
    assert stats["raters"] == ["alice", "bob", "chen"] and stats["items"] == 8
    for k, crit in enumerate(cols):
        per_rater = {r: [row[k] for row in RATINGS[r]] for r in RATINGS}
        got = stats["criteria"][crit]
        assert got["mean"] == pytest.approx(sum(sum(v) for v in per_rater.values()) / 24)
        assert got["by_rater"]["bob"] == pytest.approx(sum(per_rater["bob"]) / 8)
        units = [list(u) for u in zip(*per_rater.values())]
        weights = None if crit == "label_correct" else "quadratic"
        expected = cohen_kappa(per_rater["alice"], per_rater["bob"], weights)
        assert got["cohen_kappa"]["alice~bob"] == pytest.approx(expected)
        assert got["fleiss_kappa"] == pytest.approx(fleiss_kappa(units))
        level = "nominal" if crit == "label_correct" else "ordinal"
        assert got["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(units, level))
    assert "Krippendorff" in capsys.readouterr().out

    bob[2]["fluency"] = "5"  # a typo in a sheet: a precise error, exit code 2
    with open(tmp_path / "review" / "bob.csv", "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(bob)
    assert main(["data", "review-stats", *sheets]) == 2
    assert "bob.csv:4: column fluency: '5' is not one of 0, 1, 2, 3" in capsys.readouterr().err


# ------------------------------------------------------------------------------ model outputs, blinded
def _predictions_and_gold(tmp_path):
    """Two systems' answers to 10 emotion posts of a gold file: `good` explains, `terse` gives the label only."""
    from mentalglm.evaluate.predictions import Prediction, write_predictions
    from mentalglm.tasks import OK

    labels = ["积极", "悲伤", "愤怒", "恐惧", "无情绪"]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(json.dumps({"id": f"p{i}", "labels": [labels[i % 5]], "text": f"第{i}条帖子，内容{i}"},
                                         ensure_ascii=False) for i in range(10)), encoding="utf-8")
    good = write_predictions([Prediction(f"p{i}", "emotion", (labels[i % 5],), OK, explanation=f"帖子说“内容{i}”。")
                              for i in range(10)], tmp_path / "good.jsonl")
    terse = write_predictions([Prediction(f"p{i}", "emotion", (labels[0],), OK) for i in range(9)],
                              tmp_path / "terse.jsonl")  # p9 unanswered: never sampled
    return gold, good, terse


def _read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_review_sample_of_model_outputs_is_blinded_and_rated_per_system(tmp_path, capsys):
    gold, good, terse = _predictions_and_gold(tmp_path)
    out = tmp_path / "review" / "models"
    assert main(["data", "review-sample", f"good={good}", f"terse={terse}", "--gold", str(gold), "--n", "6",
                 "--out", str(out)]) == 0
    rows, key = _read_csv(out.with_suffix(".csv")), _read_csv(tmp_path / "review" / "models.key.csv")
    assert len(rows) == 12 and list(rows[0]) == list(COLUMNS)  # 6 posts x 2 systems
    assert [r["id"] for r in rows] == [f"R{k:04d}" for k in range(1, 13)]
    sheet_text = (out.with_suffix(".csv")).read_text(encoding="utf-8-sig")
    assert "good" not in sheet_text and "terse" not in sheet_text  # the sheet never names a system
    by_id = {k["id"]: k for k in key}
    assert {k["system"] for k in key} == {"good", "terse"} and "p9" not in {k["post_id"] for k in key}
    assert [by_id[r["id"]]["system"] for r in rows] != ["good", "terse"] * 6  # shuffled, not interleaved
    for r in rows:  # each row shows the post, its gold label and that system's answer
        pid = by_id[r["id"]]["post_id"].split(":")[1]
        assert r["post"] == f"第{pid[1:]}条帖子，内容{pid[1:]}"
        if by_id[r["id"]]["system"] == "good":
            assert r["answer"].endswith(f"理由：帖子说“内容{pid[1:]}”。")
        else:
            assert r["answer"] == "这篇帖子体现的情绪是积极。"  # the label sentence alone: no explanation

    # two raters: both give good 3 everywhere and terse 1, and label_correct from the gold label
    for rater in ("ann", "ben"):
        filled = []
        for r in rows:
            system = by_id[r["id"]]["system"]
            score = "3" if system == "good" else "1"
            right = "1" if system == "good" or r["gold_labels"] == "积极" else "0"
            filled.append(dict(r, fluency=score, completeness=score, reliability=score, overall=score,
                               label_correct=right))
        with open(tmp_path / "review" / f"{rater}.csv", "w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(filled)
    stats_file = tmp_path / "stats.json"
    sheets = [str(tmp_path / "review" / f"{r}.csv") for r in ("ann", "ben")]
    assert main(["data", "review-stats", *sheets, "--key", str(tmp_path / "review" / "models.key.csv"),
                 "--json", str(stats_file)]) == 0
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    assert stats["systems"]["good"]["overall"] == 3 and stats["systems"]["terse"]["overall"] == 1
    assert stats["systems"]["good"]["items"] == 6 and stats["systems"]["good"]["label_correct"] == 1
    assert stats["criteria"]["overall"]["krippendorff_alpha"] == pytest.approx(1.0)
    assert "mean rating per system" in capsys.readouterr().out


def test_review_sample_of_predictions_outside_the_split_names_the_line(tmp_path):
    from mentalglm.data.records import DataError

    gold, good, _ = _predictions_and_gold(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text(good.read_text(encoding="utf-8").replace('"p3"', '"zz"'), encoding="utf-8")
    with pytest.raises(DataError, match=r"other.jsonl:4: id 'zz' is not a post"):
        from argparse import Namespace

        from mentalglm.commands.data import run_review_sample

        run_review_sample(Namespace(sources=[str(other)], gold=str(gold), split=None, data_root=None, tasks=None,
                                    n=5, seed=13, out=str(tmp_path / "x")))
