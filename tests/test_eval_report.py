"""The report: Markdown + self-contained HTML, opened in headless Chromium to check that plots decode and
tables are there."""

import json
import random
import shutil
from pathlib import Path

import pytest

from mentalglm.cli import main
from mentalglm.evaluate.predictions import gold_set
from mentalglm.evaluate.report import entry_from_file, write_report
from mentalglm.tasks import get_task

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


def _files(tmp_path: Path, task: str, n: int = 60, explain: bool = False):
    """A gold file and two prediction files: 'strong' (mostly right) and 'weak' (often wrong or invalid)."""
    spec = get_task(task)
    rng = random.Random(task)
    gold = [{"id": f"{task}-{i}", "labels": [rng.choice(spec.label_names)], "text": f"帖子{i}",
             "explanation": "发帖人表达了强烈的痛苦和自杀愿望，但没有提到具体方法。" if explain else None}
            for i in range(n)]
    paths = {"gold": tmp_path / f"{task}-gold.jsonl"}
    paths["gold"].write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in gold), encoding="utf-8")
    for name, right, invalid in (("strong", 0.8, 0.0), ("weak", 0.4, 0.15)):
        rows = []
        for g in gold:
            r = rng.random()
            labels = [] if r < invalid else g["labels"] if r < invalid + right else [rng.choice(spec.label_names)]
            rows.append({"id": g["id"], "task": task, "labels": labels, "raw": "", "model": name,
                         "parse_status": "ok" if labels else "invalid",
                         "explanation": ("帖子表达了强烈的痛苦和自杀愿望。" if name == "strong" else "天气不错。")
                         if explain else ""})
        paths[name] = tmp_path / f"{task}-{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return paths


def test_report_files_tables_and_bold_best(tmp_path):
    entries = []
    for task, explain in (("emotion", False), ("suicide_risk_levels", True)):
        paths = _files(tmp_path, task, explain=explain)
        gold = gold_set(task, gold_file=paths["gold"])
        entries += [entry_from_file(paths[name], gold, name, resamples=200) for name in ("strong", "weak")]
    md, page = write_report(entries, tmp_path / "report", command="mentalglm eval report ...")
    text = md.read_text(encoding="utf-8")
    assert "## Emotion recognition (emotion, 情绪识别)" in text
    assert "| System | Accuracy | Weighted F1 | Macro F1 | Invalid rate | n |" in text
    strong_row = next(line for line in text.splitlines() if line.startswith("| strong | ") and "[" in line)
    assert strong_row.count("**") == 8  # best on accuracy, weighted F1, macro F1 and invalid rate
    assert "*bert-base-chinese (literature) [1]*" in text and "github.com/BrownSweater/BERT_SMP2020-EWECT" in text
    assert "Within-one acc." in text and "ROUGE-L" in text and "chrF" in text
    pngs = sorted(p.name for p in (md.parent / "plots").glob("*.png"))
    assert len(pngs) == 6  # per task: per-class bars + a confusion matrix per system
    assert all(f"plots/{name}" in text for name in pngs)
    html = page.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 6 and "plots/" not in html.split("<body>")[1].split("<img")[0]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install -y chromium)")
def test_html_report_renders_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    paths = _files(tmp_path, "suicide_risk")
    out = tmp_path / "report"
    assert main(["eval", "report", f"n-gram={paths['strong']}", f"zero-shot={paths['weak']}", "--gold",
                 str(paths["gold"]), "--out", str(out), "--resamples", "200"]) == 0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri())
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == 3 and all(w > 100 for w in widths)  # per-class bars + 2 confusion matrices
            assert page.locator("table").count() >= 1
            headers = page.locator("table").first.locator("th").all_inner_texts()
            assert headers[:2] == ["System", "Accuracy"] and "High-risk F1" in headers
            rows = page.locator("table").first.locator("tbody tr").all_inner_texts()
            assert rows[0].startswith("n-gram") and rows[1].startswith("zero-shot")
            assert page.locator("tr.anchor").count() == 2  # SOS-HL-1K and SOS-1K literature anchors
            assert page.locator("table").first.locator("strong").count() >= 4
        finally:
            browser.close()


def test_two_unnamed_runs_of_one_model_get_distinct_rows(tmp_path, capsys):
    paths = _files(tmp_path, "emotion", n=30)
    same_model = tmp_path / "again.jsonl"
    same_model.write_text(paths["strong"].read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "report"
    assert main(["eval", "report", str(paths["strong"]), str(same_model), "--gold", str(paths["gold"]), "--out",
                 str(out), "--resamples", "0"]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert f"| strong ({paths['strong']}) |" in text and f"| strong ({same_model}) |" in text
    assert len(list((out / "plots").glob("emotion-1-confusion-*.png"))) == 2


def test_difference_to_the_reference_is_paired_over_the_same_posts(tmp_path):
    from mentalglm.evaluate.classification import paired_difference_intervals

    paths = _files(tmp_path, "emotion")
    gold = gold_set("emotion", gold_file=paths["gold"])
    strong, weak = (entry_from_file(paths[name], gold, name, resamples=300) for name in ("strong", "weak"))
    md, _ = write_report([strong, weak], tmp_path / "report", reference="weak")
    text = md.read_text(encoding="utf-8")
    assert "*Difference to weak on the same posts (points; 95% paired bootstrap interval)*" in text
    row = next(line for line in text.splitlines() if line.startswith("| strong | +"))
    diff = 100 * (strong.card.metrics["accuracy"] - weak.card.metrics["accuracy"])
    lo, hi = paired_difference_intervals(get_task("emotion"), weak.aligned.gold, weak.aligned.pred, strong.aligned.pred,
                                         weak.aligned.valid, strong.aligned.valid, 300)["accuracy"]
    assert row.split(" | ")[1] == f"{diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]".replace("-", "\u2212")
    assert lo > 0  # 'strong' is right on twice as many posts: the paired interval excludes 0
    # the paired interval is narrower than the two separate intervals would suggest
    separate = (strong.card.intervals["accuracy"][1] - strong.card.intervals["accuracy"][0]
                + weak.card.intervals["accuracy"][1] - weak.card.intervals["accuracy"][0])
    assert hi - lo < separate
    assert "Difference to" not in write_report([strong, weak], tmp_path / "r2")[0].read_text(encoding="utf-8")


def test_analyze_rows_report_their_explanation_checks_per_task(tmp_path, capsys):
    paths = _files(tmp_path, "emotion", n=10, explain=True)
    rows = [json.loads(line) for line in paths["strong"].read_text(encoding="utf-8").splitlines()]
    for i, r in enumerate(rows):  # as `mentalglm eval predict` (analyze rows) writes them
        r["evidence_ok"], r["explanation_consistent"] = i < 9, (None if i == 0 else i % 3 != 0)
    paths["strong"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    gold = gold_set("emotion", gold_file=paths["gold"])
    strong, weak = (entry_from_file(paths[n], gold, n, resamples=50) for n in ("strong", "weak"))
    assert strong.checks == {"evidence_ok": [9, 10], "explanation_consistent": [6, 9]} and weak.checks == {}
    md, _ = write_report([strong, weak], tmp_path / "report", command="mentalglm eval report ...")
    text = md.read_text(encoding="utf-8")
    assert "Explanation checks" in text and "| strong | 9/10 (90.0%) | 6/9 (66.7%) |" in text
    assert main(["eval", "score", str(paths["strong"]), "--gold", str(paths["gold"]), "--task", "emotion"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "quotes in the post 9/10 (90.0%), argues for its label 6/9 (66.7%)" in out
