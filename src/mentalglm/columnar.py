"""Parquet in and out (the ``parquet`` extra: pyarrow), for ``analyze --file posts.parquet --out results.parquet``.

Input: the columns of a Parquet file, read a record batch at a time, only the text and id columns
(``inputs.read_posts`` picks them by the same names as for CSV and turns rows into posts).

Output: the same rows as the JSON lines of ``--out results.jsonl``, one column per field, typed:

| field | Arrow type |
|---|---|
| id, task, explanation, raw, parse_status, model, error | string (``error`` null when there is none) |
| labels, warnings, label_en | list<string> |
| latency_ms | double |
| high_risk | bool |
| evidence_ok, explanation_consistent | bool, null without an explanation |
| scores | map<string, double>: label -> probability, in the head's label order (empty map without heads) |
| runner_up | struct<label: string, p: double>, null unless the label heads were unsure |
| explanation_labels | list<string>, null without an explanation |
| quotes_repaired | int64 |
| decided_by | string, null without label heads |

A field this table does not know (added to the rows later) gets its type from its values: strings, booleans,
numbers and lists of strings as such, anything else as a JSON string (marked in the field's metadata, and decoded
back when the file is read).

A Parquet file cannot be appended to, and a killed writer leaves a file without its footer, which nothing can
read. So a run writing Parquet writes its rows as JSON lines to ``<out>.partial.jsonl`` first, flushed row by
row like any ``--out`` file (the same ``--resume`` machinery: a torn last line cut off, error rows redone), and
packs them into ``<out>`` at the end (a temporary file, then a rename), deleting the partial file. ``--resume``
of a finished Parquet file unpacks it into a new partial file first; of a killed run, continues its partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from copy import copy
from pathlib import Path
from typing import Callable, Iterator

from .errors import require
from .jsonl import meta_path, read_objects

PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_FIELD = b"mentalglm.json"  # field metadata: the column holds JSON text, decoded when read back


def is_parquet(path: str | os.PathLike | None, fmt: str | None = None) -> bool:
    if fmt:
        return fmt.lower().lstrip(".") in ("parquet", "pq")
    return path is not None and str(path) != "-" and Path(str(path)).suffix.lower() in PARQUET_SUFFIXES


def _pa():
    return require("pyarrow", "parquet")


def _pq():
    _pa()
    import pyarrow.parquet as pq

    return pq


# ------------------------------------------------------------------------------------------------------ input
def parquet_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a Parquet file (its schema only; no data read)."""
    return list(_pq().ParquetFile(path).schema_arrow.names)


def parquet_rows(path: str | os.PathLike, columns: list[str], batch_rows: int = 4096) -> Iterator[dict]:
    """The rows of ``columns`` as dicts, a record batch at a time (a big file is never in memory at once)."""
    with _pq().ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
            yield from batch.to_pylist()


# ----------------------------------------------------------------------------------------------------- output
def known_types() -> dict:
    """field -> Arrow type of every field typed by name (the module doc's table), in the rows' field order."""
    pa = _pa()
    strings = pa.list_(pa.string())
    return {"id": pa.string(), "task": pa.string(), "labels": strings, "explanation": pa.string(),
            "raw": pa.string(), "parse_status": pa.string(), "model": pa.string(), "latency_ms": pa.float64(),
            "high_risk": pa.bool_(), "warnings": strings, "error": pa.string(), "label_en": strings,
            "scores": pa.map_(pa.string(), pa.float64()), "evidence_ok": pa.bool_(),
            "runner_up": pa.struct([("label", pa.string()), ("p", pa.float64())]), "explanation_labels": strings,
            "explanation_consistent": pa.bool_(), "quotes_repaired": pa.int64(), "decided_by": pa.string()}


def _inferred(pa, name: str, values: list):
    """(field, values) for a field the schema does not name, typed from its values (see the module doc)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pa.field(name, pa.bool_() if present else pa.string()), values
    if all(isinstance(v, str) for v in present):
        return pa.field(name, pa.string()), values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        kind = pa.int64() if all(isinstance(v, int) for v in present) else pa.float64()
        return pa.field(name, kind), values
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in present):
        return pa.field(name, pa.list_(pa.string())), values
    as_json = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    return pa.field(name, pa.string(), metadata={JSON_FIELD: b"1"}), as_json


def rows_table(rows: list[dict]):
    """An Arrow table of result rows (dicts as written to JSON lines), typed as in the module doc."""
    pa = _pa()
    known = known_types()
    names = list(dict.fromkeys([k for row in rows[:1] for k in row] + [k for row in rows for k in row])) or list(known)
    fields, arrays = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        if name in known:
            if name == "scores":
                values = [None if v is None else list(v.items()) for v in values]
            field = pa.field(name, known[name])
        else:
            field, values = _inferred(pa, name, values)
        fields.append(field)
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def table_rows(table) -> list[dict]:
    """Result rows back from an Arrow table: maps as dicts, JSON columns decoded (the inverse of ``rows_table``)."""
    pa = _pa()
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    encoded = [f.name for f in table.schema if f.metadata and f.metadata.get(JSON_FIELD)]
    rows = table.to_pylist()
    for row in rows:
        for name in maps:
            if row[name] is not None:
                row[name] = dict(row[name])
        for name in encoded:
            if row[name] is not None:
                row[name] = json.loads(row[name])
    return rows


def write_parquet(rows: list[dict], path: str | os.PathLike) -> None:
    """Write result rows to a Parquet file, atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _pq().write_table(rows_table(rows), tmp)
    os.replace(tmp, path)


def read_parquet_rows(path: str | os.PathLike) -> list[dict]:
    return table_rows(_pq().read_table(path))


# ----------------------------------------------------------------------------- a run whose --out is Parquet
def partial_path(out: str | os.PathLike) -> Path:
    """Where a run writing Parquet keeps its rows as JSON lines until it packs them (see the module doc)."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def remove_parquet_output(out: Path) -> None:
    for p in (out, meta_path(out), partial_path(out), meta_path(partial_path(out))):
        p.unlink(missing_ok=True)


def unpack(out: Path) -> None:
    """A finished Parquet output as a partial JSON-lines file (and its settings) to continue (``--resume``)."""
    part = partial_path(out)
    tmp = part.with_name(part.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in read_parquet_rows(out))
    os.replace(tmp, part)
    if meta_path(out).exists():
        shutil.copyfile(meta_path(out), meta_path(part))


def pack(out: Path) -> int:
    """The partial JSON-lines file into the Parquet output; the partial file and its settings file are removed
    once the Parquet file and its settings are in place. Returns the number of rows."""
    part = partial_path(out)
    rows = [row for _, row in read_objects(part)[0]]
    write_parquet(rows, out)
    if meta_path(part).exists():
        os.replace(meta_path(part), meta_path(out))
    part.unlink(missing_ok=True)
    return len(rows)


def spooled(args, run: Callable[[object], int]) -> int:
    """Run ``run`` (the JSON-lines ``analyze``) with ``--out`` on the partial file of the Parquet output
    ``args.out``, then pack it into the Parquet file (exit 0 or 1); see the module doc. A run refused before any
    work (exit 2) leaves the outputs as they were; an interrupted one leaves its partial file for ``--resume``."""
    _pa()  # the extra first, before anything is read or loaded
    out = Path(args.out)
    part = partial_path(out)
    unpacked = None  # the size of a partial file unpacked from a finished Parquet file by this run
    if args.overwrite:
        remove_parquet_output(out)
    elif args.resume:
        if out.exists() and not part.exists():
            unpack(out)
            unpacked = part.stat().st_size
    elif out.exists() or part.exists():
        which = out if out.exists() else part
        print(f"error: {which} exists; pass --resume to continue it or --overwrite to replace it", file=sys.stderr)
        return 2
    inner = copy(args)
    inner.out = str(part)
    code = None
    try:
        code = run(inner)
    finally:
        if code in (0, 1) and part.exists():
            n = pack(out)
            print(f"packed {n} rows into {out}", file=sys.stderr)
        elif unpacked is not None and part.exists() and part.stat().st_size == unpacked:
            # refused or failed before writing anything: the Parquet file still holds it all
            part.unlink()
            meta_path(part).unlink(missing_ok=True)
    return code

