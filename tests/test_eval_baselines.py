"""Baselines: n-gram on the real data against a majority-class baseline, a tiny BERT fine-tune, few-shot LLM prompts."""

import json
from collections import Counter

import pytest

from mentalglm.baselines.encoder import EncoderBaseline, EncoderConfig
from mentalglm.baselines.llm import FewShotAnalyzer, make_analyzer, predict_to_file
from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.cli import main
from mentalglm.data.records import Example
from mentalglm.evaluate.classification import score
from mentalglm.evaluate.predictions import align, gold_set, read_predictions, write_predictions
from mentalglm.tasks import get_task

from .shared_data import requires_data
from .tiny_encoders import build_tiny_bert

POSTS = {
    "积极": ["今天考试通过了，太开心了！", "谢谢大家的祝福，好幸福", "终于放假了，开心"],
    "悲伤": ["外婆走了，心里好难过", "失恋了，一个人哭了很久", "好伤心，什么都不想做"],
    "愤怒": ["气死我了，凭什么这样对我", "这个客服太过分了，生气", "真让人愤怒，毫无道理"],
}


def _examples(task="emotion", split="train"):
    return [Example(f"{split}-{label}-{i}", task, text, (label,), split, "test")
            for label, texts in POSTS.items() for i, text in enumerate(texts)]


# ----------------------------------------------------------------------------------------- n-gram, real data
def _majority(train, n):
    top = Counter(e.labels for e in train).most_common(1)[0][0]
    return [top] * n


@requires_data
@pytest.mark.parametrize("task, key, margin", [("suicide_risk_levels", "macro_f1", 0.25),
                                               ("cognitive_distortion", "micro_f1", 0.10)])
def test_ngram_beats_majority_on_real_validation(tmp_path, task, key, margin):
    from mentalglm.data.sources import task_splits

    spec = get_task(task)
    splits = task_splits(task)
    model = NgramBaseline(spec).fit(splits["train"])
    path = write_predictions(model.predictions(splits["validation"]), tmp_path / f"{task}.jsonl")
    aligned = align(gold_set(task), read_predictions(path, task), path)  # a valid file for the whole split
    ours = score(spec, aligned.gold, aligned.pred, aligned.valid)
    majority = score(spec, aligned.gold, _majority(splits["train"], len(aligned.gold)))
    assert ours["invalid_rate"] == 0
    assert ours[key] > majority[key] + margin, (ours[key], majority[key])
    if spec.multi_label:
        assert all(aligned.pred)  # every post gets at least one distortion, as every gold post has one


@requires_data
def test_cli_baseline_ngram_then_score(tmp_path, capsys):
    out = tmp_path / "sr.jsonl"
    assert main(["eval", "baseline", "ngram", "--task", "suicide_risk", "--out", str(out)]) == 0
    assert main(["eval", "score", str(out), "--sample", "100", "--json", "--resamples", "100"]) == 0
    card = json.loads(capsys.readouterr().out)[0]
    assert card["n"] == 100 and card["metrics"]["high_risk_f1"] > 0.6
    assert card["intervals"]["accuracy"][0] < card["metrics"]["accuracy"] < card["intervals"]["accuracy"][1]


def test_ngram_multilabel_always_predicts_a_label():
    spec = get_task("cognitive_distortion")
    posts = [("我永远都做不好任何事", ("以偏概全",)), ("他们肯定都在笑话我", ("读心术",)),
             ("我就是个失败者", ("乱贴标签",)), ("我总是失败，大家一定看不起我", ("以偏概全", "读心术")),
             ("我是个废物，永远不会成功", ("乱贴标签", "以偏概全"))] * 2
    train = [Example(f"t{i}", spec.name, text, labels, "train", "test") for i, (text, labels) in enumerate(posts)]
    model = NgramBaseline(spec).fit(train)
    predicted = model.predict(["我总是做不好", "完全无关的句子"])
    assert all(predicted) and all(set(p) <= set(spec.label_names) for p in predicted)


# ---------------------------------------------------------------------------------------------- encoder
def test_encoder_finetunes_tiny_bert_and_writes_valid_predictions(tmp_path):
    texts = [t for ts in POSTS.values() for t in ts]
    folder = build_tiny_bert(tmp_path / "tiny-bert", texts)
    spec = get_task("emotion")
    config = EncoderConfig(model=str(folder), output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4,
                           learning_rate=1e-3, max_length=32)
    model = EncoderBaseline(spec, config)
    before = [p.detach().clone() for p in model.model.parameters()]
    model.fit(_examples())
    assert any((a != b.detach()).any() for a, b in zip(before, model.model.parameters())), "no weight changed"
    valid = _examples(split="validation")
    path = write_predictions(model.predictions(valid), tmp_path / "pred.jsonl")
    rows = read_predictions(path, "emotion")
    assert [r.id for r in rows] == [e.id for e in valid]
    assert all(r.valid and len(r.labels) == 1 for r in rows) and rows[0].model == "encoder:tiny-bert"
    saved = model.save()
    again = EncoderBaseline(spec, EncoderConfig(model=str(saved), max_length=32))
    assert again.predict([e.text for e in valid]) == [r.labels for r in rows]  # the saved model predicts the same


def test_encoder_missing_model_says_how_to_get_it(tmp_path):
    from mentalglm.llm.base import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="hf download"):
        EncoderBaseline(get_task("emotion"), EncoderConfig(model=str(tmp_path / "no-such-bert")))


# ------------------------------------------------------------------------------------------ few-shot LLM
def test_few_shot_prompt_has_stratified_examples_as_turns(tiny_hf_backend):
    spec = get_task("emotion")
    analyzer = make_analyzer(tiny_hf_backend, "emotion", shots=3, train=_examples(), explain=False)
    assert isinstance(analyzer, FewShotAnalyzer)
    shots = analyzer.shots["emotion"]
    assert sorted(e.labels[0] for e in shots) == sorted(POSTS)  # one per class: stratified
    request = analyzer.request(spec, "今天真倒霉")
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert request.messages[2]["content"] == spec.label_sentence(shots[0].labels)
    assert request.messages[-1]["content"] == "帖子：“今天真倒霉”"
    assert "可选标签及定义" in request.messages[0]["content"]
    assert request.answer_prefix == "这篇帖子体现的情绪是"
    # explanations are shown only where the corpus has them: none is made up
    sos = Example("s1", "suicide_risk_levels", "帖子", ("4",), "train", "test", explanation="表达了自杀愿望。")
    levels = make_analyzer(tiny_hf_backend, "suicide_risk_levels", shots=1, train=[sos])
    answer = levels.request(get_task("suicide_risk_levels"), "x").messages[2]["content"]
    assert answer == get_task("suicide_risk_levels").render_answer(("4",), "表达了自杀愿望。")


def test_few_shot_predictions_file_is_valid_and_resumes(tiny_hf_backend, tmp_path):
    analyzer = make_analyzer(tiny_hf_backend, "emotion", shots=2, train=_examples(), explain=False)
    valid = _examples(split="validation")
    out = tmp_path / "fs.jsonl"
    assert predict_to_file(analyzer, valid[:4], out) == 4
    assert predict_to_file(analyzer, valid, out) == len(valid) - 4  # resumes
    rows = read_predictions(out, "emotion")
    assert sorted(r.id for r in rows) == sorted(e.id for e in valid)
    assert {r.parse_status for r in rows} <= {"ok", "fallback", "invalid"}


def test_cli_predict_on_a_gold_sample(tmp_path, tiny_hf_model_dir):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": e.id, "labels": list(e.labels), "text": e.text}, ensure_ascii=False)
                            + "\n" for e in _examples(split="validation")), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    args = ["eval", "predict", "--task", "emotion", "--gold", str(gold), "--sample", "6", "--no-explain",
            "--model", str(tiny_hf_model_dir), "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2  # refuses to overwrite silently
    assert main([*args, "--resume"]) == 0
    rows = read_predictions(out, "emotion")
    assert len(rows) == 6
    # Resuming with another setting would mix two systems in one file: refused before the model loads, naming it.
    assert main([*[a for a in args if a != "--no-explain"], "--resume"]) == 2
    assert main([*args, "--resume", "--few-shot", "2"]) == 2
    assert main([*[a for a in args if a != "--no-explain"], "--overwrite"]) == 0  # a deliberate replacement is fine
    assert align(gold_set("emotion", gold_file=gold, sample=6), rows, out).ids


def test_one_factory_makes_every_baseline_each_taking_its_own_settings(tmp_path):
    from mentalglm.baselines import make_baseline

    spec = get_task("suicide_risk")
    folder = str(build_tiny_bert(tmp_path / "tiny-bert", ["今天很开心", "不想活了"]))
    shared = {"model": folder, "epochs": 1.0, "max_steps": None, "output_dir": "out"}
    ngram = make_baseline("ngram", spec, **shared)  # what is not an n-gram setting is not its business
    assert isinstance(ngram, NgramBaseline) and ngram.config == NgramBaseline(spec).config
    encoder = make_baseline("encoder", spec, **shared)
    assert isinstance(encoder, EncoderBaseline)
    assert encoder.config == EncoderConfig(model=folder, epochs=1.0, output_dir="out")  # None: default
    with pytest.raises(ValueError, match="unknown baseline 'svm'; known: ngram, encoder"):
        make_baseline("svm", spec)
