"""Exports of instruction records for trainers, and the two training stages.

- Alpaca JSON (``[{"instruction", "input", "output"}]``), like the released ``Instruct_*.json`` files;
- OpenAI chat fine-tuning JSONL (``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``);
- LLaMA-Factory ``dataset_info.json`` entries for both (merged into an existing file, never clobbered);
- a Hugging Face datasets folder: ``<task>/<split>.jsonl`` plus a README.md whose YAML ``configs``
  name one config per task and a ``default`` with every task.

``mix`` writes the stage-1 corpus (English IMHI: the released instructions and gpt-3.5-turbo answers)
and the stage-2 corpus (C-IMHI build folders) side by side in one LLaMA-Factory dataset folder.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from ..tasks import get_task
from .builder import SPLITS, read_built
from .records import DataError

FORMATS = ("alpaca", "messages", "hf")
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def alpaca(record: dict) -> dict:
    return {"instruction": record["instruction"], "input": record.get("input", ""), "output": record["output"]}


def messages(record: dict) -> dict:
    user = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]}


def _by_split(records: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        out[r.get("split") or "train"].append(r)
    return dict(out)


def _write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def update_dataset_info(folder: Path, entries: dict[str, dict]) -> Path:
    path = folder / "dataset_info.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info.update(entries)
    path.write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def export(records: Sequence[dict], out: Path, name: str = "cimhi", formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``records`` in ``formats`` under ``out``; returns the files written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise DataError(out, None, f"unknown export format(s) {unknown}; known: {', '.join(FORMATS)}")
    if not records:
        raise DataError(out, None, "nothing to export (no records)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries: dict[str, dict] = {}
    for split, rows in _by_split(records).items():
        if "alpaca" in formats:
            path = _write_json(out / f"{name}_{split}.json", [alpaca(r) for r in rows])
            entries[f"{name}_{split}"] = {"file_name": path.name, "formatting": "alpaca",
                                          "columns": dict(ALPACA_COLUMNS)}
            written.append(path)
        if "messages" in formats:
            path = _write_jsonl(out / f"{name}_{split}.messages.jsonl", (messages(r) for r in rows))
            entries[f"{name}_{split}_messages"] = {"file_name": path.name, "formatting": "sharegpt",
                                                   "columns": {"messages": "messages"}, "tags": dict(SHAREGPT_TAGS)}
            written.append(path)
    if entries:
        written.append(update_dataset_info(out, entries))
    if "hf" in formats:
        written.extend(write_hf_folder(records, out / "hf", name))
    return written


def write_hf_folder(records: Sequence[dict], folder: Path, name: str) -> list[Path]:
    """``<task>/<split>.jsonl`` + README.md with YAML configs (one per task, ``default`` = all)."""
    written = []
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    counts: dict[str, Counter] = {}
    for task, rows in by_task.items():
        counts[task] = Counter()
        for split, split_rows in _by_split(rows).items():
            written.append(_write_jsonl(folder / task / f"{split}.jsonl", split_rows))
            counts[task][split] = len(split_rows)
    splits = [s for s in (*SPLITS, *sorted({s for c in counts.values() for s in c} - set(SPLITS)))
              if any(s in c for c in counts.values())]
    yaml = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        yaml += [f"  - split: {split}", f"    path: \"*/{split}.jsonl\""]
    for task in by_task:
        yaml += [f"- config_name: {task}", "  data_files:"]
        for split in splits:
            if split in counts[task]:
                yaml += [f"  - split: {split}", f"    path: \"{task}/{split}.jsonl\""]
    langs = sorted({get_task(t).language for t in by_task})
    yaml += ["language:", *(f"- {lang}" for lang in langs), "task_categories:", "- text-generation",
             "- text-classification", "---"]
    table = ["| task | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    table += [f"| {t} | " + " | ".join(str(counts[t].get(s, 0)) for s in splits) + " |" for t in by_task]
    body = [f"# {name}", "",
            "Instruction data for explainable mental-health analysis, built with `mentalglm data build` "
            "(answers: label sentence + 理由/Reasoning + explanation). Research use only; not a diagnostic tool. "
            "Some posts describe suicidal intent.", "",
            "```python", "from datasets import load_dataset",
            f"ds = load_dataset(\"path/to/this/folder\", \"{next(iter(by_task))}\")", "```", "", *table, "",
            "Fields: id, task, split, instruction, input, output, labels, explanation, source, teacher, "
            "prompt_hash.", ""]
    readme = folder / "README.md"
    readme.write_text("\n".join(yaml + [""] + body), encoding="utf-8")
    written.append(readme)
    return written


def validate_dataset_info(folder: Path) -> list[str]:
    """Problems LLaMA-Factory would hit with ``dataset_dir=folder`` (an empty list when it is fine).

    Mirrors its loader (``llamafactory/data/parser.py``): every entry needs ``file_name`` inside the
    folder; alpaca entries map prompt/query/response to fields every record has; sharegpt entries map
    ``messages`` and tags whose roles alternate user, assistant.
    """
    path = folder / "dataset_info.json"
    if not path.exists():
        return [f"{path} does not exist"]
    problems = []
    for name, entry in json.loads(path.read_text(encoding="utf-8")).items():
        file = folder / entry.get("file_name", "")
        if not entry.get("file_name") or not file.is_file():
            problems.append(f"{name}: file_name {entry.get('file_name')!r} is not a file in {folder}")
            continue
        rows = json.loads(file.read_text(encoding="utf-8")) if file.suffix == ".json" else \
            [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        fmt = entry.get("formatting", "alpaca")
        columns = entry.get("columns", {})
        if fmt == "alpaca":
            for key, default in ALPACA_COLUMNS.items():
                col = columns.get(key, default)
                missing = [k for k, r in enumerate(rows) if col not in r]
                if missing:
                    problems.append(f"{name}: column {key}={col!r} missing in record {missing[0]}")
        elif fmt == "sharegpt":
            col = columns.get("messages", "conversations")
            tags = entry.get("tags", {})
            role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
            expected = [tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")]
            for k, r in enumerate(rows):
                turns = r.get(col)
                if not isinstance(turns, list) or not turns or len(turns) % 2:
                    problems.append(f"{name}: record {k}: {col!r} must be an even, non-empty list of turns")
                    break
                roles = [t.get(role) for t in turns]
                if roles != expected * (len(turns) // 2) or not all(isinstance(t.get(content), str) for t in turns):
                    problems.append(f"{name}: record {k}: roles {roles} do not alternate {expected}")
                    break
        else:
            problems.append(f"{name}: unknown formatting {fmt!r}")
    return problems


# ------------------------------------------------------------------------------------------------------ mix
def imhi_records(data_root=None) -> list[dict]:
    """English IMHI training instructions (stage 1) as instruction records, from the released CSVs."""
    from .sources import load_source

    records = []
    for e in load_source("imhi", ["train", "val"], data_root):
        spec = get_task(e.task)
        records.append({"id": e.id, "task": e.task, "split": "validation" if e.split == "val" else "train",
                        "instruction": spec.instruction_prompt(e.text, question=e.meta["question"]), "input": "",
                        "output": e.meta["answer"], "labels": list(e.labels), "explanation": e.explanation,
                        "source": e.source, "teacher": "gpt-3.5-turbo (IMHI release)", "prompt_hash": None})
    return records


def mix(stage2_builds: Sequence[str | Path], out: Path, stage1: bool = True, data_root=None
        ) -> tuple[list[Path], dict[tuple[str, str], Counter]]:
    """stage1_imhi_{train,validation}.json and stage2_cimhi_{...}.json with one dataset_info.json."""
    if not stage1 and not stage2_builds:
        raise DataError(out, None, "nothing to mix: give --stage2 build folders and/or keep stage 1")
    written: list[Path] = []
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    stages = []
    if stage1:
        stages.append(("stage1", "stage1_imhi", imhi_records(data_root)))
    if stage2_builds:
        seen, rows = set(), []
        for build in stage2_builds:
            for r in read_built(build):
                if (r["task"], r["id"]) not in seen:  # the same post built twice (two folders) counts once
                    seen.add((r["task"], r["id"]))
                    rows.append(r)
        stages.append(("stage2", "stage2_cimhi", rows))
    for stage, name, rows in stages:
        for r in rows:
            counts[(stage, r["task"])][r.get("split") or "train"] += 1
        written.extend(export(rows, out, name, ("alpaca", "messages")))
    summary = {f"{stage}/{task}": dict(c) for (stage, task), c in sorted(counts.items())}
    path = out / "mix_counts.json"
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    written.append(path)
    return sorted(set(written)), counts
