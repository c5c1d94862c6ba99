"""The expert-review kit: a stratified sample to rate in a spreadsheet, and statistics over raters' sheets.

Ratings follow MentaLLaMA's human evaluation of explanations, each on 0-3: fluency, completeness,
reliability, overall; plus ``label_correct`` (1/0: is the label of the answer right for this post?).
Sheets are CSV (UTF-8 with BOM, so Excel shows the Chinese) and XLSX (dropdowns restrict the ratings).
The statistics read any number of filled sheets, CSV or XLSX, and match rows by ``id``.

Two kinds of sample: the records of a C-IMHI build (the teacher's answers), or the answers of one or
several *systems* (predictions files), as the paper's experts rated model outputs. Systems are
blinded: every post of the sample appears once per system, the rows are shuffled, the item ids say
nothing about the system, and the key that maps them back (``OUT.key.csv``) stays with the organiser
until ``review-stats --key`` reports the ratings per system.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Sequence

from .agreement import fleiss_kappa, krippendorff_alpha, pairwise_cohen
from .records import DataError, Example
from .splits import stratified_sample

CRITERIA = ("fluency", "completeness", "reliability", "overall")
COLUMNS = ("id", "task", "split", "post", "gold_labels", "answer", *CRITERIA, "label_correct", "comment")
GUIDE = [
    ("fluency 流畅性", "0 难以读懂 / unreadable · 1 错误较多 / many errors · 2 小瑕疵 / minor errors · 3 流畅 / fluent"),
    ("completeness 完整性", "0 没有解释标签 / does not explain the label · 1 只解释了一小部分 / explains little · "
                          "2 解释了主要依据 / explains the main evidence · 3 完整解释 / fully explains"),
    ("reliability 可靠性", "0 与帖子矛盾或编造 / contradicts the post or invents · 1 依据薄弱 / weak grounding · "
                         "2 大体有据 / mostly grounded · 3 完全基于帖子原话 / fully grounded in the post"),
    ("overall 总体", "0 不可用 / unusable · 1 差 / poor · 2 可用 / acceptable · 3 好 / good"),
    ("label_correct 标签正确", "1 = 回答中的标签对这篇帖子是正确的 / the answer's label is right for this post · "
                             "0 = 不正确 / wrong"),
    ("comment 备注", "可选 / optional"),
]
_POST = re.compile(r'^(?:考虑以下这个帖子：“(.*)” 问题：|Consider this post: "(.*)" Question: )', re.S)


def post_of(record: dict) -> str:
    """The post inside a C-IMHI / IMHI instruction."""
    m = _POST.match(record.get("instruction", ""))
    if not m:
        return record.get("instruction", "")
    return next(g for g in m.groups() if g is not None)


def sample_rows(records: Sequence[dict], n: int, seed: int = 13) -> list[dict]:
    """``n`` records stratified by (task, label set), as sheet rows with empty rating cells."""
    proxies = [Example(str(k), r["task"], post_of(r), (r["task"], *r.get("labels", [])), r.get("split", ""), "")
               for k, r in enumerate(records)]
    chosen = stratified_sample(proxies, n, seed=seed)
    rows = []
    for proxy in chosen:
        r = records[int(proxy.id)]
        rows.append({"id": r["id"], "task": r["task"], "split": r.get("split", ""), "post": proxy.text,
                     "gold_labels": "、".join(r.get("labels", [])) or "（无）", "answer": r["output"],
                     **{c: "" for c in CRITERIA}, "label_correct": "", "comment": ""})
    return rows


def blinded_rows(answers: dict[str, dict[str, dict]], n: int, seed: int = 13) -> tuple[list[dict], list[dict]]:
    """Sheet rows and their key for ``answers``: {system: {post id: item}}, each item holding ``task``, ``split``,
    ``post``, ``gold_labels`` (a list) and ``answer``.

    ``n`` posts that every system answered are drawn stratified by (task, gold label set); each appears once per
    system; rows are shuffled with ``seed`` and numbered R0001...; the key maps each number to system and post."""
    import random

    systems = list(answers)
    shared = [pid for pid in answers[systems[0]] if all(pid in answers[s] for s in systems)]
    if not shared:
        raise DataError(", ".join(systems), None, "the predictions files have no post in common to rate")
    first = answers[systems[0]]
    proxies = [Example(pid, first[pid]["task"], first[pid]["post"], (first[pid]["task"], *first[pid]["gold_labels"]),
                       first[pid]["split"], "") for pid in shared]
    chosen = [p.id for p in stratified_sample(proxies, n, seed=seed)]
    pairs = [(system, pid) for pid in chosen for system in systems]
    random.Random(seed).shuffle(pairs)
    rows, key = [], []
    for k, (system, pid) in enumerate(pairs, 1):
        item, number = answers[system][pid], f"R{k:04d}"
        rows.append({"id": number, "task": item["task"], "split": item["split"], "post": item["post"],
                     "gold_labels": "、".join(item["gold_labels"]) or "（无）", "answer": item["answer"],
                     **{c: "" for c in CRITERIA}, "label_correct": "", "comment": ""})
        key.append({"id": number, "system": system, "post_id": pid, "task": item["task"]})
    return rows, key


def write_blinded_sample(answers: dict[str, dict[str, dict]], out: str | Path, n: int = 100, seed: int = 13
                         ) -> tuple[Path, Path, Path, list[dict]]:
    """OUT.csv and OUT.xlsx for the raters, OUT.key.csv (item -> system, post) for the organiser."""
    rows, key = blinded_rows(answers, n, seed)
    csv_path, xlsx_path = _write_sheets(rows, out)
    key_path = Path(out).with_suffix(".key.csv")
    with open(key_path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "system", "post_id", "task"])
        writer.writeheader()
        writer.writerows(key)
    return csv_path, xlsx_path, key_path, rows


def _write_sheets(rows: list[dict], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, xlsx_path = out.with_suffix(".csv"), out.with_suffix(".xlsx")
    with open(csv_path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _write_xlsx(xlsx_path, rows)
    return csv_path, xlsx_path


def write_review_sample(records: Sequence[dict], out: str | Path, n: int = 100, seed: int = 13
                        ) -> tuple[Path, Path, list[dict]]:
    rows = sample_rows(records, n, seed)
    csv_path, xlsx_path = _write_sheets(rows, out)
    return csv_path, xlsx_path, rows


def _write_xlsx(path: Path, rows: list[dict]) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    ws = wb.active
    ws.title = "review"
    ws.append(list(COLUMNS))
    for row in rows:
        ws.append([row[c] for c in COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    widths = {"id": 22, "task": 18, "split": 10, "post": 60, "gold_labels": 16, "answer": 70, "comment": 30}
    for i, col in enumerate(COLUMNS, 1):
        ws.column_dimensions[get_column_letter(i)].width = widths.get(col, 13)
    wrap = Alignment(wrap_text=True, vertical="top")
    for col in ("post", "answer"):
        letter = get_column_letter(COLUMNS.index(col) + 1)
        for cell in ws[letter][1:]:
            cell.alignment = wrap
    last = len(rows) + 1
    for col, (lo, hi) in {**{c: (0, 3) for c in CRITERIA}, "label_correct": (0, 1)}.items():
        letter = get_column_letter(COLUMNS.index(col) + 1)
        dv = DataValidation(type="whole", operator="between", formula1=str(lo), formula2=str(hi), allow_blank=True,
                            showErrorMessage=True, error=f"{col}: a whole number from {lo} to {hi}")
        dv.add(f"{letter}2:{letter}{max(last, 2)}")
        ws.add_data_validation(dv)
    guide = wb.create_sheet("guide")
    guide.append(["column", "scale"])
    for item in GUIDE:
        guide.append(list(item))
    guide.column_dimensions["A"].width = 24
    guide.column_dimensions["B"].width = 120
    wb.save(path)


# ---------------------------------------------------------------------------------------------- reading back
_TRUE = {"1", "1.0", "yes", "y", "true", "是", "对", "正确"}
_FALSE = {"0", "0.0", "no", "n", "false", "否", "错", "错误"}


def _rating(path, line: int, column: str, value) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if column == "label_correct":
        text = str(value).strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
        raise DataError(path, line, f"column label_correct: {value!r} is not 1/0 (yes/no, 是/否)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != int(number) or not 0 <= number <= 3:
        raise DataError(path, line, f"column {column}: {value!r} is not one of 0, 1, 2, 3")
    return int(number)


def _raw_rows(path: Path) -> list[tuple[int, dict]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True, data_only=True)
        ws = wb["review"] if "review" in wb.sheetnames else wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, [])]
        rows = [(k, dict(zip(header, values))) for k, values in enumerate(it, 2)]
        wb.close()
        return _checked(path, header, rows)
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [(reader.line_num, {k.strip(): v for k, v in row.items() if k}) for row in reader]
        return _checked(path, header, rows)
    raise DataError(path, None, "a review sheet must be .csv or .xlsx")


def _checked(path, header: list[str], rows):
    missing = [c for c in ("id", *CRITERIA, "label_correct") if c not in header]
    if missing:
        raise DataError(path, 1, f"missing column(s) {missing}; found {header}")
    return [(line, row) for line, row in rows if any(v not in (None, "") for v in row.values())]


def read_ratings(path: str | Path) -> dict[str, dict[str, int | None]]:
    """{item id: {criterion: rating or None}} of one rater's sheet."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    out: dict[str, dict[str, int | None]] = {}
    for line, row in _raw_rows(path):
        item = str(row.get("id") or "").strip()
        if not item:
            raise DataError(path, line, "empty id")
        if item in out:
            raise DataError(path, line, f"id {item!r} appears twice")
        out[item] = {c: _rating(path, line, c, row.get(c)) for c in (*CRITERIA, "label_correct")}
    return out


def read_key(path: str | Path) -> dict[str, str]:
    """{item id: system} from the key of a blinded sample."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "key file not found (review-sample writes OUT.key.csv beside the sheets)")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not {"id", "system"} <= set(reader.fieldnames or []):
            raise DataError(path, 1, f"a key needs the columns id and system; found {reader.fieldnames}")
        return {row["id"].strip(): row["system"] for row in reader}


def _per_system(sheets: dict, items: list[str], key: dict[str, str], key_path) -> dict:
    unknown = [i for i in items if i not in key]
    if unknown:
        raise DataError(key_path, None, f"items {unknown[:5]} of the sheets are not in the key: a key of another "
                                        "sample?")
    out: dict[str, dict] = {}
    for system in dict.fromkeys(key[i] for i in items):
        mine = [i for i in items if key[i] == system]
        out[system] = {"items": len(mine)}
        for crit in (*CRITERIA, "label_correct"):
            values = [sheets[r][i][crit] for r in sheets for i in mine if sheets[r][i][crit] is not None]
            out[system][crit] = sum(values) / len(values) if values else None
    return out


def review_stats(paths: Sequence[str | Path], weights: str | None = None, level: str = "ordinal",
                 key: str | Path | None = None) -> dict:
    """Mean ratings (overall and per rater) and agreement per criterion, over items every sheet lists; with the
    ``key`` of a blinded sample, also the mean ratings of each system (over raters and items)."""
    if len(paths) < 2:
        raise DataError(paths[0] if paths else "review-stats", None,
                        "agreement needs the sheets of at least two raters")
    sheets = {}
    for p in paths:
        name = Path(p).stem
        if name in sheets:
            name = str(p)
        sheets[name] = read_ratings(p)
    raters = list(sheets)
    items = [i for i in sheets[raters[0]] if all(i in sheets[r] for r in raters)]
    if not items:
        raise DataError(paths[1], None, f"no item id in common with {paths[0]}")
    result = {"raters": raters, "items": len(items), "criteria": {}}
    for crit in (*CRITERIA, "label_correct"):
        by_rater = {r: [sheets[r][i][crit] for i in items] for r in raters}
        values = [v for vs in by_rater.values() for v in vs if v is not None]
        if not values:
            continue
        units = [[by_rater[r][k] for r in raters] for k in range(len(items))]
        binary = crit == "label_correct"
        result["criteria"][crit] = {
            "mean": sum(values) / len(values),
            "n": len(values),
            "by_rater": {r: _mean(v) for r, v in by_rater.items()},
            "cohen_kappa": pairwise_cohen(by_rater, None if binary else weights),
            "fleiss_kappa": _safe(fleiss_kappa, units),
            "krippendorff_alpha": _safe(krippendorff_alpha, units, "nominal" if binary else level),
        }
    if key is not None:
        result["systems"] = _per_system(sheets, items, read_key(key), key)
    return result


def _mean(values) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def _safe(fn, *args) -> float | None:
    try:
        return fn(*args)
    except ValueError:
        return None


__all__ = ["CRITERIA", "COLUMNS", "post_of", "sample_rows", "write_review_sample", "blinded_rows",
           "write_blinded_sample", "read_key", "read_ratings", "review_stats"]
