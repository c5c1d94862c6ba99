"""Label heads: hidden states from llama.cpp, the numpy heads, fitting, the heads folder and its checks, and
`analyze` with heads end to end on the tiny GGUF (labels over the closed set, scores, the risk flag)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mentalglm.analyze import AnalyzeConfig, Analyzer, Watcher
from mentalglm.cli import main
from mentalglm.heads import HeadsError, load_heads
from mentalglm.heads.fit import fit_head, recall_threshold
from mentalglm.heads.model import NgramScorer
from mentalglm.inputs import Post
from mentalglm.llm.base import Backend, GenConfig, Generation
from mentalglm.prompts import heads_request, quote_lead, unsure_lead
from mentalglm.tasks import get_task
from serve_helpers import serve, tiny_llama, wait_until  # noqa: F401  (fixtures)
from tiny_heads import build_tiny_heads, corpus, probabilities_sum_to_one
from tiny_models import build_tiny_gguf

POSTS = ["最近工作不想活了路上", "周末很开心朋友", "我就是个废物，他们一定讨厌我"]


@pytest.fixture(scope="module")
def backend(tiny_llama):  # noqa: F811
    return tiny_llama


@pytest.fixture(scope="module")
def heads_dir(backend, tmp_path_factory):
    return build_tiny_heads(backend, tmp_path_factory.mktemp("heads") / "tiny-heads")


def test_char_ngram_features_are_scikit_learns_tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["我真的好累  不想再坚持了", "今天很开心，和朋友去爬山", "ABC 好累好累", "好累"]
    v = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=1, sublinear_tf=True).fit(texts)
    ours = NgramScorer(dict(v.vocabulary_), v.idf_, np.zeros((1, len(v.idf_))), np.zeros(1))
    for text in [*texts, "好累好累好累，没人懂我", "完全没见过的字"]:
        assert np.allclose(ours.features(text), v.transform([text]).toarray()[0], atol=1e-9), text


def test_prompt_state_is_the_last_token_state_of_the_prompt_cached_or_not(backend, tiny_gguf_path):
    import llama_cpp

    spec = get_task("emotion")
    first = backend.prompt_state(heads_request(spec, POSTS[0]))
    other = backend.prompt_state(heads_request(spec, POSTS[1]))  # shares the prefix, reuses the cache
    backend.generate([heads_request(spec, POSTS[0], ("积极",))], GenConfig(max_tokens=4))  # cache moves on
    again = backend.prompt_state(heads_request(spec, POSTS[0]))
    assert first.shape == (64,) and not np.allclose(first, other)
    assert np.allclose(first, again, atol=1e-5)
    # The same state from llama.cpp's own embedding mode, the whole prompt decoded at once in a fresh context.
    ref = llama_cpp.Llama(str(tiny_gguf_path), embedding=True, n_ctx=1024, n_threads=1, verbose=False)
    tokens = ref.tokenize(backend.render(heads_request(spec, POSTS[1])).encode(), add_bos=False, special=True)
    ref.eval(tokens)
    state = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(ref._ctx.ctx, -1), shape=(64,))
    assert np.allclose(state, other, atol=1e-4)
    ref.close()


def test_prompt_state_with_mean_of_adds_the_mean_state_of_the_post_tokens(backend, tiny_gguf_path):
    import llama_cpp

    spec = get_task("cognitive_distortion")
    request = heads_request(spec, POSTS[2])
    backend.prompt_state(heads_request(spec, POSTS[0]))  # a cached prefix to reuse
    both = backend.prompt_state(request, mean_of=POSTS[2])
    assert both.shape == (128,)
    assert np.allclose(both[:64], backend.prompt_state(request), atol=1e-5)
    # Reference: every token's state from a fresh context, averaged over the post's own tokens.
    ref = llama_cpp.Llama(str(tiny_gguf_path), embedding=True, logits_all=True, n_ctx=1024, n_batch=1024,
                          n_threads=1, verbose=False)
    rendered = backend.render(request)
    cut = rendered.rfind(POSTS[2])
    tokens = ref.tokenize(rendered.encode(), add_bos=False, special=True)
    start = len(ref.tokenize(rendered[:cut].encode(), add_bos=False, special=True))
    end = len(ref.tokenize(rendered[:cut + len(POSTS[2])].encode(), add_bos=False, special=True))
    assert tokens[:start] == ref.tokenize(rendered[:cut].encode(), add_bos=False, special=True)
    ref.eval(tokens)
    rows = [np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(ref._ctx.ctx, i), shape=(64,)).copy()
            for i in range(start, end)]
    assert np.allclose(both[64:], np.mean(rows, axis=0), atol=1e-4)
    ref.close()
    with pytest.raises(ValueError, match="mean_of"):
        backend.prompt_state(request, mean_of="不在提示里的文字")


def test_a_fitted_head_learns_from_its_inputs_and_survives_a_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    examples = corpus("emotion", n=60)
    labels = get_task("emotion").label_names
    # States that carry the label in one direction each: the state part must learn them.
    states = rng.normal(size=(60, 16))
    for i, e in enumerate(examples):
        states[i, labels.index(e.labels[0])] += 4.0
    texts, gold = [e.text for e in examples], [e.labels for e in examples]
    fitted = fit_head("emotion", texts, gold, texts, states, gold, folds=3, C_grid=(0.1,), ngram_C_grid=(10.0,))
    head = fitted.head
    oof_acc = np.mean([labels[int(np.argmax(p))] == g[0] for p, g in zip(fitted.oof, gold)])
    assert oof_acc > 0.9  # out of fold: learned, not memorised
    probs = head.probabilities(texts[0], states[0])
    assert probs.shape == (6,) and np.isclose(probs.sum(), 1) and head.decide(probs) == list(gold[0])
    from mentalglm.heads.build import write_heads_folder

    folder = write_heads_folder(tmp_path / "h", {"emotion": head}, {"name": "t", "base": {"name": "x", "sha256": "0"}})
    loaded = load_heads(folder).head("emotion")
    assert np.allclose(loaded.probabilities(texts[0], states[0]), probs, atol=1e-5)
    assert not any(p.suffix in (".pkl", ".pickle") for p in folder.iterdir())
    (folder / "emotion.npz").write_bytes((folder / "emotion.npz").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(HeadsError, match="emotion.npz does not match its sha256"):
        load_heads(folder)


def test_an_ordinal_state_part_reads_the_scale_in_order():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(330, 8))
    level = np.clip(np.round(5 + 2 * states[:, 0] + 0.4 * rng.normal(size=330)), 0, 10).astype(int)
    gold = [(str(v),) for v in level]
    texts = [f"帖子{i}" for i in range(330)]
    fitted = fit_head("suicide_risk_levels", texts, gold, texts, states, gold, folds=3, C_grid=(0.01, 0.1, 1.0),
                      ngram_C_grid=(1.0,), state_model="ordinal")
    head = fitted.head
    # One direction for every level, in order: the state part is a scale, not eleven unrelated classes.
    assert np.linalg.matrix_rank(head.state.coef, tol=1e-6) == 1 and head.info["state_model"] == "ordinal"
    argued = [int(head.decide(p)[0]) for p in fitted.oof]
    assert np.mean(np.abs(np.array(argued) - level) <= 1) > 0.9  # out of fold, within one level
    low, mid, high = (int(head.decide(head.probabilities("", np.r_[d, np.zeros(7)]))[0]) for d in (-2, 0, 2))
    assert low < mid < high and abs(mid - 5) <= 1
    with pytest.raises(ValueError, match="multi-label"):
        fit_head("cognitive_distortion", texts, [("读心术",)] * 330, texts, states, [("读心术",)] * 330, folds=3,
                 state_model="ordinal")


def test_multi_label_head_has_a_threshold_per_label_and_always_answers(heads_dir):
    head = load_heads(heads_dir).head("cognitive_distortion")
    assert head.multi_label and head.thresholds.shape == (12,)
    never_seen = [i for i, n in enumerate(head.labels) if n not in ("读心术", "乱贴标签", "以偏概全")]
    assert (head.thresholds[never_seen] == 1.0).all()  # a label absent from training is never chosen
    assert len(head.decide(np.zeros(12))) == 1  # nothing over its threshold: the nearest label


def test_decision_weights_choose_rare_labels_more_often_for_macro_f1_and_survive_a_round_trip(tmp_path):
    from mentalglm.evaluate.classification import score
    from mentalglm.heads.build import write_heads_folder
    from mentalglm.heads.fit import decision_weights

    spec = get_task("emotion")
    rng = np.random.default_rng(3)
    y_idx = rng.choice(6, size=600, p=[0.5, 0.2, 0.15, 0.08, 0.05, 0.02])
    y = np.eye(6, dtype=np.int8)[y_idx]
    # Calibrated but weak probabilities: plain argmax almost never picks a rare label.
    logits = np.log([0.5, 0.2, 0.15, 0.08, 0.05, 0.02]) + 1.2 * y + rng.normal(scale=0.8, size=(600, 6))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    w = decision_weights(spec, y, p, "macro_f1")
    gold = [(spec.label_names[i],) for i in y_idx]
    plain = score(spec, gold, [(spec.label_names[i],) for i in p.argmax(1)])["macro_f1"]
    weighted = score(spec, gold, [(spec.label_names[i],) for i in (p * w).argmax(1)])["macro_f1"]
    assert weighted > plain + 0.03 and w[5] > w[0]
    examples = corpus("emotion", n=60)
    texts, labels = [e.text for e in examples], [e.labels for e in examples]
    states = rng.normal(size=(60, 8))
    head = fit_head("emotion", texts, labels, texts, states, labels, folds=3, C_grid=(0.1,), ngram_C_grid=(10.0,),
                    balanced=True, decision_metric="macro_f1").head
    assert head.weights is not None and head.info["balanced"] and head.info["decision_metric"] == "macro_f1"
    folder = write_heads_folder(tmp_path / "h", {"emotion": head}, {"name": "t", "base": {"name": "x", "sha256": "0"}})
    loaded = load_heads(folder).head("emotion")
    assert np.allclose(loaded.weights, head.weights)
    probs = head.probabilities(texts[0], states[0])
    assert loaded.decide(probs) == [head.labels[int(np.argmax(probs * head.weights))]]


def test_risk_threshold_keeps_the_asked_recall():
    rng = np.random.default_rng(1)
    is_high = rng.random(500) < 0.3
    p = np.clip(is_high * 0.3 + rng.random(500) * 0.7, 0, 1)
    for recall in (0.9, 0.95):
        t = recall_threshold(is_high, p, recall)
        assert (p[is_high] >= t).mean() >= recall
        assert (p[is_high] >= t + 1e-3).mean() < recall or t >= p[is_high].max()  # the largest such threshold


def test_analyze_with_heads_gives_labels_over_the_closed_set_with_probabilities(backend, heads_dir, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(POSTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["analyze", "--model", str(backend.path), "--heads", str(heads_dir), "--file", str(posts),
            "--tasks", "suicide_risk,cognitive_distortion", "--max-tokens", "8", "--threads", "1"]
    assert main([*args, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["task"]) for r in rows] == [(str(i), t) for i in (1, 2, 3)
                                                    for t in ("suicide_risk", "cognitive_distortion")]
    heads = load_heads(heads_dir)
    for r in rows:
        head = heads.head(r["task"])
        assert r["parse_status"] == "ok" and set(r["scores"]) == set(head.labels)
        probs = np.array([r["scores"][n] for n in head.labels])
        assert r["labels"] == head.decide(probs)
        if r["task"] == "suicide_risk":
            assert probabilities_sum_to_one(r["scores"])
            assert r["high_risk"] == (r["scores"]["高自杀风险"] >= head.risk_threshold)
            assert r["raw"].startswith(f"这篇帖子体现了{r['labels'][0]}。理由：")  # explained after the label
        assert r["evidence_ok"] in (True, False)
        assert r["explanation_consistent"] in (True, False, None) and isinstance(r["quotes_repaired"], int)
        assert "runner_up" in r and "explanation_labels" in r
    assert rows[0]["labels"] == ["高自杀风险"] and rows[2]["labels"] == ["低自杀风险"]
    # Labels only: the same labels and scores (an explanation never changes the label); a threshold of 0 flags all.
    labels_only = tmp_path / "labels.jsonl"
    assert main([*args, "--out", str(labels_only), "--no-explain", "--risk-threshold", "0"]) == 0
    again = [json.loads(line) for line in labels_only.read_text(encoding="utf-8").splitlines()]
    assert [(r["labels"], r["scores"]) for r in again] == [(r["labels"], r["scores"]) for r in rows]
    assert all(r["high_risk"] for r in again if r["task"] == "suicide_risk")
    assert all(r["explanation"] == "" and r["evidence_ok"] is None for r in again)
    assert all(r["explanation_consistent"] is None and r["runner_up"] == rows[i]["runner_up"]
               for i, r in enumerate(again))


def test_resume_refuses_another_heads_folder(backend, heads_dir, tmp_path, capsys):
    import shutil

    posts = tmp_path / "posts.txt"
    posts.write_text(POSTS[0] + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["analyze", "--model", str(backend.path), "--file", str(posts), "--tasks", "suicide_risk", "--no-explain",
            "--threads", "1", "--out", str(out)]
    assert main([*args, "--heads", str(heads_dir)]) == 0
    other = shutil.copytree(heads_dir, tmp_path / "other-heads")  # the same heads, but another folder
    assert main([*args, "--heads", str(other), "--resume"]) == 2
    assert f"was written with heads '{heads_dir}', this run has '{other}'" in capsys.readouterr().err
    assert main([*args, "--heads", str(heads_dir), "--resume"]) == 0 and len(out.read_text().splitlines()) == 1


def test_heads_refuse_another_base_model_and_a_task_they_lack(backend, heads_dir, tmp_path, capsys):
    other = build_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert main(["analyze", "--model", str(other), "--heads", str(heads_dir), "--tasks", "emotion", "好累"]) == 2
    assert "was trained on tiny.gguf" in capsys.readouterr().err
    with pytest.raises(HeadsError, match="has no head for task 'suicide_risk_levels'"):
        Analyzer(backend, AnalyzeConfig(tasks=("suicide_risk_levels",), style="heads", heads=str(heads_dir)))


def test_an_empty_post_is_an_error_row_not_a_crash(backend, heads_dir):
    analyzer = Analyzer(backend, AnalyzeConfig(tasks=("emotion",), style="heads", heads=str(heads_dir), explain=False))
    [row] = list(analyzer.stream([Post("x", "", "empty post")]))
    assert row.parse_status == "error" and row.error == "empty post" and row.scores == {}


def test_api_returns_scores_and_takes_a_risk_threshold(tiny_llama, heads_dir, tmp_path):  # noqa: F811
    with serve(tiny_llama, tmp_path, prompt_style="heads", heads=str(heads_dir),
               tasks=("suicide_risk", "emotion")) as (_, client):
        body = {"text": POSTS[0], "explain": False}
        out = client.post("/v1/analyze", json=body).json()
        risk = out["results"][0]["analyses"][0]
        assert risk["task"] == "suicide_risk" and probabilities_sum_to_one(risk["scores"])
        assert risk["labels"] == [max(risk["scores"], key=risk["scores"].get)]
        flagged = client.post("/v1/analyze", json={**body, "risk_threshold": 0.0}).json()
        assert flagged["high_risk"] is True and flagged["resources"]  # the crisis banner follows the flag
        calm = client.post("/v1/analyze", json={**body, "risk_threshold": 1.0}).json()
        assert calm["high_risk"] is False and calm["resources"] is None
        bad = client.post("/v1/analyze", json={**body, "risk_threshold": 2})
        assert bad.status_code == 422 and "risk_threshold" in bad.text


def test_openai_endpoint_answers_a_cimhi_question_with_the_heads(tiny_llama, heads_dir, tmp_path):  # noqa: F811
    spec = get_task("suicide_risk")
    with serve(tiny_llama, tmp_path, prompt_style="heads", heads=str(heads_dir)) as (_, client):
        model = client.get("/v1/models").json()["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": spec.instruction_prompt(POSTS[0])}]}
        out = client.post("/v1/chat/completions", json=body).json()
        extra = out["mentalglm"]
        assert extra["task"] == "suicide_risk" and probabilities_sum_to_one(extra["scores"])
        assert out["choices"][0]["message"]["content"].startswith(spec.label_sentence(extra["labels"]) + "理由：")
        # Any other conversation is plain generation, without the extension.
        chat = client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "你好"}],
                                                         "max_tokens": 4}).json()
        assert chat.get("mentalglm") is None and chat["choices"][0]["message"]["role"] == "assistant"


def test_the_packaged_heads_load_and_name_their_base_model():
    from mentalglm.heads import packaged_dir
    from mentalglm.llm.catalog import DEFAULT_MODEL, REGISTRY

    heads = load_heads()  # every file checked against the manifest's sha256
    entry = REGISTRY[DEFAULT_MODEL]
    assert entry.heads == heads.name and heads.folder == packaged_dir()
    assert heads.manifest["base"]["sha256"] == REGISTRY[entry.base].packaged.sha256
    assert set(heads.heads) >= {"cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"}
    assert heads.manifest["command"].startswith("mentalglm heads train")
    files = [p for p in heads.folder.rglob("*") if p.is_file()]
    # 50 MB at most, and nothing executable: arrays, JSON and the explainer's GGUF adapter (no pickle)
    assert sum(p.stat().st_size for p in files) < 50e6 and all(p.suffix in (".json", ".npz", ".gguf") for p in files)
    assert heads.explainer is not None and heads.explainer.adapter.suffix == ".gguf"
    assert heads.explainer.base_sha256 == REGISTRY[heads.explainer.base].packaged.sha256
    # suicide risk and the 0-10 scale read the LoRA classifier on the 0.5B (896 wide), the others the 1.5B
    assert heads.classifier is not None and heads.classifier.adapter.suffix == ".gguf"
    assert heads.classifier.base_sha256 == REGISTRY[heads.classifier.base].packaged.sha256
    for task, head in heads.heads.items():
        assert head.hidden_size == (896 if head.pool == "post" else 1536)
        assert set(heads.manifest["validation"][task]["scores"]) == {"stack", "ngram", "state"}
    assert {t for t, h in heads.heads.items() if h.pool == "post"} == {"suicide_risk", "suicide_risk_levels"}


def test_the_table_says_when_a_low_risk_label_is_flagged_by_the_threshold(backend, heads_dir, capsys):
    args = ["analyze", "--model", str(backend.path), "--heads", str(heads_dir), "--tasks", "suicide_risk",
            "--no-explain", "--threads", "1", POSTS[1]]
    assert main([*args, "--risk-threshold", "0"]) == 0
    out = capsys.readouterr().out
    assert "低自杀风险" in out and "flagged" in out and "12356" in out  # the crisis panel follows the flag
    assert main([*args, "--risk-threshold", "1"]) == 0
    out = capsys.readouterr().out
    assert "低自杀风险" in out and "flagged" not in out and "12356" not in out


class ScriptedExplainer(Backend):
    """The tiny GGUF reads the states; every explanation is ``explanation`` after the prefilled answer (the
    requests it was asked are kept, to check the prompt)."""

    hidden_states = True

    def __init__(self, inner, explanation: str):
        self.inner, self.explanation, self.asked = inner, explanation, []
        self.name, self.path, self.context_length = inner.name, inner.path, inner.context_length

    def prompt_states(self, requests, mean_of, mean_only=False):
        return self.inner.prompt_states(requests, mean_of, mean_only)

    def generate(self, requests, config):
        self.asked += requests
        return [Generation(r.answer_prefix + self.explanation) for r in requests]

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def unsure_heads(heads_dir, tmp_path_factory):
    """The tiny heads with an unsure.json: every emotion row is unsure, no suicide_risk row is."""
    import shutil

    from mentalglm.heads.unsure import write_thresholds

    folder = shutil.copytree(heads_dir, tmp_path_factory.mktemp("unsure") / "heads")
    write_thresholds(folder, {"tasks": {"emotion": {"threshold": 1.01}, "suicide_risk": {"threshold": 0.0}}})
    return folder


def test_unsure_rows_name_the_runner_up_and_the_explanation_weighs_the_two(backend, heads_dir, unsure_heads):
    assert load_heads(heads_dir).unsure == {}  # no unsure.json: the documented defaults
    assert load_heads(heads_dir).unsure_threshold("emotion") == 0.6
    assert load_heads(heads_dir).unsure_threshold("cognitive_distortion") == 0.1
    assert load_heads(unsure_heads).unsure == {"emotion": 1.01, "suicide_risk": 0.0}  # listed, sha256-checked
    scripted = ScriptedExplainer(backend, "帖子说“周末很开心朋友”，心情不错。")
    analyzer = Analyzer(scripted, AnalyzeConfig(tasks=("emotion", "suicide_risk"), style="heads",
                                                heads=str(unsure_heads)))
    emotion, risk = analyzer.analyze(POSTS[1])
    top, second = sorted(emotion.scores, key=emotion.scores.get, reverse=True)[:2]
    assert emotion.labels == [top] and emotion.runner_up == {"label": second, "p": emotion.scores[second]}
    [asked] = [r for r in scripted.asked if "情绪" in r.messages[1]["content"]]
    lead = f"把握不大（{top} {emotion.scores[top]:.2f}，{second} {emotion.scores[second]:.2f}），需要在{top}与{second}之间权衡：" \
        "帖子中提到“周末很开心朋友”，"
    # The label sentence first (fixed), then the lead that asks to weigh the two and quotes the post; the prompt
    # before the answer is the one the state was read from.
    assert asked.answer_prefix == f"这篇帖子体现的情绪是{top}。理由：{lead}"
    assert asked.messages == heads_request(get_task("emotion"), POSTS[1]).messages
    assert emotion.explanation == lead + "帖子说“周末很开心朋友”，心情不错。"
    assert emotion.raw.startswith(f"这篇帖子体现的情绪是{top}。理由：把握不大")
    assert risk.runner_up is None and not risk.explanation.startswith("把握不大")
    # The consistency check read both explanations (without the lead and the quote).
    for row in (emotion, risk):
        assert row.explanation_consistent in (True, False) and len(row.explanation_labels) == 1
        assert row.evidence_ok is True and row.quotes_repaired == 0


def test_near_miss_quotes_are_snapped_to_the_post_and_made_up_ones_are_not(backend, heads_dir):
    scripted = ScriptedExplainer(backend, "帖子说“周末很高兴朋友”，还说“我要去海边旅行了”。")
    analyzer = Analyzer(scripted, AnalyzeConfig(tasks=("emotion",), style="heads", heads=str(heads_dir)))
    [row] = analyzer.analyze(POSTS[1])
    assert row.explanation.endswith("帖子说“周末很开心朋友”，还说“我要去海边旅行了”。")
    assert row.quotes_repaired == 1 and row.evidence_ok is False  # the made-up quote still fails the check
    assert any("quote repaired to the post's words: “周末很高兴朋友” → “周末很开心朋友”" in w for w in row.warnings)
    assert any("not in the post: “我要去海边旅行了”" in w for w in row.warnings)
    assert "“周末很高兴朋友”" in row.raw  # raw keeps what the model wrote


def test_the_levels_reader_reads_the_argument_not_the_quotes():
    from mentalglm.heads.reader import argument, explanation_reader, load_trained

    heads = load_heads()
    levels = explanation_reader(heads.head("suicide_risk_levels"), ordinal=True, trained=load_trained())
    risk = explanation_reader(heads.head("suicide_risk"), trained=load_trained())
    assert levels.kind == risk.kind == "trained"
    high = "该用户发言中“今天天气很好”表明用户已经决定了自杀的方法和日期，强烈的自杀意愿，准备结束生命。"
    assert argument(high) == "该用户发言中表明用户已经决定了自杀的方法和日期，强烈的自杀意愿，准备结束生命。"
    assert int(levels.argued(argument(high))) >= 6 and risk.argued(argument(high)) == "高自杀风险"
    argued = levels.argued(argument(high))
    assert levels.consistent(argued, [str(int(argued) - 1)]) and not levels.consistent(argued, ["0"])
    assert levels.argued(argument("“只有引文”。")) is None and levels.consistent(None, ["3"]) is None


def test_api_rows_carry_the_runner_up_and_the_explanation_checks(tiny_llama, unsure_heads, tmp_path):  # noqa: F811
    with serve(tiny_llama, tmp_path, prompt_style="heads", heads=str(unsure_heads), max_tokens=8,
               tasks=("emotion", "suicide_risk")) as (_, client):
        out = client.post("/v1/analyze", json={"text": POSTS[1]}).json()
        emotion, risk = out["results"][0]["analyses"]
        second = sorted(emotion["scores"], key=emotion["scores"].get, reverse=True)[1]
        assert emotion["runner_up"] == {"label": second, "p": emotion["scores"][second]}
        assert emotion["explanation"].startswith("把握不大") and risk["runner_up"] is None
        for row in (emotion, risk):
            assert row["explanation_consistent"] in (True, False) and len(row["explanation_labels"]) == 1
            assert isinstance(row["quotes_repaired"], int)
        schema = client.get("/openapi.json").json()["components"]["schemas"]["AnalysisOut"]["properties"]
        assert {"runner_up", "explanation_labels", "explanation_consistent", "quotes_repaired"} <= set(schema)


def test_a_kept_head_is_the_earlier_one_scored_again_on_this_validation_sample(tmp_path):
    """`heads train --keep TASK=FOLDER`: the earlier head as it is (same probabilities), with fresh validation scores
    and a note of where it came from; fitting reads the recipe's training states, keeping only validation ones."""
    import dataclasses

    from mentalglm.heads.build import fit_task, keep_head, write_heads_folder
    from mentalglm.heads.features import StateCache
    from mentalglm.heads.recipe import Recipe
    from synthetic_corpora import write_corpora

    root = write_corpora(tmp_path / "data")
    recipe = dataclasses.replace(Recipe(), tasks=("emotion",), folds=3,
                                 state_posts={"emotion": 60}, validation_sample={"emotion": 20})
    cache = StateCache(tmp_path / "states", {"base": "test"})
    rng = np.random.default_rng(0)
    for split, examples in (("train", recipe.state_examples("emotion", root)),
                            ("validation", recipe.validation_examples("emotion", root))):
        cache.add("emotion", split, [e.id for e in examples], rng.normal(size=(len(examples), 8)))
    head, report = fit_task(recipe, cache, "emotion", root)
    assert report["state_posts"] == 60 and report["validation_posts"] == 20 and len(report["predictions"]) == 20
    folder = write_heads_folder(tmp_path / "earlier", {"emotion": head}, {"name": "earlier", "built": "2026-11-30"})
    wider = dataclasses.replace(recipe, validation_sample={"emotion": 30})
    extra = [e for e in wider.validation_examples("emotion", root) if e not in recipe.validation_examples("emotion", root)]
    cache.add("emotion", "validation", [e.id for e in extra], rng.normal(size=(len(extra), 8)))
    kept, again = keep_head(wider, cache, "emotion", root, folder)
    assert again["validation_posts"] == 30 and again["state_posts"] == 60  # scored anew; fitted as before
    assert kept.info["kept_from"]["built"] == "2026-11-30" and set(kept.info["kept_from"]["files"]) == {
        "emotion.npz", "emotion.json"}
    x = rng.normal(size=8)
    assert np.allclose(kept.probabilities("开心的一天", x), head.probabilities("开心的一天", x))


def test_the_unsure_threshold_is_where_validation_accuracy_reaches_the_target(heads_dir, tmp_path):
    """heads train stores it: rows under it are right less often than the target, rows over it more often."""
    from mentalglm.heads.unsure import fit_thresholds, threshold_for, write_thresholds

    rng = np.random.default_rng(5)
    conf = rng.random(2000)
    correct = rng.random(2000) < conf  # accuracy equals confidence
    t = threshold_for(conf, correct, 0.6)
    assert 0.5 < t < 0.7 and correct[conf < t].mean() < 0.6 < correct[conf >= t].mean()
    assert threshold_for(conf, np.zeros(2000, bool), 0.6) > conf.max()  # never reached: every row is unsure
    head = load_heads(heads_dir).head("emotion")
    rows, gold = [], {}
    for i, c in enumerate(conf[:400]):
        p = np.full(6, (1 - c) / 5)
        p[0] = c
        rows.append({"id": f"e{i}", "labels": [head.labels[0]], "scores": dict(zip(head.labels, p))})
        gold[f"e{i}"] = (head.labels[0],) if correct[i] else (head.labels[1],)
    table = fit_thresholds({"emotion": head}, {"emotion": rows}, {"emotion": gold})
    row = table["tasks"]["emotion"]
    assert row["validation_posts"] == 400 and row["accuracy_unsure"] < 0.6 < row["accuracy_sure"]
    import shutil

    folder = shutil.copytree(heads_dir, tmp_path / "h")
    write_thresholds(folder, table)
    assert load_heads(folder).unsure_threshold("emotion") == row["threshold"]


@pytest.fixture(scope="module")
def explained_heads(backend, heads_dir, tmp_path_factory):
    """The tiny heads with a trained explainer: a LoRA adapter on the tiny GGUF, installed from a run folder the
    way `mentalglm heads explainer --run RUN` does it."""
    import shutil

    from mentalglm.heads.explainer import install_explainer
    from mentalglm.llm.manifest import AdapterManifest
    from tiny_models import build_tiny_lora_gguf

    root = tmp_path_factory.mktemp("explainer")
    run = root / "run"
    (run / "export").mkdir(parents=True)
    build_tiny_lora_gguf(run / "export" / "adapter.gguf")
    AdapterManifest(str(backend.path), "instruction", ("suicide_risk",)).write(run)
    (run / "config.yaml").write_text("name: tiny-explainer\n", encoding="utf-8")
    (run / "data.json").write_text('{"stage2": {"records": 6}}', encoding="utf-8")
    folder = shutil.copytree(heads_dir, root / "heads")
    install_explainer(run, folder, "test", {"evidence_ok": 1.0})
    return folder


def test_the_trained_explainer_writes_the_explanation_and_never_moves_a_label(backend, explained_heads):
    from mentalglm.heads.explainer import explainer_request
    from mentalglm.llm.llamacpp import LlamaCppBackend

    headset = load_heads(explained_heads)
    assert headset.explainer is not None and headset.explainer.info["validation"] == {"evidence_ok": 1.0}
    assert {"explainer/adapter.gguf", "explainer/explainer.json"} <= set(headset.manifest["files"])
    tasks = ("suicide_risk", "emotion")
    posts = [Post(str(i), p) for i, p in enumerate(POSTS)]
    runs = {kind: Analyzer(backend, AnalyzeConfig(tasks=tasks, style="heads", heads=str(explained_heads),
                                                  explainer=kind, max_tokens=12)).run(posts)
            for kind in ("trained", "base", "auto")}
    labels_only = Analyzer(backend, AnalyzeConfig(tasks=tasks, style="heads", heads=str(explained_heads),
                                                  explain=False)).run(posts)
    # The heads read their states without the adapter: labels and scores are the same whoever explains.
    assert [(r.labels, r.scores) for r in runs["trained"]] == [(r.labels, r.scores) for r in runs["base"]] \
        == [(r.labels, r.scores) for r in labels_only]
    # The explanation is the explainer's answer to the C-IMHI question with the label prefilled.
    tuned = LlamaCppBackend(backend.path, lora_path=str(headset.explainer.adapter), n_ctx=2048)
    try:
        for row, post in zip(runs["trained"], [p for p in posts for _ in tasks]):
            spec = get_task(row.task)
            lead = "" if row.runner_up is None else unsure_lead(  # an unsure row's explanation weighs the two
                spec, tuple(row.labels), row.runner_up["label"], row.runner_up["p"], row.scores[row.labels[0]])
            lead += quote_lead(spec, headset.head(row.task).evidence(post.text, row.labels))
            request = explainer_request(spec, post.text, tuple(row.labels), lead)
            written = tuned.generate([request], GenConfig(max_tokens=12, stop=("\n\n",)))[0].text
            assert row.raw == written and row.raw.startswith(spec.label_sentence(row.labels) + spec.reason_marker)
    finally:
        tuned.close()
    assert [r.explanation for r in runs["trained"]] != [r.explanation for r in runs["base"]]
    # auto: the explainer writes the tasks its manifest names (here suicide_risk), the heads' model the others
    assert headset.explainer.tasks == ["suicide_risk"]
    assert [r.raw for r in runs["auto"]] == [(t if r.task == "suicide_risk" else b).raw
                                             for r, t, b in zip(runs["auto"], runs["trained"], runs["base"])]

    class Pieces(Watcher):  # a streamed reader sees the explainer's answer as it is written
        def __init__(self):
            self.pieces = {}

        def text(self, post_id, task, piece):
            self.pieces.setdefault((post_id, task), []).append(piece)

    watch = Pieces()
    streamed = list(Analyzer(backend, AnalyzeConfig(tasks=tasks, style="heads", heads=str(explained_heads),
                                                    explainer="trained", max_tokens=12)).stream(posts, watch=watch))
    assert sorted(r.raw for r in streamed) == sorted(r.raw for r in runs["trained"])
    assert all("".join(watch.pieces[(r.id, r.task)]) == r.raw for r in streamed)


def test_explanations_start_by_quoting_the_clause_the_head_weighs_most(backend, heads_dir):
    head = load_heads(heads_dir).head("suicide_risk")
    post = "今天天气还行，最近工作不想活了，周末去朋友家"
    assert head.evidence(post, ["高自杀风险"]) == "最近工作不想活了"  # the clause with the cue it learned
    assert head.evidence(post, ["低自杀风险"]) != "最近工作不想活了"
    assert head.evidence("累了", ["高自杀风险"]) == "累了" and head.evidence("  ", ["高自杀风险"]) is None  # whole
    run_on = "最近工作真的不想活了每天晚上都睡不着觉也没有人可以说话只能一个人躺着看天花板到天亮"  # one 44-char clause
    assert head.evidence(run_on, ["高自杀风险"]) == run_on[:40]  # its start, not nothing
    spec = get_task("suicide_risk")
    config = dict(tasks=("suicide_risk",), style="heads", heads=str(heads_dir), max_tokens=8)
    row = Analyzer(backend, AnalyzeConfig(**config)).analyze(post)[0]
    lead = quote_lead(spec, head.evidence(post, row.labels))
    assert row.explanation.startswith(lead) and row.raw.startswith(spec.label_sentence(row.labels) + "理由：" + lead)
    assert row.evidence_ok is not None
    free = Analyzer(backend, AnalyzeConfig(**config, quote_first=False)).analyze(post)[0]
    assert not free.explanation.startswith(lead) and (free.labels, free.scores) == (row.labels, row.scores)


@pytest.mark.parametrize("ends", [None, ("了",)], ids=["sentence-ends", "a-character-the-tiny-model-writes"])
def test_a_brief_explanation_is_the_full_one_cut_after_its_first_sentence(backend, heads_dir, ends, monkeypatch):
    from mentalglm import analyze

    if ends:  # the tiny model's text has no full stop: a stop it does write makes the cut happen
        monkeypatch.setattr(analyze, "BRIEF_STOPS", ends)
    post = "最近工作不想活了。每天晚上都睡不着！周末也不想出门"
    config = dict(tasks=("suicide_risk",), style="heads", heads=str(heads_dir), max_tokens=40)
    full = Analyzer(backend, AnalyzeConfig(**config)).analyze(post)[0]
    brief = Analyzer(backend, AnalyzeConfig(**config, brief=True)).analyze(post)[0]
    assert (brief.labels, brief.scores) == (full.labels, full.scores)  # the label never depends on the answer
    lead = quote_lead(get_task("suicide_risk"), load_heads(heads_dir).head("suicide_risk").evidence(post, full.labels))
    written = full.explanation[len(lead):]  # greedy decoding: the same tokens until the first sentence ends
    end = min((written.index(c) for c in analyze.BRIEF_STOPS if c in written), default=None)
    assert (end is not None) == bool(ends)
    assert brief.explanation == (full.explanation if end is None else analyze.sentence_ended(lead + written[:end]))


def test_a_cut_sentence_gets_its_quote_closed_and_its_full_stop_back():
    from mentalglm.analyze import sentence_ended

    assert sentence_ended("这表明他很累") == "这表明他很累。" and sentence_ended("他写道“好累") == "他写道“好累”。"
    assert sentence_ended("真的吗？") == "真的吗？" and sentence_ended("") == ""
    assert sentence_ended("帖子中提到“好累”，") == "帖子中提到“好累”。"  # stopped right after the quote lead


def test_an_altered_explainer_is_refused(explained_heads, tmp_path):
    import shutil

    folder = shutil.copytree(explained_heads, tmp_path / "heads")
    with open(folder / "explainer" / "adapter.gguf", "ab") as f:
        f.write(b"\0")
    with pytest.raises(HeadsError, match="explainer/adapter.gguf does not match its sha256"):
        load_heads(folder)


@pytest.fixture(scope="module")
def screened_heads(heads_dir, tmp_path_factory):
    """The tiny heads with a screen fitted out of fold on their own keyword corpus."""
    import shutil

    from mentalglm.heads.screen import fit_screen, write_screen

    folder = shutil.copytree(heads_dir, tmp_path_factory.mktemp("screen") / "heads")
    heads = load_heads(folder).heads
    screens = {}
    for task, head in heads.items():
        train = corpus(task, n=60, seed=1)
        screens[task] = fit_screen(head, [e.text for e in train], [e.labels for e in train], folds=3)
    write_screen(folder, screens)
    return folder


def test_the_screen_decides_the_posts_it_is_sure_of_and_the_model_the_rest(backend, screened_heads):
    class Counting:  # the real backend, counting the states it is asked to read
        def __init__(self, inner):
            self.inner, self.states = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def states_then_generate(self, requests, *rest):
            self.states += len(requests)
            return self.inner.states_then_generate(requests, *rest)

    headset = load_heads(screened_heads)
    assert set(headset.screens) == set(headset.heads)
    tasks = ("suicide_risk", "emotion", "cognitive_distortion")
    posts = [Post(str(i), p) for i, p in enumerate(POSTS + ["路上好害怕晚上", "今天通知一下工作"])]
    counted = Counting(backend)
    screened = Analyzer(counted, AnalyzeConfig(tasks=tasks, style="heads", heads=str(screened_heads), screen=True,
                                               explain=False)).run(posts)
    full = Analyzer(backend, AnalyzeConfig(tasks=tasks, style="heads", heads=str(screened_heads),
                                           explain=False)).run(posts)
    by_screen = [r for r in screened if r.decided_by == "screen"]
    assert by_screen and {r.decided_by for r in full} == {"model"}
    assert counted.states == len(screened) - len(by_screen)  # no state read for a screened row
    for s, f in zip(screened, full):
        head, screen = headset.head(s.task), headset.screens[s.task]
        if s.decided_by == "model":  # the rest: exactly the full stack's rows
            assert (s.labels, s.scores, s.high_risk) == (f.labels, f.scores, f.high_risk)
        else:  # the screen's own calibrated n-gram decision, confident enough
            text = dict((p.id, p.text) for p in posts)[s.id]
            probs = screen.probabilities(head, text)
            assert s.labels == screen.decide(head, probs) and s.scores == {
                lab: round(float(x), 4) for lab, x in zip(head.labels, probs)}
            assert s.high_risk == head.flagged(probs)
    # An operating point above any confidence sends every post to the model: the full stack's rows.
    none = Analyzer(backend, AnalyzeConfig(tasks=tasks, style="heads", heads=str(screened_heads), screen=True,
                                           screen_threshold=1.01, explain=False)).run(posts)
    assert [(r.labels, r.scores, r.decided_by) for r in none] == [(r.labels, r.scores, "model") for r in full]


def test_the_screen_never_decides_against_high_risk():
    """A sure high-risk decision stands (and is flagged); a low-risk one, however sure, goes on to the model, so
    screening never lowers the flag's recall. Other tasks are decided at any label."""
    from mentalglm.heads.screen import TaskScreen

    head = load_heads().head("suicide_risk")
    screen = TaskScreen(np.ones(2), np.zeros(2), threshold=0.6)
    low, high = head.labels.index("低自杀风险"), head.labels.index("高自杀风险")
    sure_low, unsure_high, sure_high = (np.eye(2)[low] * 0.999 + np.eye(2)[high] * 0.001,
                                        np.eye(2)[high] * 0.55 + np.eye(2)[low] * 0.45,
                                        np.eye(2)[high] * 0.9 + np.eye(2)[low] * 0.1)
    assert screen.decide(head, sure_low) is None
    assert screen.decide(head, unsure_high) is None
    assert screen.decide(head, sure_high) == ["高自杀风险"] and head.flagged(sure_high)
    emotion = load_heads().head("emotion")
    sure = np.eye(len(emotion.labels))[emotion.labels.index("无情绪")] * 0.94 + 0.01
    assert TaskScreen(np.ones(6), np.zeros(6), threshold=0.6).decide(emotion, sure) == ["无情绪"]


def test_an_interrupted_screen_run_resumes_like_any_other(backend, screened_heads, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join([*POSTS, "周末朋友家里", "晚上天气路上", "今天学校"]) + "\n", encoding="utf-8")
    args = ["analyze", "--model", str(backend.path), "--heads", str(screened_heads), "--file", str(posts),
            "--tasks", "suicide_risk,emotion", "--no-explain", "--screen", "--threads", "1"]
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    assert main([*args, "--out", str(whole)]) == 0
    lines = whole.read_text(encoding="utf-8").splitlines()
    assert {json.loads(x)["decided_by"] for x in lines} == {"screen", "model"}
    cut.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20], encoding="utf-8")  # killed mid-line
    (tmp_path / "cut.jsonl.meta.json").write_text(
        (tmp_path / "whole.jsonl.meta.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    key = lambda r: (r["id"], r["task"])  # noqa: E731
    resumed = sorted((json.loads(x) for x in cut.read_text(encoding="utf-8").splitlines()), key=key)
    expected = sorted((json.loads(x) for x in lines), key=key)
    assert [(key(r), r["labels"], r["decided_by"]) for r in resumed] == \
        [(key(r), r["labels"], r["decided_by"]) for r in expected]
    # the screen is part of a run's settings: resuming without it is refused
    assert main([*args[:-3], "--threads", "1", "--out", str(cut), "--resume"]) != 0


def test_api_screens_when_asked_or_when_the_server_does(tiny_llama, screened_heads, tmp_path):  # noqa: F811
    body = {"text": POSTS[1], "explain": False}
    with serve(tiny_llama, tmp_path, prompt_style="heads", heads=str(screened_heads),
               tasks=("suicide_risk", "emotion")) as (_, client):
        by = lambda out: {a["decided_by"] for a in out["results"][0]["analyses"]}  # noqa: E731
        assert by(client.post("/v1/analyze", json=body).json()) == {"model"}
        assert "screen" in by(client.post("/v1/analyze", json={**body, "screen": True}).json())
        for screen in (True, False):  # an upload job too
            job = client.post("/v1/jobs", files={"file": ("p.csv", f"text\n{POSTS[1]}\n".encode())},
                              data={"explain": "false", "screen": str(screen).lower()}).json()
            wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "done", what="the job")
            assert client.get(f"/v1/jobs/{job['id']}").json()["screen"] is screen
            rows = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
            assert ("screen" in {r["decided_by"] for r in rows}) is screen
    with serve(tiny_llama, tmp_path / "s", prompt_style="heads", heads=str(screened_heads), screen=True,
               tasks=("suicide_risk", "emotion")) as (_, client):
        assert "screen" in by(client.post("/v1/analyze", json=body).json())
        assert by(client.post("/v1/analyze", json={**body, "screen": False}).json()) == {"model"}


def test_rebuilt_heads_keep_the_explainer(explained_heads, heads_dir, tmp_path):
    """`heads train --ship` carries the packaged explainer into the new heads folder (it reads no heads' state)."""
    import shutil

    from mentalglm.heads.explainer import carry_explainer

    rebuilt = shutil.copytree(heads_dir, tmp_path / "rebuilt")
    assert load_heads(rebuilt).explainer is None
    assert carry_explainer(explained_heads, rebuilt) and not carry_explainer(heads_dir, tmp_path / "none")
    kept = load_heads(rebuilt)  # every file, the explainer's included, checked against the manifest
    assert kept.explainer.info == load_heads(explained_heads).explainer.info
