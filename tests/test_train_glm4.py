"""The GLM-4 recipes (configs/mentalglm-9b.yaml, mentalglm-9b-chat.yaml) end to end on a tiny random model of the
GLM-4 architecture (transformers' native Glm4ForCausalLM): both stages, gradient checkpointing, the precision the
recipe's `dtype: auto` picks on this machine (bf16 only where the CPU computes it, else float32), LoRA on the
target modules `auto` chooses for the native layout, and the export the recipe asks for (PEFT adapter + merged).

Every setting comes from the recipe file; the overrides are only where the weights and the data are and how many
steps to take."""

import json

import pytest
import torch
from transformers import TrainerCallback

from mentalglm.train import load_config, run_training
from mentalglm.train.trainer import pick_dtype

from .test_train_run import _alpaca
from .tiny_models import build_tiny_glm4_model


@pytest.fixture(scope="module")
def glm4_dir(tmp_path_factory):
    return build_tiny_glm4_model(tmp_path_factory.mktemp("tiny-glm4") / "tiny-glm4")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-glm4")
    return {"zh": _alpaca(root / "zh"), "en": _alpaca(root / "en", "english.jsonl", language="en")}


@pytest.mark.parametrize("recipe", ["configs/mentalglm-9b.yaml", "configs/mentalglm-9b-chat.yaml"])
def test_glm4_recipe_runs_end_to_end(recipe, glm4_dir, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = load_config(recipe, [f"model={glm4_dir}", f"output_dir={tmp_path / 'run'}",
                               f"stage1.data.path={data['en']}", "stage1.data.tasks=[]", "stage1.data.eval_per_task=0",
                               f"stage2.data.path={data['zh']}", "stage2.data.tasks=[]", "stage2.data.eval_per_task=0",
                               "stage1.max_steps=2", "stage2.max_steps=2",
                               "stage1.logging_steps=1", "stage2.logging_steps=1"])
    # the recipe's own settings, untouched
    assert cfg.gradient_checkpointing and cfg.trust_remote_code and cfg.dtype == "auto"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.1) and cfg.stage2.init == "continue"
    assert cfg.stage1.enabled and cfg.stage1.learning_rate == cfg.stage2.learning_rate == 5e-4
    assert (cfg.stage2.batch_size, cfg.stage2.grad_accum) == (4, 4) and cfg.export.merged and not cfg.export.gguf

    seen = []

    class Watch(TrainerCallback):  # what the Trainer of each stage was really given
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.append({"bf16": args.bf16, "fp16": args.fp16, "checkpointing": model.is_gradient_checkpointing,
                         "dtype": next(p for p in model.parameters()).dtype})

    run = run_training(cfg, callbacks=[Watch()])
    assert len(seen) == 2 and all(s["checkpointing"] for s in seen)  # both stages, gradient checkpointing on

    losses = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for stage in ("stage1", "stage2"):  # both stages trained, with finite losses
        values = [r["loss"] for r in losses if r.get("stage") == stage and "loss" in r]
        assert len(values) == 2 and all(v == v and v < 1e4 for v in values), (stage, values)
    adapter = json.loads((run / "export" / "adapter" / "adapter_config.json").read_text())
    # `target_modules: auto`: the remote-code layout (query_key_value) is absent, so the native one is chosen
    assert sorted(adapter["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 32)
    # precision: bf16 where the hardware computes it, else the float32 fallback (never fp16 on a CPU)
    expected = "bf16" if torch.cuda.is_available() or _cpu_bf16() else "fp32"
    assert pick_dtype("auto") == expected
    for s in seen:
        assert (s["bf16"], s["fp16"]) == (expected == "bf16", False)
        assert s["dtype"] == (torch.bfloat16 if expected == "bf16" else torch.float32)
    data = json.loads((run / "data.json").read_text())  # the run folder says which splits each stage read
    assert data["stage1"]["splits_read"] == data["stage2"]["splits_read"] == {"training": ["train"],
                                                                              "evaluation": ["validation"]}
    # the export: the adapter loads on the base, and the merged folder is one model giving the same logits
    ids = torch.tensor([[5, 17, 42, 99, 7, 300, 12]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(str(glm4_dir), dtype=torch.float32)
        tuned = PeftModel.from_pretrained(base, str(run / "export" / "adapter")).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(run / "export" / "merged"), dtype=torch.float32)
        assert type(merged).__name__ == "Glm4ForCausalLM"
        torch.testing.assert_close(merged.eval()(ids).logits, tuned, rtol=2e-3, atol=2e-3)


def _cpu_bf16() -> bool:
    from mentalglm.llm.hf import _cpu_has_bf16

    return _cpu_has_bf16()
