"""`mentalglm eval suite`: systems x tasks x split from one YAML file, cached predictions, one report; on synthetic
corpora in the real formats (with test files, which the development machine does not have) and tiny models."""

import json
import os

import pytest

from mentalglm.cli import main
from mentalglm.data.records import DataError
from mentalglm.evaluate.predictions import read_predictions
from mentalglm.suite import load_suite, run_suite

from .synthetic_corpora import write_corpora
from .tiny_encoders import build_tiny_bert

TASKS = "[suicide_risk, emotion]"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("data"), test=True)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", ["今天很开心", "不想活了准备好了"])


def _suite(tmp_path, body: str, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _full_suite(tmp_path, gguf, bert, max_tokens=8):
    return _suite(tmp_path, f"""
name: t
split: validation
sample: 8
tasks: {TASKS}
reference: ngram
systems:
  - {{name: ngram, kind: ngram, family: discriminative}}
  - {{name: tiny-bert, kind: encoder, model: "{bert}", max_steps: 2, batch_size: 4, max_length: 32,
      family: discriminative}}
  - {{name: tiny-llm, kind: llm, model: "{gguf}", max_tokens: {max_tokens}, n_ctx: 1024, prompt_style: instruction,
      family: general LLM}}
  - {{name: tiny-llm-2shot, kind: llm, model: "{gguf}", few_shot: 2, max_tokens: {max_tokens}, n_ctx: 2048,
      prompt_style: instruction, tasks: [emotion], family: general LLM}}
  - {{name: MentalGLM, kind: llm, model: mentalglm, family: fine-tuned LLM}}
  - {{name: remote, kind: llm, model: "openai:gpt-4o", family: general LLM}}
""")


def test_suite_on_the_test_split_writes_one_report(corpora, tiny_gguf_path, tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    suite = _full_suite(tmp_path, tiny_gguf_path, tiny_bert)
    out = tmp_path / "run"
    code = main(["eval", "suite", str(suite), "--split", "test", "--data-root", str(corpora), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "suite.json").read_text())
    assert record["split"] == "test"
    by_name = {s["name"]: s for s in record["systems"]}
    # which splits each system read: fitted systems the train split, all of them the split scored
    assert by_name["ngram"]["splits_read"] == ["test", "train"]
    assert by_name["tiny-bert"]["splits_read"] == ["test", "train"]
    assert by_name["tiny-llm"]["splits_read"] == ["test"]
    assert by_name["tiny-llm-2shot"]["splits_read"] == ["test", "train"]
    assert list(by_name["tiny-llm-2shot"]["files"]) == ["emotion"]
    # systems without weights or server are listed as skipped, with how to get them
    assert by_name["MentalGLM"]["status"] == "skipped" and "hf download zwzzz/MentalGLM" in by_name["MentalGLM"]["message"]
    assert by_name["remote"]["status"] == "skipped" and "base_url" in by_name["remote"]["message"]
    # every prediction is of a test post
    for task in ("suicide_risk", "emotion"):
        rows = read_predictions(by_name["ngram"]["files"][task])
        assert rows and all("-test-" in r.id or "_test-" in r.id for r in rows)
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "**test** split" in md and "test split, stratified sample of 8" in md
    assert md.count("Difference to ngram on the same posts") == 2  # one per task
    assert "tiny-bert" in md and "Family" in md and "discriminative" in md
    assert "Not run: MentalGLM (skipped)" in md and "Not run: remote (skipped)" in md
    assert "Published on the official test split" in md  # the anchors' note on the test split
    assert (out / "report" / "report.html").exists() and list((out / "report" / "plots").glob("*-per-class.png"))


def test_rerun_reuses_predictions_finishes_a_cut_off_file_and_redoes_a_changed_system(corpora, tiny_gguf_path,
                                                                                    tiny_bert, tmp_path):
    suite = load_suite(_full_suite(tmp_path, tiny_gguf_path, tiny_bert))
    out = tmp_path / "run"
    first = run_suite(suite, out, only=["ngram", "tiny-llm"], data_root=corpora)
    files = {r.name: r.files for r in first.systems}
    # The report's paired difference is the system's score minus the reference's, with an interval.
    from mentalglm.evaluate.report import _difference_table, _signed, metric_columns

    emotion = [e for e in first.entries if e.task == "emotion"]
    ref, llm = (next(e for e in emotion if e.system == name) for name in ("ngram", "tiny-llm"))
    key = next(k for k in metric_columns(emotion) if k != "invalid_rate" and k in ref.card.metrics)
    [row] = [r for r in _difference_table(emotion, "ngram").rows if r[0] == "tiny-llm"]
    assert row[1].startswith(_signed(llm.card.metrics[key] - ref.card.metrics[key]) + " [")
    cut = files["tiny-llm"]["emotion"]
    lines = open(cut, encoding="utf-8").read().splitlines()
    with open(cut, "w", encoding="utf-8") as f:  # as if the run had been stopped after 5 posts
        f.write("\n".join(lines[:5]) + "\n")
    stamps = {p: os.stat(p).st_mtime_ns for f in files.values() for p in f.values() if p != cut}
    again = {r.name: r for r in run_suite(suite, out, only=["ngram", "tiny-llm"], data_root=corpora).systems}
    assert sorted(again["ngram"].cached) == ["emotion", "suicide_risk"] and again["tiny-llm"].cached == ["suicide_risk"]
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # nothing finished was recomputed
    finished = open(cut, encoding="utf-8").read().splitlines()
    assert finished[:5] == lines[:5] and len(finished) == len(lines)  # the 5 answers kept, the rest added
    changed = load_suite(_full_suite(tmp_path, tiny_gguf_path, tiny_bert, max_tokens=6))
    third = {r.name: r for r in run_suite(changed, out, only=["ngram", "tiny-llm"], data_root=corpora).systems}
    assert third["tiny-llm"].cached == [] and set(third["tiny-llm"].files.values()).isdisjoint(files["tiny-llm"].values())
    assert third["ngram"].cached  # its settings did not change


def test_validation_without_test_files_and_test_without_them_fails_naming_the_file(tmp_path, capsys):
    root = write_corpora(tmp_path / "data")
    suite = _suite(tmp_path, f"tasks: {TASKS}\nsample: 10\nreference: ngram\nsystems:\n  - {{name: ngram, kind: ngram}}\n")
    assert main(["eval", "suite", str(suite), "--data-root", str(root), "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "report" / "report.md").exists()
    code = main(["eval", "suite", str(suite), "--split", "test", "--data-root", str(root), "--out", str(tmp_path / "t")])
    assert code == 2 and "sos_hl_1k/test.tsv" in capsys.readouterr().err


@pytest.mark.parametrize("body, message", [
    ("systems: []", "`systems` must list at least one system"),
    ("systems:\n  - {name: a, kind: svm}", r"systems\[0\] \(a\): kind 'svm' is not one of ngram, encoder, llm"),
    ("systems:\n  - {name: a, kind: llm}", r"systems\[0\] \(a\): kind llm needs a `model`"),
    ("systems:\n  - {name: a, kind: ngram, modle: x}", r"unknown key\(s\) \['modle'\]"),
    ("systems:\n  - {name: a, kind: ngram}\n  - {name: a, kind: ngram}", "two systems are named 'a'"),
    ("reference: b\nsystems:\n  - {name: a, kind: ngram}", "reference 'b' is none of the systems: a"),
    ("split: dev\nsystems:\n  - {name: a, kind: ngram}", "split 'dev' is not one of train, validation, test"),
    ("tasks: [emotions]\nsystems:\n  - {name: a, kind: ngram}", "tasks: unknown task 'emotions'"),
    ("systems:\n  - {name: a, kind: llm, model: m, few_shot: four}", r"few_shot: a number, found 'four'"),
])
def test_suite_file_errors_name_the_file_and_the_field(tmp_path, body, message):
    path = _suite(tmp_path, body)
    with pytest.raises(DataError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value)


def test_the_shipped_suites_load_with_the_default_model_and_the_ngram_reference():
    quick, paper = load_suite("configs/eval/quick.yaml"), load_suite("configs/eval/paper.yaml")
    for suite in (quick, paper):
        assert suite.reference == "ngram" and "mentalglm-mini" in [s.model for s in suite.systems]
    assert {s.family for s in paper.systems} >= {"discriminative", "general LLM", "fine-tuned LLM"}
    assert paper.split == "test" and quick.split == "validation"


def test_the_shipped_quick_suite_on_test_files(corpora, tmp_path):
    # The shipped file itself on the test split of a data root that has test files; the LLM rows are left out
    # here (minutes of CPU: `mentalglm eval suite configs/eval/quick.yaml` runs them, docs/results.md).
    out = tmp_path / "quick"
    assert main(["eval", "suite", "configs/eval/quick.yaml", "--split", "test", "--only", "ngram", "--data-root",
                 str(corpora), "--out", str(out)]) == 0
    record = json.loads((out / "suite.json").read_text())
    assert record["split"] == "test" and set(record["gold"]) == {"cognitive_distortion", "suicide_risk",
                                                                 "suicide_risk_levels", "emotion"}
    assert all("test split, stratified sample of 30" in g["description"] for g in record["gold"].values())
    assert (out / "report" / "report.html").exists()


def test_the_suite_opens_a_system_with_the_registrys_options_parallel_included(tmp_path, monkeypatch):
    from dataclasses import replace

    from mentalglm.llm import machine, registry
    from mentalglm.suite.config import SystemSpec
    from mentalglm.suite.systems import SystemRunner

    seen = {}
    for name in ("gguf", "vllm"):
        monkeypatch.setitem(registry.SCHEMES, name, replace(registry.SCHEMES[name],
                                                            open=lambda model, **kw: seen.update(kw) or "backend"))
    monkeypatch.setattr(machine, "parallel_for", lambda n_ctx: 6)

    def opened(**fields) -> dict:
        seen.clear()
        SystemRunner(SystemSpec(name="s", kind="llm", **fields))._open()
        return {k: v for k, v in seen.items() if k not in ("adapter", "base_url", "weights")}

    assert opened(model="m.gguf", n_ctx=1024, threads=1) == {"n_ctx": 1024, "n_threads": 1, "parallel": 6}
    assert opened(model="m.gguf", parallel=2)["parallel"] == 2  # as the file says
    assert opened(model="vllm:zwzzz/MentalGLM-chat", tensor_parallel_size=4) == {"tensor_parallel_size": 4}


def test_every_backend_option_is_a_system_field_checked_and_keyed_only_when_set(tmp_path):
    from mentalglm.llm import registry
    from mentalglm.suite.config import SystemSpec, cache_key

    assert {o.name for o in registry.options()} <= set(SystemSpec.__dataclass_fields__)
    with pytest.raises(DataError, match=r"systems\[0\] \(a\)\.parallel: a whole number of at least 1, found 0"):
        load_suite(_suite(tmp_path, "systems:\n  - {name: a, kind: llm, model: m.gguf, parallel: 0}"))
    plain = load_suite(_suite(tmp_path, "systems:\n  - {name: a, kind: llm, model: m.gguf}")).systems[0]
    set_ = load_suite(_suite(tmp_path, "systems:\n  - {name: a, kind: llm, model: m.gguf, parallel: 1}")).systems[0]
    assert "parallel" not in plain.settings() and set_.parallel == 1  # unset: keys of earlier runs stay valid
    assert cache_key(plain, "emotion", "validation", None, 13, ["x"]) != \
        cache_key(set_, "emotion", "validation", None, 13, ["x"])


def test_without_the_train_extra_encoder_and_hf_systems_are_skipped_with_the_pip_line(corpora, tmp_path,
                                                                                     monkeypatch, capsys):
    import importlib.util

    from mentalglm.suite.config import SystemSpec
    from mentalglm.suite.systems import availability

    real = importlib.util.find_spec  # as if torch were not installed (None in sys.modules would break scikit-learn)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    folder = tmp_path / "model"
    folder.mkdir()  # present on disk, so only the extra is missing
    for kind in ("encoder", "llm"):
        reason = availability(SystemSpec(name="s", kind=kind, model=str(folder)))
        assert "'train' extra" in reason and "pip install 'mentalglm[train]'" in reason, reason
    suite = _suite(tmp_path, f"""
name: t
sample: 8
tasks: [emotion]
systems:
  - {{name: ngram, kind: ngram}}
  - {{name: enc, kind: encoder, model: "{folder}"}}
  - {{name: hf, kind: llm, model: "{folder}"}}
""")
    out = tmp_path / "run"
    code = main(["eval", "suite", str(suite), "--data-root", str(corpora), "--out", str(out)])
    assert code == 0, capsys.readouterr().err  # not exit 4: the suite goes on without them
    by_name = {s["name"]: s for s in json.loads((out / "suite.json").read_text())["systems"]}
    assert by_name["ngram"]["status"] == "ok"
    for name in ("enc", "hf"):
        assert by_name[name]["status"] == "skipped"
        assert "pip install 'mentalglm[train]'" in by_name[name]["message"]
