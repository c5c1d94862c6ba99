"""The LoRA classifier (train/classifier.py, heads/classifier.py): it learns, an interrupted run resumes to the same
weights, llama.cpp with its GGUF adapter reads the state it was trained on, and `analyze` reads one state a post from
it for every task while the base model writes the explanations."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mentalglm.analyze import AnalyzeConfig, Analyzer
from mentalglm.heads import HeadsError, load_heads
from mentalglm.heads.classifier import ClassifierRecipe, head_weights, held_out, install_classifier, split_training
from mentalglm.inputs import Post
from mentalglm.llm.llamacpp import LlamaCppBackend
from mentalglm.tasks import get_task
from mentalglm.train.classifier import export_classifier, train_classifier
from serve_helpers import tiny_llama  # noqa: F401  (fixture)
from synthetic_corpora import write_corpora
from tiny_heads import build_tiny_heads
from tiny_models import build_tiny_lora_gguf

POSTS = ["最近工作不想活了路上", "周末很开心朋友", "今天开会"]
TASKS = ("suicide_risk", "emotion")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("data"), n=60)


def recipe(model_dir) -> ClassifierRecipe:
    return ClassifierRecipe(base=str(model_dir), tasks=TASKS, posts={}, epochs=4, batch_size=8, dropout=0.0,
                            lr=3e-3, head_lr=1e-2, warmup=2, save_every=3, r=4, alpha=8, second=None)


@pytest.fixture(scope="module")
def trained(tiny_hf_model_dir, data, tmp_path_factory):
    import torch

    run = tmp_path_factory.mktemp("cls") / "run"
    torch.manual_seed(0)
    train_classifier(recipe(tiny_hf_model_dir), run, root=data, threads=1)
    return run


def test_the_held_out_posts_never_reach_the_lora_and_the_loss_falls(trained, data):
    for task in TASKS:
        part, held = split_training(recipe("x"), task, data)
        assert held and part and not {e.id for e in held} & {e.id for e in part}
        assert [e.id for e in held] == [e.id for e in held_out(trained, task, data)]
    losses = [json.loads(line)["loss"] for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    weights = head_weights(trained)
    assert set(weights) == set(TASKS) and weights["emotion"][0].shape == (6, 128)


def test_an_interrupted_run_resumes_to_the_same_weights(trained, tiny_hf_model_dir, data, tmp_path):
    import torch

    run = tmp_path / "run"
    torch.manual_seed(0)
    assert train_classifier(recipe(tiny_hf_model_dir), run, root=data, threads=1, max_steps=7) is None
    with pytest.raises(FileExistsError, match="--resume"):
        train_classifier(recipe(tiny_hf_model_dir), run, root=data)
    with pytest.raises(ValueError, match="another recipe"):
        train_classifier(replace(recipe(tiny_hf_model_dir), lr=1e-3), run, resume=True, root=data)
    train_classifier(recipe(tiny_hf_model_dir), run, resume=True, root=data, threads=1)
    for task, (w, b) in head_weights(run).items():
        assert np.allclose(w, head_weights(trained)[task][0], atol=1e-5)
        assert np.allclose(b, head_weights(trained)[task][1], atol=1e-5)


def test_llama_cpp_with_the_gguf_adapter_reads_the_state_the_classifier_learned(trained, tiny_hf_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from mentalglm.train.export import ExportError, converter_dir
    from test_train_run import gguf_from_tiny_qwen2

    try:
        converter_dir(download=False)
    except ExportError:
        pytest.skip("llama.cpp's convert_lora_to_gguf.py is not cached; run `mentalglm train export-gguf RUN` "
                    "once with network access to PyPI (it downloads the llama-cpp-python sdist)")
    adapter = export_classifier(trained)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_hf_model_dir))
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny_hf_model_dir), dtype=torch.float32),
                                      str(trained / "final" / "adapter")).eval()
    with torch.no_grad():
        want = [model(input_ids=torch.tensor([tokenizer(p).input_ids])).last_hidden_state[0, -1].numpy()
                for p in POSTS]
    base = gguf_from_tiny_qwen2(tiny_hf_model_dir, tmp_path / "tiny-qwen2.gguf")
    tuned, plain = LlamaCppBackend(base, lora_path=str(adapter), n_ctx=512), LlamaCppBackend(base, n_ctx=512)
    try:
        got, untuned = tuned.text_states(POSTS), plain.text_states(POSTS)
        for g, u, w in zip(got, untuned, want):  # llama.cpp and torch differ by rounding (about 1e-3 relative)
            assert np.abs(g - w).max() < 0.1 * np.abs(u - w).max()  # the adapter's change is read, not rounding
        with pytest.raises(ValueError, match="empty text"):
            tuned.text_states([""])
    finally:
        tuned.close()
        plain.close()


def test_analyze_reads_one_classifier_state_a_post_for_every_task(tiny_llama, tiny_gguf_path, tmp_path):  # noqa: F811
    adapter = build_tiny_lora_gguf(tmp_path / "cls.gguf", scale=4.0)
    reader = LlamaCppBackend(tiny_gguf_path, lora_path=str(adapter), n_ctx=512, n_threads=1)
    folder = build_tiny_heads(reader, tmp_path / "heads", tasks=TASKS, pool="post",
                              base={"name": "tiny", "sha256": _sha(tiny_gguf_path)})
    install_classifier(adapter, folder, str(tiny_gguf_path), {"recipe": {}})
    headset = load_heads(folder)
    assert headset.classifier is not None and {headset.head(t).pool for t in TASKS} == {"post"}
    want = {(p, t): headset.head(t).probabilities(p, s) for p, s in zip(POSTS, reader.text_states(POSTS))
            for t in TASKS}
    reader.close()

    class Counted:  # the classifier, counting the posts whose state it reads
        def __init__(self, inner):
            self.inner, self.read = inner, []

        def text_states(self, texts, max_tokens=None):
            self.read += list(texts)
            return self.inner.text_states(texts, max_tokens)

    analyzer = Analyzer(tiny_llama, AnalyzeConfig(tasks=TASKS, style="heads", heads=str(folder), max_tokens=8))
    assert analyzer.post_model is not tiny_llama and analyzer.post_model.path == tiny_gguf_path
    analyzer.post_model = counted = Counted(analyzer.post_model)
    rows = analyzer.run([Post(f"p{i}", p) for i, p in enumerate(POSTS)])
    assert sorted(counted.read) == sorted(POSTS)  # one read a post, not one a (post, task)
    for row in rows:
        post = POSTS[int(row.id[1:])]
        assert np.allclose([row.scores[lab] for lab in get_task(row.task).label_names], want[(post, row.task)],
                           atol=1e-4)
        assert row.raw.startswith(get_task(row.task).label_sentence(row.labels))  # the base wrote after the label

    (folder / "classifier" / "adapter.gguf").write_bytes(b"changed")
    with pytest.raises(HeadsError, match="classifier/adapter.gguf"):
        load_heads(folder)


def _sha(path):
    from mentalglm.heads import file_sha256

    return file_sha256(path)


def test_a_state_part_fitted_on_the_trained_heads_scores_is_shipped_as_one_linear_model_of_the_state():
    from mentalglm.heads.build import _through
    from mentalglm.heads.model import StateScorer

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 16)), rng.normal(size=3)
    part = StateScorer(rng.normal(size=3), rng.uniform(0.5, 2, size=3), rng.normal(size=(3, 3)), rng.normal(size=3))
    folded = _through(part, weight, bias)
    for state in rng.normal(size=(4, 16)) * 100:
        assert np.allclose(folded.scores(state), part.scores(weight @ state + bias))


def test_a_run_started_from_a_finished_one_starts_at_its_weights(trained, tiny_hf_model_dir, data, tmp_path):
    from safetensors.numpy import load_file

    more = replace(recipe(tiny_hf_model_dir), init=str(trained), epochs=1)
    assert train_classifier(more, tmp_path / "more", root=data, threads=1, max_steps=0) is None
    saved = load_file(str(tmp_path / "more" / "checkpoint" / "trainable.safetensors"))
    for task, (w, b) in head_weights(trained).items():
        assert np.allclose(saved[f"heads.{task}.weight"], w) and np.allclose(saved[f"heads.{task}.bias"], b)
    assert [e.id for e in held_out(tmp_path / "more", "emotion", data)] == \
        [e.id for e in held_out(trained, "emotion", data)]  # the same posts stay out


def test_a_recipe_with_a_second_pass_trains_it_from_the_first_and_its_heads_read_the_second(
        tiny_hf_model_dir, data, tmp_path):
    from mentalglm.heads.classifier import last_pass, load_recipe
    from mentalglm.train.classifier import ensure_trained

    run = tmp_path / "two"
    two = replace(recipe(tiny_hf_model_dir), epochs=1, second={"lr": 1e-3, "warmup": 1})
    assert train_classifier(two, run, root=data, threads=1, max_steps=0) is None  # a started run: its recipe.json
    final = ensure_trained(run, root=data, threads=1)
    assert final == run / "second" / "final" and last_pass(run) == run / "second"
    second = load_recipe(run / "second")
    assert second.init == str(run) and second.lr == 1e-3 and second.second is None
    assert (run / "final" / "heads.safetensors").is_file()  # the first pass finished first
    assert not np.allclose(head_weights(run)["emotion"][0], _first_heads(run)["emotion.weight"])


def test_a_new_run_starts_with_the_recipe_asked_for_and_a_started_one_keeps_its_own(tiny_hf_model_dir, data,
                                                                                     tmp_path):
    from mentalglm.commands.heads import CLASSIFIER_RECIPES
    from mentalglm.heads.classifier import RECIPES, load_recipe
    from mentalglm.train.classifier import ensure_trained

    asked = replace(recipe(tiny_hf_model_dir), epochs=1)
    ensure_trained(tmp_path / "new", root=data, threads=1, recipe=asked)
    assert load_recipe(tmp_path / "new") == asked
    ensure_trained(tmp_path / "new", root=data, threads=1, recipe=replace(asked, r=8))  # finished: kept as it is
    assert load_recipe(tmp_path / "new") == asked
    assert CLASSIFIER_RECIPES == tuple(sorted(RECIPES))  # what `heads train --classifier-recipe` offers


def _first_heads(run):
    from safetensors.numpy import load_file

    return load_file(str(run / "final" / "heads.safetensors"))


def test_a_folder_may_read_some_tasks_from_its_classifier_and_the_others_from_the_base(
        tiny_llama, tiny_gguf_path, tmp_path):  # noqa: F811
    from mentalglm.heads import TaskHead
    from mentalglm.heads.build import write_heads_folder
    from mentalglm.prompts import heads_request

    adapter = build_tiny_lora_gguf(tmp_path / "cls.gguf", scale=4.0)
    reader = LlamaCppBackend(tiny_gguf_path, lora_path=str(adapter), n_ctx=512, n_threads=1)
    risk = build_tiny_heads(reader, tmp_path / "risk", tasks=("suicide_risk",), pool="post")
    emotion = build_tiny_heads(tiny_llama, tmp_path / "emotion", tasks=("emotion",))
    heads = {"suicide_risk": TaskHead.load(risk, "suicide_risk"), "emotion": TaskHead.load(emotion, "emotion")}
    folder = write_heads_folder(tmp_path / "mixed", heads, {"name": "mixed", "base": {
        "name": "tiny", "sha256": _sha(tiny_gguf_path)}})
    install_classifier(adapter, folder, str(tiny_gguf_path), {"recipe": {}})
    want = {("suicide_risk", p): heads["suicide_risk"].probabilities(p, s)
            for p, s in zip(POSTS, reader.text_states(POSTS))}
    want |= {("emotion", p): heads["emotion"].probabilities(p, tiny_llama.prompt_state(
        heads_request(get_task("emotion"), p))) for p in POSTS}
    reader.close()
    rows = Analyzer(tiny_llama, AnalyzeConfig(tasks=TASKS, style="heads", heads=str(folder), explain=False)).run(
        [Post(f"p{i}", p) for i, p in enumerate(POSTS)])
    for row in rows:
        got = [row.scores[lab] for lab in get_task(row.task).label_names]
        assert np.allclose(got, want[(row.task, POSTS[int(row.id[1:])])], atol=1e-4), row.task


def test_a_mixed_recipe_fits_each_task_on_the_states_of_the_model_it_reads(trained, data, tmp_path):
    """`heads train --classifier RUN --classifier-tasks suicide_risk`: suicide risk learns from the classifier's
    states of the posts it held out, through its trained head; emotion from the base's states of its own sample; a
    kept head that reads other states than the recipe's is refused."""
    from mentalglm.heads.build import STATE_FOLDERS, fit_heads, keep_head, write_heads_folder
    from mentalglm.heads.features import StateCache
    from mentalglm.heads.recipe import Recipe

    mixed = Recipe(tasks=TASKS, classifier=str(trained), classifier_tasks=("suicide_risk",), folds=3,
                   state_posts={"emotion": 40}, validation_sample={"suicide_risk": 20, "emotion": 20})
    assert [mixed.reader(t) for t in TASKS] == ["classifier", "base"]
    assert [mixed.pool(t) for t in TASKS] == ["post", "last"]
    assert [e.id for e in mixed.state_examples("suicide_risk", data)] == \
        [e.id for e in held_out(trained, "suicide_risk", data)]
    assert len(mixed.state_examples("emotion", data)) == 40
    rng = np.random.default_rng(0)
    caches = {reader: StateCache(tmp_path / folder, {"reader": reader}) for reader, folder in STATE_FOLDERS.items()}
    width = {"classifier": 128, "base": 8}  # the tiny classifier's hidden size; any other for the base
    for task in TASKS:
        cache, pool = caches[mixed.reader(task)], mixed.pool(task)
        for split, examples in (("train", mixed.state_examples(task, data)),
                                ("validation", mixed.validation_examples(task, data))):
            states = rng.normal(size=(len(examples), width[mixed.reader(task)]))
            cache.add(task, split, [e.id for e in examples], states, pool=pool)
    heads, reports = fit_heads(mixed, caches, data)
    assert heads["suicide_risk"].pool == "post" and heads["emotion"].pool == "last"
    assert heads["suicide_risk"].state.coef.shape[1] == 128 and heads["emotion"].state.coef.shape[1] == 8
    assert reports["suicide_risk"]["state_posts"] == len(held_out(trained, "suicide_risk", data))
    weight, _ = head_weights(trained)["suicide_risk"]
    x, v = rng.normal(size=128), rng.normal(size=128)
    v -= weight.T @ np.linalg.lstsq(weight.T, v, rcond=None)[0]  # a change of the state its trained head ignores
    assert np.allclose(heads["suicide_risk"].state.scores(x), heads["suicide_risk"].state.scores(x + 50 * v))
    assert not np.allclose(heads["emotion"].state.scores(x[:8]), heads["emotion"].state.scores(x[:8] + v[:8]))
    earlier = write_heads_folder(tmp_path / "earlier", {"suicide_risk": heads["suicide_risk"]}, {"name": "e"})
    on_base = replace(mixed, classifier_tasks=("emotion",))  # suicide risk reads the base: a head of the classifier
    with pytest.raises(ValueError, match="pool 'post', this recipe 'last'"):  # cannot be kept for it
        keep_head(on_base, caches["base"], "suicide_risk", data, earlier)


def test_heads_train_refuses_a_block_with_the_classifier_and_unknown_tasks_before_any_work(capsys, tmp_path):
    from mentalglm.cli import main

    assert main(["heads", "train", "--out", str(tmp_path), "--layers", "16"]) == 2
    assert "--classifier none" in capsys.readouterr().err  # the default build reads the classifier for two tasks
    assert main(["heads", "train", "--out", str(tmp_path), "--classifier-tasks", "suicide_risk,moods"]) == 2
    assert "moods" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained or read
