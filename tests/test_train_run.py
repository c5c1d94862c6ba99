"""LoRA training on a tiny random Qwen2: the loss falls, two stages chain (merge and continue), an interrupted
run resumes to the same weights, the run folder is complete, and the exported PEFT adapter loads in HFBackend."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from mentalglm.llm.base import GenConfig
from mentalglm.llm.hf import HFBackend
from mentalglm.prompts import build_request
from mentalglm.tasks import get_task
from mentalglm.train import load_config, run_training
from mentalglm.train.trainer import TrainError

EMOTION = get_task("emotion")
POSTS = {"积极": "今天心情很好，谢谢大家", "愤怒": "他们太过分了，我很生气", "悲伤": "考试失败了，我好难过",
         "恐惧": "明天要手术，我好害怕", "惊奇": "真没想到会这样", "无情绪": "今天下午三点开会"}


def _alpaca(folder, task_file="emotion.jsonl", copies=2, language="zh"):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(copies):
        for label, post in POSTS.items():
            if language == "zh":
                rows.append({"instruction": EMOTION.instruction_prompt(post + "。" * i), "input": "",
                             "output": EMOTION.render_answer([label], f"帖子中写道“{post}”。")})
            else:
                rows.append({"instruction": f'Consider this post: "{post}" Question: Is the poster stressed?',
                             "input": "", "output": f"Yes. Reasoning: {label}."})
    (folder / task_file).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    return {"zh": _alpaca(root / "zh"), "en": _alpaca(root / "en", "english.jsonl", language="en")}


def _config(model_dir, out, data, *extra):
    # fp32: "auto" picks bf16 on CPUs with AMX, whose rounding the tiny model's few steps do not survive.
    return load_config(None, [f"model={model_dir}", f"output_dir={out}", f"stage2.data.path={data['zh']}", "dtype=fp32",
                              "stage2.data.tasks=[]", "stage2.data.eval_per_task=0", "stage2.batch_size=4",
                              "stage2.learning_rate=1e-2", "stage2.logging_steps=1", "stage2.save_steps=50",
                              "stage2.warmup_ratio=0", "lora.r=4", "lora.alpha=8", "lora.dropout=0.1", *extra])


def _losses(run_dir, stage="stage2"):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r.get("stage") == stage and "loss" in r}


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_loss_falls_and_run_folder_is_complete(tiny_hf_model_dir, tmp_path, data):
    cfg = _config(tiny_hf_model_dir, tmp_path / "run", data, "stage2.max_steps=8")
    run = run_training(cfg)
    losses = _losses(run)
    assert sorted(losses) == list(range(1, 9))
    assert losses[8] < 0.8 * losses[1] and losses[7] + losses[8] < losses[1] + losses[2], losses
    for name in ("config.yaml", "environment.json", "data.json", "metrics.jsonl", "metrics.png",
                 "stage2/DONE", "export/adapter/adapter_config.json", "export/adapter/adapter_model.safetensors"):
        assert (run / name).is_file(), name
    env = json.loads((run / "environment.json").read_text())
    assert env["libraries"]["transformers"] and env["libraries"]["peft"]
    info = json.loads((run / "data.json").read_text())["stage2"]
    assert info["records"] == 12 and info["per_task"] == {"emotion": 12} and len(info["records_sha256"]) == 64
    assert list(info["files"]) == [str(data["zh"] / "emotion.jsonl")]
    with pytest.raises(TrainError, match="--resume"):  # a finished run is not overwritten by accident
        run_training(cfg)


class _Interrupt(TrainerCallback):
    """Stops the process like Ctrl-C right after the checkpoint of ``step`` is written."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tiny_hf_model_dir, tmp_path, data):
    steps = ["stage2.max_steps=6", "stage2.save_steps=3"]
    whole = run_training(_config(tiny_hf_model_dir, tmp_path / "whole", data, *steps))
    cut_cfg = _config(tiny_hf_model_dir, tmp_path / "cut", data, *steps)
    with pytest.raises(KeyboardInterrupt):
        run_training(cut_cfg, callbacks=[_Interrupt(3)])
    assert not (tmp_path / "cut" / "stage2" / "DONE").exists()
    cut = run_training(cut_cfg, resume=True)
    assert _losses(cut) == pytest.approx(_losses(whole), rel=1e-5)
    a, b = _adapter(whole / "export" / "adapter"), _adapter(cut / "export" / "adapter")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_a_longer_recipe_trains_a_finished_run_on(tiny_hf_model_dir, tmp_path, data):
    """`--resume` with more steps (or epochs) on a finished run continues from its last checkpoint instead of
    skipping the stage as done or starting over."""
    short = _config(tiny_hf_model_dir, tmp_path / "run", data, "stage2.max_steps=4", "stage2.save_steps=2")
    run = run_training(short)
    first = {k: v.clone() for k, v in _adapter(run / "export" / "adapter").items()}  # the file is rewritten
    assert run_training(short, resume=True) == run and sorted(_losses(run)) == [1, 2, 3, 4]  # same length: done
    run_training(_config(tiny_hf_model_dir, tmp_path / "run", data, "stage2.max_steps=8", "stage2.save_steps=2"),
                 resume=True)
    assert sorted(_losses(run)) == list(range(1, 9))  # steps 1-4 were not trained again
    assert json.loads((run / "stage2" / "DONE").read_text())["length"]["max_steps"] == 8
    longer = _adapter(run / "export" / "adapter")
    assert any(not torch.equal(first[k], longer[k]) for k in first)
    with pytest.raises(TrainError, match="new output_dir"):  # shorter: the trained weights cannot be undone
        run_training(short, resume=True)


@pytest.mark.parametrize("init", ["continue", "merge"])
def test_two_stages_chain(tiny_hf_model_dir, tmp_path, data, init):
    cfg = _config(tiny_hf_model_dir, tmp_path / init, data, "stage1.enabled=true", f"stage1.data.path={data['en']}",
                  "stage1.data.tasks=[]", "stage1.data.eval_per_task=0", "stage1.max_steps=3", "stage1.batch_size=4",
                  "stage1.learning_rate=1e-2", "stage1.logging_steps=1", "stage2.max_steps=3", f"stage2.init={init}")
    run = run_training(cfg)
    assert sorted(_losses(run, "stage1")) == [1, 2, 3] and sorted(_losses(run, "stage2")) == [1, 2, 3]
    s1, s2 = _adapter(run / "stage1" / "adapter"), _adapter(run / "stage2" / "adapter")
    final = _adapter(run / "export" / "adapter")
    key = next(k for k in s1 if "q_proj.lora_A" in k)
    if init == "continue":  # one adapter trained further
        assert not torch.equal(s1[key], s2[key]) and torch.equal(final[key], s2[key])
        assert final[key].shape[0] == 4
    else:  # a fresh stage-2 adapter on the merged base; the export is their exact sum, rank 4 + 4
        assert final[key].shape[0] == 8
        _assert_export_equals_merge_then_stage2(tiny_hf_model_dir, run)


def _assert_export_equals_merge_then_stage2(model_dir, run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7, 300, 12]])

    def base():
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)

    with torch.no_grad():
        merged = PeftModel.from_pretrained(base(), str(run / "stage1" / "adapter")).merge_and_unload()
        expected = PeftModel.from_pretrained(merged, str(run / "stage2" / "adapter")).eval()(ids).logits
        got = PeftModel.from_pretrained(base(), str(run / "export" / "adapter")).eval()(ids).logits
        plain = base().eval()(ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapters do change the model
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def trained_run(tiny_hf_model_dir, tmp_path_factory, data):
    """An adapter trained until the tiny model writes the C-IMHI answer format (30 steps)."""
    return run_training(_config(tiny_hf_model_dir, tmp_path_factory.mktemp("trained") / "run", data,
                                "stage2.max_steps=30"))


SAD_REQUEST = build_request(EMOTION, POSTS["悲伤"], "instruction")
GREEDY = GenConfig(max_tokens=24)


def test_exported_adapter_answers_in_hf_backend(tiny_hf_model_dir, trained_run):
    """Through HFBackend, as `analyze --adapter RUN/export/adapter` loads it, the adapter writes the learned
    label sentence; the base model does not."""
    with HFBackend(str(tiny_hf_model_dir), adapter=str(trained_run / "export" / "adapter")) as tuned:
        text = tuned.generate([SAD_REQUEST], GREEDY)[0].text
    assert text.startswith(EMOTION.label_sentence(["悲伤"])), text
    with HFBackend(str(tiny_hf_model_dir)) as plain:
        assert not plain.generate([SAD_REQUEST], GREEDY)[0].text.startswith("这篇帖子")


def test_analyze_asks_a_trained_adapter_with_its_training_prompt(tiny_hf_model_dir, trained_run, tmp_path, capsys):
    """`analyze --adapter RUN/export/adapter` without --prompt-style uses the instruction prompt the run was trained
    on (the zero-shot prompt would make the adapter answer off-format); other adapters keep the default."""
    import json

    from mentalglm.cli import main
    from mentalglm.llm.registry import trained_prompt_style

    from mentalglm.llm.manifest import MANIFEST

    for adapter in (trained_run, trained_run / "export" / "adapter", trained_run / "export" / "adapter.gguf"):
        assert trained_prompt_style(str(adapter)) == "instruction", adapter
    assert (trained_run / MANIFEST).is_file() and (trained_run / "export" / "adapter" / MANIFEST).is_file()
    assert trained_prompt_style(str(tmp_path)) is None
    out = tmp_path / "out.jsonl"
    assert main(["analyze", "--model", str(tiny_hf_model_dir), "--adapter", str(trained_run / "export" / "adapter"),
                 "--tasks", "emotion", "--no-explain", "--out", str(out), POSTS["悲伤"]]) == 0
    row = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert row["labels"] == ["悲伤"], row


def test_gguf_adapter_answers_in_llamacpp_backend(tiny_hf_model_dir, trained_run, tmp_path):
    """`mentalglm train export-gguf RUN` writes export/adapter.gguf; llama.cpp runs the same base as a GGUF with
    `--adapter RUN` and writes the same learned answer as transformers does."""
    from mentalglm.cli import main
    from mentalglm.llm.llamacpp import LlamaCppBackend
    from mentalglm.train.export import ExportError, converter_dir

    try:
        converter_dir(download=False)
    except ExportError:
        pytest.skip("llama.cpp's convert_lora_to_gguf.py is not cached; run `mentalglm train export-gguf RUN` "
                    "once with network access to PyPI (it downloads the llama-cpp-python sdist)")
    assert main(["train", "export-gguf", str(trained_run), "--outtype", "f32"]) == 0
    assert (trained_run / "export" / "adapter.gguf").is_file()
    base = gguf_from_tiny_qwen2(tiny_hf_model_dir, tmp_path / "tiny-qwen2.gguf")
    with HFBackend(str(tiny_hf_model_dir), adapter=str(trained_run / "export" / "adapter")) as hf:
        expected = hf.generate([SAD_REQUEST], GREEDY)[0].text
    tuned = LlamaCppBackend(base, lora_path=str(trained_run), n_ctx=512)
    plain = LlamaCppBackend(base, n_ctx=512)
    try:
        got = tuned.generate([SAD_REQUEST], GREEDY)[0].text
        assert got.startswith(EMOTION.label_sentence(["悲伤"])), got
        # same tokens; transformers shows a character cut by max_tokens as U+FFFD, llama.cpp holds it back
        assert got.startswith(expected.rstrip("\ufffd")) and len(got) >= len(expected) - 1
        assert not plain.generate([SAD_REQUEST], GREEDY)[0].text.startswith("这篇帖子")
        # decoded several at a time (--parallel), every sequence gets the adapter
        batched = LlamaCppBackend(base, lora_path=str(trained_run), n_ctx=512, parallel=2)
        try:
            assert [g.text for g in batched.generate([SAD_REQUEST, SAD_REQUEST], GREEDY)] == [got, got]
        finally:
            batched.close()
    finally:
        tuned.close()
        plain.close()


def gguf_from_tiny_qwen2(model_dir, path):
    """The tiny HF Qwen2 written as a qwen2-architecture F32 GGUF (llama.cpp's converter rejects the tiny
    tokenizer's unknown pre-tokenizer hash, so the few tensors are mapped here)."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    from tiny_models import add_gguf_tokenizer

    cfg = AutoConfig.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    weights = load_file(str(model_dir / "model.safetensors"))
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_context_length(512)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None)
                         else cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    add_gguf_tokenizer(w, tok.backend_tokenizer)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"].numpy())
    for b in range(cfg.num_hidden_layers):
        for hf_name, gg_name in names.items():
            for kind in ("weight", "bias"):
                t = weights.get(f"model.layers.{b}.{hf_name}.{kind}")
                if t is not None:
                    w.add_tensor(f"blk.{b}.{gg_name}.{kind}", t.numpy())
    w.add_tensor("output_norm.weight", weights["model.norm.weight"].numpy())
    w.add_tensor("output.weight", weights["lm_head.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_target_module_mismatch_lists_the_linear_layers(tiny_hf_model_dir, tmp_path, data):
    with pytest.raises(TrainError) as err:
        run_training(_config(tiny_hf_model_dir, tmp_path / "a", data, "lora.target_modules=[query_key_value]"))
    assert "['query_key_value'] do not exist in Qwen2ForCausalLM" in str(err.value)
    assert "q_proj" in str(err.value) and "down_proj" in str(err.value)
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(TrainError, match="no layout in lora.layouts fits Qwen2ForCausalLM"):
        run_training(_config(tiny_hf_model_dir, tmp_path / "a", data,
                             "lora.layouts={glm4-remote-code: [query_key_value]}"))


def test_out_of_memory_gets_advice():
    from mentalglm.train.config import StageSettings
    from mentalglm.train.trainer import is_out_of_memory, oom_advice

    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 123 bytes"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    stage = load_config(None, []).stage2
    assert isinstance(stage, StageSettings)
    advice = oom_advice("stage2", stage, 512)
    assert "stage2.batch_size=2 stage2.grad_accum=2" in advice and "--resume" in advice


def test_a_stage_from_the_corpora_names_its_files_inside_the_data_folder(tmp_path, monkeypatch):
    """The run's data.json (and the shipped explainer's manifest) must read the same on every machine."""
    from mentalglm.train.config import DataSettings
    from mentalglm.train.stages import _source_files

    for split in ("train", "val"):
        path = tmp_path / "imhi" / "train" / "DR" / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"query,gpt-3.5-turbo\n{split},x\n", encoding="utf-8")
    monkeypatch.setenv("MENTALGLM_DATA", str(tmp_path))
    files = _source_files(DataSettings(kind="imhi", tasks=["DR"], splits=["train"]))
    assert sorted(files) == ["imhi/train/DR/train.csv", "imhi/train/DR/val.csv"]
    assert all(len(sha) == 64 for sha in files.values())
