"""Supervised fine-tuning records, and their tokenization with the loss on answer tokens only.

Where records come from (``DataSettings``):

- ``path``: instruction data built by ``mentalglm data build`` (or anyone): Alpaca ``{instruction, input,
  output}`` or OpenAI ``{messages}`` objects as a JSON array or JSONL, in one file or a folder (see
  ``instruction_files`` for which files of a folder are read). The task is the record's ``task`` field, else
  the file or folder name (``emotion/train.jsonl``), else the C-IMHI task whose question the prompt asks.
- no ``path``, ``kind: cimhi``: straight from the raw corpora, ``task_splits(task)["train"]``, with answers
  written by the task spec (``render_answer``). The explanation is the source's own where it has one (SOS-4K
  ``explain``); otherwise a short *extractive* explanation that quotes the post and states the label's
  definition. This is the CPU recipe's stand-in for the teacher-written explanations of C-IMHI (an
  assumption: it teaches the answer format and grounding in the post, not clinical reasoning).
- no ``path``, ``kind: imhi``: the English IMHI instructions (stage 1), question and answer as released.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.records import DataError, Example
from ..data.splits import stratified_sample
from ..tasks import get_task
from .config import DataSettings

IGNORE_INDEX = -100  # positions the loss skips (prompt, padding)


@dataclass(frozen=True)
class SFTRecord:
    id: str
    task: str
    prompt: str  # the user turn
    answer: str  # the assistant turn the loss is computed on
    gold: tuple[str, ...] = ()  # label names, for evaluation


# ---------------------------------------------------------------- explanations
_SENTENCE_END = re.compile(r"[。！？!?；;.](?=[^。！？!?；;.]|$)")
_CLAUSE = re.compile(r"[^，,。！？!?；;\n～~…]+")


def shorten(text: str, max_chars: int) -> str:
    """Cut ``text`` at the last sentence end within ``max_chars`` (else hard, with an ellipsis)."""
    text = text.strip()
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text[: max_chars + 1])]
    if ends and ends[-1] >= max_chars // 3:
        return text[: ends[-1]]
    return text[:max_chars].rstrip() + "……"


def extractive_explanation(spec, text: str, labels, max_quote: int = 24) -> str:
    """Quote the clause of the post that best matches the labels' cue words, then give their definitions."""
    cues = []
    for name in labels:
        lab = spec.label(name)
        cues += [c for c in (lab.zh, *lab.synonyms) if c and not c.isascii()]
        cues += [w for w in re.split(r"[，、：“”（）()\s]+", lab.definition) if len(w) >= 2]
    clauses = [c.strip() for c in _CLAUSE.findall(text) if len(c.strip()) >= 2] or [text.strip()]
    best = max(clauses, key=lambda c: (sum(cue in c for cue in cues), min(len(c), max_quote)))
    quote = best if len(best) <= max_quote else best[:max_quote] + "……"
    reasons = "；".join(spec.label(n).definition for n in labels if spec.label(n).definition)
    return f"帖子中写道“{quote}”，{reasons}。" if reasons else f"帖子中写道“{quote}”。"


# ---------------------------------------------------------------- records from the raw corpora
def _cut_post(text: str, tokenizer, max_tokens: int) -> str:
    if tokenizer is None or max_tokens <= 0:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens]).replace("\ufffd", "").rstrip() + "……"


def cimhi_records(examples: list[Example], data: DataSettings, tokenizer=None) -> list[SFTRecord]:
    out = []
    for e in examples:
        spec = get_task(e.task)
        post = _cut_post(e.text, tokenizer, data.max_post_tokens)
        if e.explanation:
            explanation = shorten(e.explanation, data.explanation_chars)
        else:
            explanation = extractive_explanation(spec, post, e.labels)
        out.append(SFTRecord(e.id, e.task, spec.instruction_prompt(post), spec.render_answer(e.labels, explanation),
                             tuple(e.labels)))
    return out


def imhi_records(examples: list[Example], data: DataSettings, tokenizer=None) -> list[SFTRecord]:
    out = []
    for e in examples:
        spec = get_task(e.task)
        post = _cut_post(e.text, tokenizer, data.max_post_tokens)
        answer = spec.render_answer(e.labels, shorten(e.explanation or "", data.explanation_chars))
        out.append(SFTRecord(e.id, e.task, spec.instruction_prompt(post, e.meta.get("question")), answer,
                             tuple(e.labels)))
    return out


def source_examples(data: DataSettings, split: str, seed: int, cap: int) -> dict[str, list[Example]]:
    """Examples per task of ``split`` (``train`` = ``data.splits``; ``validation``), capped by stratified sampling."""
    from ..data.sources import load_source, task_splits

    by_task: dict[str, list[Example]] = {}
    if data.kind == "cimhi":
        for task in data.tasks:
            get_task(task)
            splits = task_splits(task)
            by_task[task] = splits["validation"] if split == "validation" else splits["train"]
    else:
        wanted = {get_task(t).name for t in data.tasks}
        splits = ["val"] if split == "validation" else data.splits
        for e in load_source("imhi", splits):
            if e.task in wanted:
                by_task.setdefault(e.task, []).append(e)
        missing = wanted - set(by_task)
        if missing:
            raise DataError("imhi", None, f"no IMHI records for {sorted(missing)} in split(s) {splits}; the released "
                                          "train split holds DR, dreaddit and SAD (Irf, MultiWD have val/test only)")
    return {t: stratified_sample(ex, cap, seed=seed) if cap else ex for t, ex in by_task.items()}


# ---------------------------------------------------------------- records from built instruction files
def _task_of(path: Path, row: dict, prompt: str = "") -> str:
    """The record's ``task`` field, else the file or folder name, else the task whose question the prompt asks."""
    for candidate in (row.get("task"), path.stem, path.parent.name):
        if candidate:
            try:
                return get_task(str(candidate)).name
            except KeyError:
                continue
    from ..tasks import all_tasks

    asked = [spec.name for spec in all_tasks("c-imhi") if spec.question in prompt]
    return asked[0] if len(asked) == 1 else "unknown"


def _rows(path: Path):
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, e.lineno, f"not valid JSON ({e.msg})") from e
        if not isinstance(rows, list):
            raise DataError(path, None, "expected a JSON array of {instruction, input, output} objects")
        yield from ((None, i, r) for i, r in enumerate(rows))
        return
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield line_no, line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, line_no, f"not valid JSON ({e.msg})") from e


def instruction_files(root: Path) -> list[Path]:
    """The training files of a built instruction folder, each record once.

    ``mentalglm data build`` / ``data export`` write the same records in several forms; this picks one:
    the HF datasets layout ``<task>/train.jsonl`` if present, else Alpaca ``*train*.json``, else OpenAI
    ``*train*.messages.jsonl``, else every other ``.json``/``.jsonl`` file. Validation, test and QC-dropped
    files and ``dataset_info.json`` are never training data.
    """
    if root.is_file():
        return [root]

    def usable(p: Path) -> bool:
        stem = p.name.removesuffix(".jsonl").removesuffix(".json").removesuffix(".messages")
        return p.name != "dataset_info.json" and not any(w in stem for w in ("valid", "test", "dev", "dropped",
                                                                             "counts", "qc_", "cache"))

    for pattern in ("train.jsonl", "*train*.json", "*train*.messages.jsonl"):
        files = sorted(p for p in root.rglob(pattern) if usable(p))
        if files:
            return files
    return sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and usable(p))


def _prompt_answer(row: dict) -> tuple[str, str] | None:
    if isinstance(row.get("messages"), list):  # OpenAI messages: the last user turn and the assistant answer
        user = [m.get("content", "") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        bot = [m.get("content", "") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
        return (user[-1], bot[-1]) if user and bot and user[-1].strip() and bot[-1].strip() else None
    if isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str) \
            and row["instruction"].strip() and row["output"].strip():
        return row["instruction"] + (f"\n{row['input']}" if row.get("input") else ""), row["output"]
    return None


def alpaca_records(path: str | Path, splits=("train",)) -> list[SFTRecord]:
    """Records of built instruction data (Alpaca or OpenAI messages); rows whose ``split`` field is not in
    ``splits`` are skipped (the builder's HF layout carries it)."""
    root = Path(path)
    if not root.exists():
        raise DataError(root, None, "instruction data not found; build it with `mentalglm data build` or set "
                                    "data.path= to a folder of Alpaca JSON/JSONL files (or unset it to train "
                                    "straight from the raw corpora)")
    files = instruction_files(root)
    if not files:
        raise DataError(root, None, "no training .json or .jsonl files in this folder")
    out = []
    for f in files:
        for line, item_no, row in _rows(f):
            where = f"item {item_no}" if line is None else "this line"
            if not isinstance(row, dict):
                raise DataError(f, line, f"{where} is not a JSON object")
            if row.get("split") and row["split"] not in splits:
                continue
            pair = _prompt_answer(row)
            if pair is None:
                raise DataError(f, line, f"{where}: needs non-empty instruction and output (Alpaca, input "
                                         "optional) or messages with a user and an assistant turn")
            prompt, answer = pair
            task = _task_of(f, row, prompt)
            gold = tuple(row.get("labels") or ())
            if not gold and task != "unknown":
                from ..tasks import OK, parse_answer

                parsed = parse_answer(get_task(task), answer)
                gold = parsed.labels if parsed.status == OK else ()
            out.append(SFTRecord(str(row.get("id") or f"{f.stem}-{item_no}"), task, prompt, answer, gold))
    return out


def data_paths(data: DataSettings) -> list[Path]:
    """``data.path`` as a list: one folder or file, or several (built data from more than one build)."""
    paths = data.path if isinstance(data.path, (list, tuple)) else [data.path] if data.path else []
    return [Path(p) for p in paths]


def training_records(data: DataSettings, seed: int, tokenizer=None) -> list[SFTRecord]:
    if data.path:
        records = [r for path in data_paths(data) for r in alpaca_records(path, tuple(data.splits))]
        if data.tasks:
            keep = {get_task(t).name for t in data.tasks}
            records = [r for r in records if r.task in keep]
        if data.per_task:
            records = _cap_records(records, data.per_task, seed)
        return records
    make = cimhi_records if data.kind == "cimhi" else imhi_records
    out: list[SFTRecord] = []
    for examples in source_examples(data, "train", seed, data.per_task).values():
        out.extend(make(examples, data, tokenizer))
    return out


def _cap_records(records: list[SFTRecord], per_task: int, seed: int) -> list[SFTRecord]:
    by_task: dict[str, list[SFTRecord]] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    out = []
    for task, rs in by_task.items():
        as_examples = [Example(r.id, task, r.prompt, r.gold, "train", "built") for r in rs]
        keep = {e.id for e in stratified_sample(as_examples, per_task, seed=seed)}
        out.extend(r for r in rs if r.id in keep)
    return out


def eval_records(data: DataSettings, seed: int, tokenizer=None) -> list[SFTRecord]:
    """A small stratified validation sample per task for the periodic generate-and-parse evaluation.

    Tasks without a validation split here (or without the raw data) are skipped, never an error."""
    if data.eval_per_task <= 0:
        return []
    tasks = data.tasks or []
    settings = DataSettings(**{**asdict(data), "tasks": [t for t in tasks if _known(t)]})
    if not settings.tasks:
        return []
    try:
        by_task = source_examples(settings, "validation", seed, data.eval_per_task)
    except (DataError, OSError):
        return []
    make = cimhi_records if data.kind == "cimhi" else imhi_records
    return [r for ex in by_task.values() for r in make(ex, data, tokenizer)]


def _known(task: str) -> bool:
    try:
        get_task(task)
        return True
    except KeyError:
        return False


def records_hash(records: list[SFTRecord]) -> str:
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps(asdict(r), ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- tokenization
def prompt_text(tokenizer, prompt: str) -> str:
    """The chat-templated prompt up to and including the assistant header (what generation starts from)."""
    messages = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"user: {prompt}\nassistant: "


def completion_text(tokenizer, prompt: str, answer: str) -> str:
    """What the template puts after the assistant header for ``answer``: the answer and its end-of-turn token."""
    head = prompt_text(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": answer}], tokenize=False)
        if full.startswith(head):
            # Trailing newlines after the end-of-turn token are template layout, not something to learn.
            return full[len(head):].rstrip("\n")
    return answer + (tokenizer.eos_token or "")


def tokenize(tokenizer, record: SFTRecord, max_seq_len: int) -> dict | None:
    """input_ids and labels (-100 on the prompt), or None when longer than ``max_seq_len``."""
    head = prompt_text(tokenizer, record.prompt)
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(completion_text(tokenizer, record.prompt, record.answer),
                           add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_seq_len:
        return None
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def tokenize_all(tokenizer, records: list[SFTRecord], max_seq_len: int) -> tuple[list[dict], int]:
    """Tokenized records and how many were dropped for length."""
    out, dropped = [], 0
    for r in records:
        item = tokenize(tokenizer, r, max_seq_len)
        if item is None:
            dropped += 1
        else:
            out.append(item)
    return out, dropped


class PadCollator:
    """Right-pads a batch to its longest record; counts real and padded tokens for the tokens/s log."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, items: list[dict]) -> dict:
        import torch

        width = max(len(i["input_ids"]) for i in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
            self.real_tokens += n
        self.padded_tokens += len(items) * width
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
