"""Exports for trainers (Alpaca, OpenAI messages, LLaMA-Factory, HF datasets) and the stage-1/stage-2 mix."""

from __future__ import annotations

import csv
import json

from mentalglm.cli import main
from mentalglm.data.export import validate_dataset_info
from teachers import write_build_folder


def test_alpaca_loads_with_datasets_and_dataset_info_is_valid_for_llamafactory(tmp_path, capsys):
    import datasets

    build = write_build_folder(tmp_path / "build", validation=3)
    out = tmp_path / "export"
    assert main(["data", "export", str(build), "--out", str(out)]) == 0
    assert "dataset_info.json checked" in capsys.readouterr().err

    cache = str(tmp_path / "hf-cache")
    train = datasets.load_dataset("json", data_files=str(out / "cimhi_train.json"), split="train", cache_dir=cache)
    assert train.num_rows == 24 and train.column_names == ["instruction", "input", "output"]
    assert train[0]["instruction"].startswith("考虑以下这个帖子：“") and "理由：" in train[0]["output"]

    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["cimhi_train"] == {"file_name": "cimhi_train.json", "formatting": "alpaca",
                                   "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    assert info["cimhi_validation_messages"]["formatting"] == "sharegpt"
    assert all((out / entry["file_name"]).is_file() for entry in info.values())
    assert validate_dataset_info(out) == []

    first = json.loads((out / "cimhi_train.messages.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][1]["content"] == train[0]["output"]

    hf = datasets.load_dataset(str(out / "hf"), "emotion", cache_dir=cache)
    assert hf["train"].num_rows == 12 and hf["validation"].num_rows == 3
    assert set(hf["train"].column_names) >= {"id", "task", "labels", "explanation", "instruction", "output"}
    # the default config: every task
    assert datasets.load_dataset(str(out / "hf"), cache_dir=cache)["train"].num_rows == 24


def test_validate_dataset_info_names_what_llamafactory_would_reject(tmp_path):
    build = write_build_folder(tmp_path / "build")
    out = tmp_path / "export"
    assert main(["data", "export", str(build), "--out", str(out), "--formats", "alpaca,messages"]) == 0
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    info["cimhi_train"]["columns"]["response"] = "answer"
    info["cimhi_train_messages"]["tags"]["assistant_tag"] = "gpt"
    info["missing"] = {"file_name": "nope.json"}
    (out / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    problems = validate_dataset_info(out)
    assert any("cimhi_train: column response='answer' missing" in p for p in problems)
    assert any("cimhi_train_messages" in p and "do not alternate" in p for p in problems)
    assert any("missing: file_name 'nope.json'" in p for p in problems)


def _write_imhi(root, task: str, split: str, rows: list[tuple[str, str, str]]):
    folder = root / "imhi" / "train" / task
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "gpt-3.5-turbo"])
        for post, question, answer in rows:
            writer.writerow([f'Consider this post: "{post}" Question: {question}', answer])


def test_mix_writes_stage1_imhi_and_stage2_cimhi_with_counts(tmp_path, capsys):
    q = "Does the poster suffer from depression?"
    yes = "Yes, the poster suffers from depression. Reasoning: the poster says they feel empty every day."
    no = "No, the poster does not suffer from depression. Reasoning: the post is about a new bike."
    _write_imhi(tmp_path / "data", "DR", "train", [("I feel empty every day.", q, yes), ("Got a new bike!", q, no)])
    _write_imhi(tmp_path / "data", "DR", "val", [("Nothing matters, I stay in bed.", q, yes)])
    build = write_build_folder(tmp_path / "build", validation=2)
    out = tmp_path / "mix"
    assert main(["data", "mix", "--stage2", str(build), str(build), "--out", str(out),
                 "--data-root", str(tmp_path / "data")]) == 0
    counts = json.loads((out / "mix_counts.json").read_text(encoding="utf-8"))
    assert counts == {"stage1/DR": {"train": 2, "validation": 1},
                      "stage2/emotion": {"train": 12, "validation": 2},
                      "stage2/suicide_risk": {"train": 12, "validation": 2}}  # the folder given twice counts once
    stage1 = json.loads((out / "stage1_imhi_train.json").read_text(encoding="utf-8"))
    assert stage1[0] == {"instruction": f'Consider this post: "I feel empty every day." Question: {q}',
                         "input": "", "output": yes}
    assert len(json.loads((out / "stage2_cimhi_train.json").read_text(encoding="utf-8"))) == 24
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert {"stage1_imhi_train", "stage1_imhi_validation", "stage2_cimhi_train", "stage2_cimhi_validation"} <= set(info)
    assert validate_dataset_info(out) == []
    assert "stage1" in capsys.readouterr().out
