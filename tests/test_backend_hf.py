"""HFBackend on a tiny random Qwen2: batching, prefill, stop strings, PEFT adapters, missing models."""

import os
import shutil
from pathlib import Path

import pytest

from mentalglm.llm.base import Backend, GenConfig, ModelUnavailable, Request
from mentalglm.llm.hf import HFBackend
from mentalglm.llm.catalog import REGISTRY, ModelEntry

SYSTEM = {"role": "system", "content": "你是一名心理健康分析助手。"}
REQUESTS = [
    Request(({"role": "user", "content": "我最近很难过"},)),
    Request((SYSTEM, {"role": "user", "content": "我最近很难过，因为考试失败了，怎么办？请帮帮我，谢谢大家。"
                                                  "他觉得很孤独，因为找不到工作。"}), answer_prefix="这篇帖子体现了"),
    Request(({"role": "user", "content": "I feel sad because of work."},), answer_prefix="Label:"),
]
GREEDY = GenConfig(max_tokens=12)


def test_loads_tiny_folder(tiny_hf_backend, tiny_hf_model_dir):
    b = tiny_hf_backend
    assert isinstance(b, Backend)
    assert b.name == str(tiny_hf_model_dir)
    assert b.context_length == 2048
    assert b.tokenizer.padding_side == "left"
    assert b.count_tokens("我最近很难过") == len(b.tokenizer.encode("我最近很难过", add_special_tokens=False)) > 0
    prompt = b.render(REQUESTS[1])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n这篇帖子体现了")


def test_batch_equals_single_with_left_padding(tiny_hf_backend):
    batch = tiny_hf_backend.generate(REQUESTS, GREEDY)
    assert len(batch) == 3
    lengths = {g.prompt_tokens for g in batch}
    assert len(lengths) == 3, "the requests should have different lengths, so that padding matters"
    for request, got in zip(REQUESTS, batch):
        alone = tiny_hf_backend.generate([request], GREEDY)[0]
        assert got.text == alone.text
        assert got.completion_tokens == alone.completion_tokens
        assert got.prompt_tokens == alone.prompt_tokens == tiny_hf_backend.count_tokens(
            tiny_hf_backend.render(request))
        assert got.text.startswith(request.answer_prefix)
        assert got.prefilled and got.latency_ms > 0
        assert got.finish_reason in ("stop", "length")
        if got.finish_reason == "length":
            assert got.completion_tokens == GREEDY.max_tokens


def test_batch_size_splits_keep_order(tiny_hf_model_dir, tiny_hf_backend):
    small = HFBackend(str(tiny_hf_model_dir), batch_size=2)
    assert [g.text for g in small.generate(REQUESTS, GREEDY)] == \
        [g.text for g in tiny_hf_backend.generate(REQUESTS, GREEDY)]
    assert small.generate([], GREEDY) == []


def test_answer_prefix_is_prefilled(tiny_hf_backend):
    gen = tiny_hf_backend.generate([REQUESTS[1]], GREEDY)[0]
    assert gen.text.startswith("这篇帖子体现了")
    without = tiny_hf_backend.generate([Request(REQUESTS[1].messages)], GREEDY)[0]
    assert gen.text[len("这篇帖子体现了"):] != without.text  # the prefix conditions the continuation


def _clean_stop(completion: str) -> str:
    """A 2-character piece of the completion, without replacement characters, away from its start."""
    for k in range(2, len(completion) - 1):
        piece = completion[k:k + 2]
        if "\ufffd" not in piece and piece.strip() == piece and piece:
            return piece
    pytest.skip("completion has no clean 2-character piece")


def test_stop_strings_cut(tiny_hf_backend):
    request = REQUESTS[1]
    config = GenConfig(max_tokens=24)
    full = tiny_hf_backend.generate([request], config)[0]
    completion = full.text[len(request.answer_prefix):]
    stop = _clean_stop(completion)
    cut = tiny_hf_backend.generate([request], GenConfig(max_tokens=24, stop=(stop, "never-there")))[0]
    assert cut.text == request.answer_prefix + completion[:completion.find(stop)]
    assert stop not in cut.text[len(request.answer_prefix):]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # generation halted early, not just trimmed


def test_sampling_is_seeded(tiny_hf_backend):
    hot = GenConfig(max_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    a = tiny_hf_backend.generate(REQUESTS[:1], hot)[0]
    b = tiny_hf_backend.generate(REQUESTS[:1], hot)[0]
    assert a.text == b.text


def test_registry_entry_defaults(tiny_hf_model_dir, monkeypatch):
    import mentalglm.llm.hf as hf

    monkeypatch.setattr(hf, "_cpu_has_bf16", lambda: False)
    entry = ModelEntry("tiny-entry", "hf", "test", hf_id=str(tiny_hf_model_dir),
                       hf_kwargs={"dtype": "bfloat16", "trust_remote_code": False},
                       generation={"max_length": 0, "do_sample": True, "top_k": 1})
    b = HFBackend(entry.hf_id, entry=entry)
    assert b.name == "tiny-entry"
    assert str(b.dtype) == "torch.float32" and any("bf16" in n for n in b.notes)  # CPU fallback, with a note
    prompt_len = b.count_tokens(b.render(REQUESTS[0]))
    b.generation_defaults["max_length"] = prompt_len + 3  # the model card's total-length cap
    gen = b.generate(REQUESTS[:1], GenConfig(max_tokens=50))[0]
    assert gen.completion_tokens <= 3
    # the cap is per prompt: a batch gives each request what it gets alone
    b.generation_defaults["max_length"] = max(b.count_tokens(b.render(r)) for r in REQUESTS) + 4
    batch = b.generate(REQUESTS, GenConfig(max_tokens=50))
    assert [g.text for g in batch] == [b.generate([r], GenConfig(max_tokens=50))[0].text for r in REQUESTS]
    assert batch[0].completion_tokens > 4 >= batch[1].completion_tokens  # the shortest prompt has the most room
    b.generation_defaults["max_length"] = 5  # shorter than any prompt: ignored, with one note
    assert b.generate(REQUESTS[:1], GenConfig(max_tokens=6))[0].completion_tokens >= 1
    assert any("max_length" in n for n in b.notes)
    capped = HFBackend(entry.hf_id, max_new_tokens_cap=4).generate(REQUESTS[:1], GenConfig(max_tokens=50))[0]
    assert capped.completion_tokens <= 4


def test_bf16_default_where_supported_and_explicit_dtype_obeyed(tiny_hf_model_dir, monkeypatch):
    import mentalglm.llm.hf as hf

    entry = ModelEntry("tiny-bf16", "hf", "test", hf_id=str(tiny_hf_model_dir), hf_kwargs={"dtype": "bfloat16"})
    monkeypatch.setattr(hf, "_cpu_has_bf16", lambda: True)
    b = HFBackend(entry.hf_id, entry=entry)
    assert str(b.dtype) == "torch.bfloat16" and next(b.model.parameters()).dtype == b.dtype and not b.notes
    assert b.generate(REQUESTS[:1], GenConfig(max_tokens=3))[0].completion_tokens >= 1
    monkeypatch.setattr(hf, "_cpu_has_bf16", lambda: False)
    assert str(HFBackend(entry.hf_id, entry=entry, dtype="bf16").dtype) == "torch.bfloat16"


def test_remote_code_needs_consent(tiny_hf_model_dir, tmp_path):
    import json

    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_hf_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    config["model_type"] = "chatglm"  # not built into transformers, as with the GLM-4 remote-code checkpoints
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="trust_remote_code=True"):
        HFBackend(str(folder))


def test_without_chat_template(tiny_hf_model_dir, tmp_path):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_hf_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = folder / "tokenizer_config.json"
    import json

    data = json.loads(cfg.read_text())
    data.pop("chat_template", None)
    cfg.write_text(json.dumps(data))
    b = HFBackend(str(folder))
    assert b.render(REQUESTS[2]) == "user: I feel sad because of work.\nassistant: Label:"
    assert b.generate(REQUESTS[2:], GREEDY)[0].text.startswith("Label:")


def _make_adapter(model_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # zero at init: make the adapter actually change the model
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(out)
    return out


def test_peft_adapter_changes_output(tiny_hf_model_dir, tiny_hf_backend, tmp_path):
    import torch
    from peft import PeftModel

    adapter = _make_adapter(tiny_hf_model_dir, tmp_path / "adapter")
    assert (adapter / "adapter_config.json").is_file()
    tuned = HFBackend(str(tiny_hf_model_dir), adapter=str(adapter))
    assert isinstance(tuned.model, PeftModel)
    ids = tiny_hf_backend.tokenizer(tiny_hf_backend.render(REQUESTS[0]), return_tensors="pt",
                                    add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        base_logits = tiny_hf_backend.model(input_ids=ids).logits
        tuned_logits = tuned.model(input_ids=ids).logits
    assert (base_logits - tuned_logits).abs().max().item() > 1e-2
    config = GenConfig(max_tokens=16)
    assert [g.text for g in tuned.generate(REQUESTS, config)] != \
        [g.text for g in tiny_hf_backend.generate(REQUESTS, config)]


def test_missing_adapter_folder(tiny_hf_model_dir, tmp_path):
    with pytest.raises(ModelUnavailable, match="adapter_config.json"):
        HFBackend(str(tiny_hf_model_dir), adapter=str(tmp_path / "no-such-adapter"))


def test_missing_model_id_says_how_to_get_it():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ModelUnavailable) as info:
        HFBackend("mentalglm-tests/no-such-model")
    message = str(info.value)
    assert "download mentalglm-tests/no-such-model --local-dir" in message and "--model DIR" in message


def test_missing_registry_model_uses_how_to_get():
    entry = REGISTRY["mentalglm"]
    with pytest.raises(ModelUnavailable) as info:
        HFBackend(entry.hf_id, entry=entry)
    assert entry.how_to_get in str(info.value) and "'mentalglm'" in str(info.value)


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelUnavailable, match="No model folder"):
        HFBackend(str(tmp_path / "nowhere"))


@pytest.mark.skipif(not os.environ.get("MENTALGLM_HF_DIR"),
                    reason="set MENTALGLM_HF_DIR to a downloaded MentalGLM(-chat) folder to run")
def test_real_mentalglm_folder():
    """On a machine with the real weights: the registry's settings load and answer one prompt."""
    entry = REGISTRY["mentalglm-chat"]
    b = HFBackend(os.environ["MENTALGLM_HF_DIR"], entry=entry, batch_size=1)
    gen = b.generate([Request(({"role": "user", "content": "请判断这篇帖子是否体现抑郁：我每天都很累。"},),
                              answer_prefix="")], GenConfig(max_tokens=32))[0]
    assert gen.text.strip() and gen.completion_tokens > 0
