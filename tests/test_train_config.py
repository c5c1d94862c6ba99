"""Training recipes: overrides reach nested keys, and every mistake names the key and the valid choices."""

from pathlib import Path

import pytest

from mentalglm.cli import main
from mentalglm.train.config import ConfigError, describe, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("recipe", ["cpu-0.5b", "cpu-1.5b", "mentalglm-9b", "mentalglm-9b-chat"])
def test_shipped_recipes_load(recipe):
    cfg = load_config(CONFIGS / f"{recipe}.yaml")
    assert cfg.name == recipe
    assert cfg.run_dir() == Path("runs/train") / recipe
    assert cfg.stage2.data.tasks and cfg.stage2.init in ("merge", "continue")


def test_glm_recipes_cover_both_glm4_layouts():
    for recipe in ("mentalglm-9b", "mentalglm-9b-chat"):
        cfg = load_config(CONFIGS / f"{recipe}.yaml")
        layouts = list(cfg.lora.layouts.values())
        assert ["query_key_value"] in layouts  # remote-code GLM-4
        assert any({"q_proj", "k_proj", "v_proj"} <= set(m) for m in layouts)  # native -hf GLM-4
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.1)  # official GLM-4 LoRA defaults
        assert cfg.stage1.enabled and cfg.stage1.data.kind == "imhi"


def test_overrides_set_nested_keys_with_yaml_values(tmp_path):
    cfg = load_config(CONFIGS / "cpu-0.5b.yaml", ["stage2.epochs=2", "stage2.data.per_task=7",
                                                  "lora.target_modules=[q_proj, v_proj]", "stage1.enabled=true",
                                                  "stage2.learning_rate=5e-4", f"output_dir={tmp_path}/x"])
    assert cfg.stage2.epochs == 2.0 and isinstance(cfg.stage2.epochs, float)
    assert cfg.stage2.data.per_task == 7
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.stage1.enabled is True
    assert cfg.stage2.learning_rate == 5e-4  # YAML 1.1 reads "5e-4" as a string; still a float here
    assert cfg.run_dir() == tmp_path / "x"
    # untouched keys keep the file's values
    assert cfg.stage2.data.max_post_tokens == 96 and cfg.stage2.data.max_seq_len == 320


@pytest.mark.parametrize("override, message", [
    ("stage2.epoch=2", "unknown config key 'stage2.epoch'; valid keys under stage2: enabled, data, epochs"),
    ("stage2.data.per_tsk=3", "unknown config key 'stage2.data.per_tsk'; valid keys under stage2.data: kind, path"),
    ("lerning_rate=1", "unknown config key 'lerning_rate'; valid keys: name, model"),
    ("stage2.batch_size=abc", "stage2.batch_size must be int, got 'abc'"),
    ("stage2.init=restart", "stage2.init must be 'merge' or 'continue', got 'restart'"),
    ("stage2.grad_accum=0", "stage2.grad_accum must be at least 1"),
    ("lora.target_modules=7", "lora.target_modules must be 'auto', 'all-linear' or a list of module names"),
    ("stage2", "override 'stage2' is not key=value"),
])
def test_config_errors_are_precise(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "cpu-0.5b.yaml", [override])
    assert message in str(err.value)


def test_unknown_key_in_file_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstage2:\n  data:\n    taks: [emotion]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown config key 'stage2.data.taks'; valid keys under stage2.data"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("stage2:\n  enabled: false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(nothing)


def test_cli_reports_config_errors_and_lists_keys(capsys):
    assert main(["train", "--config", str(CONFIGS / "cpu-0.5b.yaml"), "stage2.epoch=2"]) == 2
    assert "unknown config key 'stage2.epoch'" in capsys.readouterr().err
    assert main(["train", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "stage2.init" in out and "merge" in out
    keys = [k for k, _, _ in describe()]
    assert "stage2.data.per_task" in keys and "lora.layouts" in keys
