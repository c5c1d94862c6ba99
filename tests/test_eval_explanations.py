"""Explanation metrics: character-level for Chinese, good explanations above bad ones, local-only model metrics."""

import pytest

from mentalglm.evaluate.explanations import (BertScorer, lcs_length, lexical_scores, rouge_l, rouge_n,
                                             score_explanations, tokenize)
from mentalglm.llm.base import ModelUnavailable

from .tiny_encoders import build_tiny_bart, build_tiny_bert

REFERENCE = "发帖人表达了强烈的自杀愿望，提到已经准备好了方法，但没有说明具体日期，属于已决定方法、日期未定的情况。"
GOOD = "帖子表达了强烈的自杀愿望，并说已经准备好方法，但没有具体日期，因此属于方法已定、日期未定。"
BAD = "这篇帖子主要在描述天气和周末的出游计划，情绪比较平稳。"


def test_chinese_is_tokenized_by_character():
    assert tokenize("我想死。Level 6 级") == ["我", "想", "死", "level", "6", "级"]
    # rouge-score's default tokenizer keeps only [a-z0-9]: nothing of a Chinese sentence survives it.
    assert not [t for t in tokenize(REFERENCE) if t.isascii()]


def test_rouge_by_hand():
    hyp, ref = list("我很难过"), list("我今天很难过")
    assert rouge_n(hyp, ref, 1) == pytest.approx(2 * 1 * (4 / 6) / (1 + 4 / 6))  # P 4/4, R 4/6
    assert rouge_n(hyp, ref, 2) == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))  # 我很 is not in ref
    assert lcs_length(hyp, ref) == 4 and rouge_l(hyp, ref) == rouge_n(hyp, ref, 1)
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example


def test_good_chinese_explanation_beats_bad_on_every_metric():
    good, bad = lexical_scores(GOOD, REFERENCE), lexical_scores(BAD, REFERENCE)
    for key in ("rouge1", "rouge2", "rougeL", "chrf", "bleu"):
        assert good[key] > 20, key  # non-zero: Chinese is not deleted
        assert good[key] > bad[key] + 15, key
    assert lexical_scores("", REFERENCE) == {"rouge1": 0, "rouge2": 0, "rougeL": 0, "bleu": 0, "chrf": 0}


def test_bleu_tokenizes_chinese_by_character():
    from sacrebleu.metrics import BLEU

    assert lexical_scores(REFERENCE, REFERENCE)["bleu"] == pytest.approx(100)
    # sacrebleu's default 13a tokenizer splits on spaces and punctuation only: a Chinese sentence is a handful of
    # long "words", and a good paraphrase scores next to nothing. The zh tokenizer is what the report uses.
    default = BLEU(effective_order=True).sentence_score(GOOD, [REFERENCE]).score
    assert default < 5 < lexical_scores(GOOD, REFERENCE)["bleu"]
    english = lexical_scores("the post shows sadness", "the post shows deep sadness", language="en")["bleu"]
    assert 0 < english < 100


def test_score_explanations_means_intervals_and_skips():
    s = score_explanations([GOOD, BAD, ""], [REFERENCE] * 3, resamples=200)
    assert (s.n, s.empty) == (3, 1)
    assert s.means["rouge1"] == pytest.approx(sum(r["rouge1"] for r in s.per_item) / 3)
    lo, hi = s.intervals["chrf"]
    assert lo <= s.means["chrf"] <= hi
    assert any(x.startswith("BERTScore: no --bertscore-model") for x in s.skipped)
    assert any(x.startswith("BARTScore: English only") for x in s.skipped)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", [REFERENCE, GOOD, BAD])


def test_bertscore_with_a_local_encoder(tiny_bert):
    scorer = BertScorer(tiny_bert)
    same, other = scorer.score([REFERENCE, BAD], [REFERENCE, REFERENCE])
    assert same["bertscore_f1"] == pytest.approx(100, abs=1e-3)  # identical text: every token matches itself
    assert other["bertscore_f1"] < same["bertscore_f1"]
    s = score_explanations([GOOD], [REFERENCE], bertscore_model=str(tiny_bert), resamples=0)
    assert 0 < s.means["bertscore_f1"] <= 100
    with pytest.raises(ModelUnavailable, match="BERTScore needs a local model folder, got 'bert-base-chinese'"):
        BertScorer("bert-base-chinese")


def test_bartscore_skips_without_checkpoint_and_runs_with_one(tmp_path):
    en_ref, en_good = "The poster feels hopeless after losing work.", "The poster feels hopeless about work."
    s = score_explanations([en_good], [en_ref], bartscore_model=str(tmp_path / "absent"), language="en", resamples=0)
    assert any("BARTScore: checkpoint folder" in x and "facebook/bart-large-cnn" in x for x in s.skipped)
    assert "bartscore_f" not in s.means
    bart = build_tiny_bart(tmp_path / "tiny-bart")
    s = score_explanations([en_good], [en_ref], bartscore_model=str(bart), language="en", resamples=0)
    assert not any(x.startswith("BARTScore") for x in s.skipped)
    assert s.means["bartscore_f"] < 0  # a mean log-likelihood


def test_cli_explain_against_gold_references(tmp_path, capsys):
    import json

    from mentalglm.cli import main

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": pid, "labels": ["7"], "text": "帖子", "explanation": REFERENCE},
                                       ensure_ascii=False) + "\n" for pid in ("a", "b")), encoding="utf-8")
    preds = tmp_path / "pred.jsonl"
    preds.write_text("".join(json.dumps({"id": pid, "task": "suicide_risk_levels", "labels": ["7"], "raw": "",
                                         "parse_status": "ok", "explanation": text}, ensure_ascii=False) + "\n"
                             for pid, text in (("a", GOOD), ("b", BAD))), encoding="utf-8")
    assert main(["eval", "explain", str(preds), "--gold", str(gold), "--json", "--control"]) == 0
    result, control = json.loads(capsys.readouterr().out)
    assert control["file"].endswith("control (another post's reference)")
    assert control["means"]["rougeL"] == 100  # both gold posts share one reference here
    assert result["n"] == 2 and result["empty"] == 0
    expected = (lexical_scores(GOOD, REFERENCE)["rougeL"] + lexical_scores(BAD, REFERENCE)["rougeL"]) / 2
    assert result["means"]["rougeL"] == pytest.approx(expected)
    no_refs = tmp_path / "norefs.jsonl"
    no_refs.write_text(gold.read_text(encoding="utf-8").replace(REFERENCE, ""), encoding="utf-8")
    assert main(["eval", "explain", str(preds), "--gold", str(no_refs)]) == 2
    assert "no reference explanations in the gold set" in capsys.readouterr().err
