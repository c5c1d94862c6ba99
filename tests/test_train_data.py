"""Training records: answer-only loss masking, the same prompt as inference, Alpaca files, C-IMHI answers."""

import json

import pytest
from shared_data import requires_data

from mentalglm.data.records import DataError, Example
from mentalglm.prompts import build_request
from mentalglm.tasks import OK, get_task, parse_answer
from mentalglm.train.config import DataSettings
from mentalglm.train.data import (IGNORE_INDEX, PadCollator, SFTRecord, alpaca_records, cimhi_records,
                                  extractive_explanation, prompt_text, shorten, tokenize, training_records)

EMOTION = get_task("emotion")
POST = "今天考试失败了，我好难过，真的不想说话了。"


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_model_dir):
    from mentalglm.train.trainer import load_tokenizer

    return load_tokenizer(str(tiny_hf_model_dir))


def test_loss_is_on_answer_tokens_only(tokenizer):
    answer = EMOTION.render_answer(["悲伤"], "帖子中写道“我好难过”。")
    record = SFTRecord("r1", "emotion", EMOTION.instruction_prompt(POST), answer, ("悲伤",))
    item = tokenize(tokenizer, record, max_seq_len=512)
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels)
    n_prompt = labels.index(next(x for x in labels if x != IGNORE_INDEX))
    assert all(x == IGNORE_INDEX for x in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:]  # every answer token is learned, nothing after it is masked
    # the prompt part is exactly the templated prompt the model sees at inference, ending in the assistant header
    assert tokenizer.decode(ids[:n_prompt]) == prompt_text(tokenizer, record.prompt)
    assert tokenizer.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")
    # the learned part is the answer and the end-of-turn token (so generation stops), not the template's newline
    assert tokenizer.decode(ids[n_prompt:]) == answer + "<|im_end|>"
    assert tokenize(tokenizer, record, max_seq_len=len(ids) - 1) is None  # too long: dropped, never cut


def test_training_prompt_matches_inference_prompt(tokenizer, tiny_hf_backend):
    """The trained adapter is used through `analyze --prompt-style instruction`: both must render the same text."""
    request = build_request(EMOTION, POST, "instruction")
    assert prompt_text(tokenizer, EMOTION.instruction_prompt(POST)) == tiny_hf_backend.render(request)


def test_collator_pads_right_and_masks_padding():
    collate = PadCollator(pad_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
                     {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert (collate.real_tokens, collate.padded_tokens) == (4, 6)


def test_alpaca_json_and_jsonl(tmp_path):
    good = {"instruction": EMOTION.instruction_prompt(POST), "input": "",
            "output": EMOTION.render_answer(["悲伤"], "帖子说很难过。")}
    (tmp_path / "emotion.jsonl").write_text(json.dumps(good, ensure_ascii=False) + "\n\n", encoding="utf-8")
    (tmp_path / "mixed.json").write_text(json.dumps([{**good, "task": "emotion", "id": "x1",
                                                      "input": "附加"}], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")  # LLaMA-Factory registry: not data
    records = alpaca_records(tmp_path)
    assert [r.task for r in records] == ["emotion", "emotion"]
    assert records[0].gold == ("悲伤",)  # read back from the answer with the task's parser
    assert records[1].id == "x1" and records[1].prompt.endswith("\n附加")


def test_builder_folder_reads_training_files_only(tmp_path):
    """The layout `mentalglm data build` writes: <task>/train.jsonl next to validation and QC-dropped files."""
    row = {"id": "e1", "task": "emotion", "split": "train", "instruction": EMOTION.instruction_prompt(POST),
           "input": "", "output": EMOTION.render_answer(["悲伤"], "帖子说很难过。"), "labels": ["悲伤"]}
    (tmp_path / "emotion").mkdir()
    for name, split in (("train", "train"), ("validation", "validation"), ("dropped", "train")):
        (tmp_path / "emotion" / f"{name}.jsonl").write_text(
            json.dumps({**row, "id": name, "split": split}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
    assert [r.id for r in alpaca_records(tmp_path)] == ["train"]
    # OpenAI messages, task recognised from the question the prompt asks
    chat = {"messages": [{"role": "user", "content": EMOTION.instruction_prompt(POST)},
                         {"role": "assistant", "content": row["output"]}]}
    path = tmp_path / "cimhi_train.messages.jsonl"
    path.write_text(json.dumps(chat, ensure_ascii=False) + "\n", encoding="utf-8")
    (record,) = alpaca_records(path)
    assert (record.task, record.gold, record.answer) == ("emotion", ("悲伤",), row["output"])


@pytest.mark.parametrize("content, line, reason", [
    ('{"instruction": "q"}\n', 1, "needs non-empty instruction and output"),
    ('{"instruction": "q", "output": "a"}\n{not json\n', 2, "not valid JSON"),
    ('["a list"]\n', 1, "is not a JSON object"),
])
def test_bad_alpaca_rows_name_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "emotion.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        alpaca_records(path)
    assert err.value.line == line and reason in err.value.reason


def test_missing_data_path_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="mentalglm data build"):
        training_records(DataSettings(path=str(tmp_path / "c-imhi"), tasks=["emotion"]), seed=1)


def test_extractive_explanation_quotes_the_post():
    explanation = extractive_explanation(EMOTION, POST, ["悲伤"])
    quote = explanation.split("“")[1].split("”")[0]
    assert quote in POST and "难过" in quote  # the clause with the label's cue word
    assert EMOTION.label("悲伤").definition in explanation
    assert shorten("第一句。第二句很长很长。第三句", 9) == "第一句。"
    assert shorten("短", 10) == "短"


def test_records_from_examples_answer_in_the_task_format(tokenizer):
    ex = [Example("a", "emotion", POST * 20, ("悲伤",), "train", "t"),
          Example("b", "suicide_risk_levels", POST, ("3",), "train", "t", explanation="用户表达了强烈的痛苦。" * 10)]
    data = DataSettings(max_post_tokens=16, explanation_chars=20)
    records = cimhi_records(ex, data, tokenizer)
    shown = records[0].prompt.split("“", 1)[1].rsplit("”", 1)[0]
    assert shown.endswith("……") and POST.startswith(shown.removesuffix("……")[:5])
    assert len(tokenizer(shown.removesuffix("……"), add_special_tokens=False)["input_ids"]) <= 16  # cut to 16 tokens
    assert records[1].answer.startswith("这篇帖子的自杀风险等级为3级。理由：用户表达了强烈的痛苦。")
    assert len(records[1].answer.split("理由：")[1]) <= 20  # the source explanation, cut at a sentence end
    for r in records:
        parsed = parse_answer(get_task(r.task), r.answer)
        assert parsed.status == OK and parsed.labels == r.gold


@requires_data
def test_real_cimhi_records_parse_back_to_their_gold_labels(tokenizer):
    data = DataSettings(tasks=["cognitive_distortion", "suicide_risk", "suicide_risk_levels", "emotion"],
                        per_task=15, max_post_tokens=64)
    records = training_records(data, seed=13, tokenizer=tokenizer)
    assert {r.task for r in records} == set(data.tasks) and len(records) == 60
    for r in records:
        parsed = parse_answer(get_task(r.task), r.answer)
        assert parsed.status == OK and set(parsed.labels) == set(r.gold), r.id
        assert "理由：" in r.answer
    assert training_records(data, seed=13, tokenizer=tokenizer) == records  # same seed, same records
