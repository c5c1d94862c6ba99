"""One report from several prediction files: ``report.md`` (+ ``plots/*.png``) and a self-contained
``report.html`` (the same plots embedded as base64, so the file can be mailed or archived alone).

Per task: a comparison table per gold set (systems scored on the same posts; the best value
of each column in bold; 95% bootstrap intervals in brackets; the literature anchors of
DESIGN.md §5 as reference rows with their sources), paired differences against a reference
system when one is named, per-class F1 bars, confusion matrices, explanation scores, the explanation checks of
analyze rows (quotes in the post, explanation arguing for its label) and LLM-judge scores where present.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Sequence

from .. import DISCLAIMER
from ..tasks import get_task
from .anchors import anchors_for
from .classification import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, ScoreCard, evaluate, paired_difference_intervals
from .explanations import ExplanationScores, score_explanations
from .plots import confusion_png, per_class_f1_png
from .predictions import CHECKS, Aligned, GoldSet, align, check_rate, explanation_checks, read_predictions

METRIC_NAMES = {
    "accuracy": "Accuracy", "weighted_f1": "Weighted F1", "macro_f1": "Macro F1", "micro_f1": "Micro F1",
    "samples_f1": "Samples F1", "high_risk_f1": "High-risk F1", "within_one": "Within-one acc.",
    "binary_high_f1": "High-risk F1 (6–10)", "binary_accuracy": "Binary acc. (0–5 / 6–10)",
    "level1_micro_f1": "Level-1 micro F1", "level2_micro_f1": "Level-2 micro F1",
    "overall_micro_f1": "Overall micro F1", "invalid_rate": "Invalid rate",
}
EXPLANATION_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF",
                     "bertscore_f1": "BERTScore F1", "bartscore_f": "BARTScore"}
LOWER_IS_BETTER = {"invalid_rate"}


@dataclass
class Entry:
    """One system on one task, scored on one gold set."""

    system: str
    task: str
    gold: str  # which posts were scored
    card: ScoreCard
    explanations: ExplanationScores | None = None
    judge: dict | None = None  # judge.summarize(...)
    source: str = ""
    family: str = ""  # the paper's grouping of systems (discriminative, general LLM, fine-tuned LLM)
    aligned: Aligned | None = None  # the posts and answers scored, for paired differences
    checks: dict = field(default_factory=dict)  # predictions.explanation_checks of the scored rows


def entry_from_file(path: str | Path, gold: GoldSet, system: str | None = None, subset: bool = False,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    bertscore_model: str | None = None, bertscore_layer: int | None = None) -> Entry:
    """Score a predictions file on a gold set; explanations too where both sides have them."""
    spec = get_task(gold.task)
    rows = read_predictions(path, spec.name)
    aligned = align(gold, rows, path, subset)
    card = evaluate(spec, aligned.gold, aligned.pred, aligned.valid, resamples, seed)
    pairs = [(r.explanation, e.explanation) for r, e in zip(aligned.rows, aligned.examples) if e.explanation]
    explanations = None
    if pairs and any(c.strip() for c, _ in pairs):  # a labels-only run has nothing to compare
        explanations = score_explanations([c for c, _ in pairs], [r for _, r in pairs],
                                          bertscore_model=bertscore_model, bertscore_layer=bertscore_layer,
                                          language=spec.language, resamples=resamples, seed=seed)
    where = gold.description
    if len(aligned.ids) < len(gold.examples):
        where += f"; only the {len(aligned.ids)} predicted posts"
    return Entry(system or rows[0].model or Path(path).stem, spec.name, where, card, explanations, source=str(path),
                 aligned=aligned, checks=explanation_checks(aligned.rows))


# ---------------------------------------------------------------------------------------------- layout
@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] = field(default_factory=list)
    italic_rows: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    caption: str
    filename: str
    png: bytes


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)  # per-class tables (folded in HTML)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(card: ScoreCard, key: str) -> str:
    if key not in card.metrics:
        return "—"
    value = _pct(card.metrics[key])
    if key in card.intervals:
        lo, hi = card.intervals[key]
        value += f" [{_pct(lo)}, {_pct(hi)}]"
    return value


def metric_columns(entries: Sequence[Entry]) -> list[str]:
    """The task's headline metrics, then any other metric all entries have, then the invalid rate."""
    spec = get_task(entries[0].task)
    keys = [k for k in spec.metrics if any(k in e.card.metrics for e in entries)]
    extra = [k for k in METRIC_NAMES if k not in keys and k != "invalid_rate"
             and all(k in e.card.metrics for e in entries)]
    return keys + extra + ["invalid_rate"]


def _anchor_note(split: str | None) -> str:
    if split == "test":
        return ("Published on the official test split: comparable with a row above only if your test file is the "
                "publishers' and the system was trained on the same data")
    return "A reference point on another split, not comparable row for row"


def _comparison(entries: Sequence[Entry], anchors, split: str | None = None) -> Table:
    keys = metric_columns(entries)
    family = any(e.family for e in entries)
    lead = ["System", "Family"] if family else ["System"]
    headers = [*lead, *[METRIC_NAMES.get(k, k) for k in keys], "n"]
    rows, bold = [], []
    for e in entries:
        rows.append([e.system, *([e.family or "—"] if family else []), *[_cell(e.card, k) for k in keys],
                     str(e.card.n)])
        bold.append([False] * len(headers))
    for col, key in enumerate(keys, start=len(lead)):
        values = [round(100 * e.card.metrics[key], 1) for e in entries if key in e.card.metrics]
        if len(values) < 2:
            continue  # nothing to compare against
        best = min(values) if key in LOWER_IS_BETTER else max(values)
        for i, e in enumerate(entries):
            if key in e.card.metrics and round(100 * e.card.metrics[key], 1) == best:
                bold[i][col] = True
    table = Table(f"Posts scored: {entries[0].gold}", headers, rows, bold)
    for k, a in enumerate(anchors, start=1):
        if a.metric not in keys:
            continue
        table.italic_rows.add(len(table.rows))
        table.rows.append([f"{a.system} [{k}]", *(["literature"] if family else []),
                           *[a.shown if key == a.metric else "—" for key in keys], "—"])
        table.bold.append([False] * len(headers))
        table.notes.append(f"[{k}] {a.note}. Source: {a.source}. {_anchor_note(split)}.")
    return table


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def _difference_table(entries: Sequence[Entry], reference: str) -> Table | None:
    """Each system minus the reference on the same posts, with a paired bootstrap interval: the resamples draw
    the same posts for both systems, so the interval is much narrower than two overlapping separate ones."""
    ref = next((e for e in entries if e.system == reference), None)
    if ref is None or ref.aligned is None:
        return None
    spec = get_task(ref.task)
    keys = [k for k in metric_columns(entries) if k != "invalid_rate" and k in ref.card.metrics]
    rows, notes = [], []
    boot = ref.card.bootstrap
    for e in entries:
        if e is ref or e.aligned is None:
            continue
        if e.aligned.ids != ref.aligned.ids:
            notes.append(f"{e.system}: not on the same posts as {reference}; no paired difference")
            continue
        intervals = paired_difference_intervals(spec, ref.aligned.gold, ref.aligned.pred, e.aligned.pred,
                                                ref.aligned.valid, e.aligned.valid,
                                                boot.get("resamples", BOOTSTRAP_RESAMPLES),
                                                boot.get("seed", BOOTSTRAP_SEED))
        cells = []
        for k in keys:
            if k not in e.card.metrics:
                cells.append("—")
                continue
            diff = e.card.metrics[k] - ref.card.metrics[k]
            lo, hi = intervals.get(k, (None, None))
            cells.append(_signed(diff) + (f" [{_signed(lo)}, {_signed(hi)}]" if lo is not None else ""))
        rows.append([e.system, *cells])
    if not rows:
        return None
    notes.append("An interval that excludes 0 is a difference the posts support at the 95% level "
                 "(paired percentile bootstrap over posts).")
    return Table(f"Difference to {reference} on the same posts (points; 95% paired bootstrap interval)",
                 ["System", *[METRIC_NAMES.get(k, k) for k in keys]], rows, notes=notes)


def _per_class_table(e: Entry) -> Table:
    spec = get_task(e.task)
    rows = [[f"{name} ({spec.label(name).en})", _pct(pc["precision"]), _pct(pc["recall"]), _pct(pc["f1"]),
             str(pc["support"]), str(pc["predicted"])] for name, pc in e.card.per_class.items()]
    return Table(f"{e.system}: per-{'label' if spec.multi_label else 'class'} scores ({e.gold})",
                 ["Label", "Precision", "Recall", "F1", "Support", "Predicted"], rows)


def _explanation_table(entries: Sequence[Entry]) -> Table | None:
    scored = [e for e in entries if e.explanations]
    if not scored:
        return None
    keys = [k for k in EXPLANATION_NAMES if any(k in e.explanations.means for e in scored)]
    rows = []
    for e in scored:
        ex = e.explanations
        cells = []
        for k in keys:
            if k not in ex.means:
                cells.append("—")
                continue
            lo, hi = ex.intervals.get(k, (None, None))
            cells.append(f"{ex.means[k]:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None else ""))
        rows.append([e.system, *cells, str(ex.n), str(ex.empty)])
    notes = sorted({s for e in scored for s in e.explanations.skipped})
    return Table("Explanations against the reference explanations (per-post F1 x100, mean [95% interval]); "
                 "ROUGE over characters", ["System", *[EXPLANATION_NAMES[k] for k in keys], "n", "empty"],
                 rows, notes=notes)


def _checks_table(entries: Sequence[Entry]) -> Table | None:
    checked = [e for e in entries if e.checks]
    if not checked:
        return None
    return Table("Explanation checks of analyze rows: every quote is the post's own words (after near-miss quotes "
                 "were repaired; evidence_ok), and the explanation, read alone, argues for the row's label "
                 "(explanation_consistent; the 0-10 scale: within one level)",
                 ["System", *CHECKS.values()],
                 [[e.system, *(check_rate(e.checks.get(k)) for k in CHECKS)] for e in checked])


def _judge_table(entries: Sequence[Entry]) -> Table | None:
    judged = [e for e in entries if e.judge]
    if not judged:
        return None
    from .judge import CRITERIA

    rows = [[e.system, *[("—" if e.judge["means"][c] is None else f"{e.judge['means'][c]:.2f}") for c in CRITERIA],
             _pct(e.judge["invalid_rate"]), str(e.judge["n"])] for e in judged]
    return Table("LLM judge, mean score 0–3 over valid judgements (rubric in mentalglm.evaluate.judge)",
                 ["System", *CRITERIA, "Invalid judge answers (%)", "n"], rows)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]


def build_sections(entries: Sequence[Entry], reference: str | None = None, split: str | None = None
                   ) -> list[Section]:
    sections = []
    for task in dict.fromkeys(e.task for e in entries):
        spec = get_task(task)
        mine = [e for e in entries if e.task == task]
        section = Section(f"{spec.title_en} ({spec.name}, {spec.title})")
        for k, gold in enumerate(dict.fromkeys(e.gold for e in mine), start=1):
            group = [e for e in mine if e.gold == gold]
            section.tables.append(_comparison(group, anchors_for(task), split))
            difference = _difference_table(group, reference) if reference else None
            for extra in (difference, _explanation_table(group), _checks_table(group), _judge_table(group)):
                if extra:
                    section.tables.append(extra)
            name = f"{task}-{k}"
            section.figures.append(Figure(f"F1 per {'label' if spec.multi_label else 'class'} — {gold}",
                                          f"{name}-per-class.png",
                                          per_class_f1_png(spec, [(e.system, e.card.per_class) for e in group])))
            for i, e in enumerate(group, start=1):
                if e.card.confusion:
                    section.figures.append(Figure(f"Confusion matrix: {e.system} — {gold}",
                                                  f"{name}-confusion-{i}-{_slug(e.system)}.png",
                                                  confusion_png(spec, e.system, e.card.confusion)))
                section.details.append(_per_class_table(e))
        sections.append(section)
    return sections


# -------------------------------------------------------------------------------------------- markdown
def _md_table(t: Table) -> str:
    def fmt(i, j, cell):
        cell = cell.replace("|", "\\|")
        if t.bold and t.bold[i][j]:
            cell = f"**{cell}**"
        return f"*{cell}*" if i in t.italic_rows and j == 0 else cell

    lines = [f"*{t.caption}*", "", "| " + " | ".join(t.headers) + " |",
             "|" + "|".join("---" if j == 0 else "---:" for j in range(len(t.headers))) + "|"]
    lines += ["| " + " | ".join(fmt(i, j, c) for j, c in enumerate(row)) + " |" for i, row in enumerate(t.rows)]
    lines += [""] + [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def _intro(command: str, notes: Sequence[str], resamples: int, seed: int) -> list[str]:
    lines = [f"Generated {date.today().isoformat()} by mentalglm."]
    if command:
        lines.append(f"Command: `{command}`")
    lines.append(f"Scores in percent; brackets: 95% percentile bootstrap interval over posts ({resamples} resamples, "
                 f"seed {seed}). Invalid (unparseable) answers count as wrong. Bold: best of the systems scored "
                 "on the same posts. Italic rows: published numbers, for orientation (their notes say on which posts).")
    return [*lines, *notes]


def to_markdown(sections: Sequence[Section], title: str, intro: Sequence[str]) -> str:
    out = [f"# {title}", "", *[f"{line}\n" for line in intro], f"> {DISCLAIMER}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [_md_table(t) for t in s.tables]
        out += [f"![{f.caption}](plots/{f.filename})\n" for f in s.figures]
        if s.details:
            out.append("<details><summary>Per-class scores</summary>\n")
            out += [_md_table(t) for t in s.details]
            out.append("</details>\n")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ html
CSS = """body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}td{white-space:nowrap}
.ci{font-size:.78rem;color:#666}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}tr.anchor td{font-style:italic;color:#555;background:#fafafa}
caption{caption-side:top;text-align:left;font-style:italic;margin-bottom:.3rem;color:#444}
.notes{font-size:.82rem;color:#555;margin-top:-.8rem}figure{display:inline-block;margin:.5rem 1rem 1rem 0;
vertical-align:top}figure img{max-width:100%;border:1px solid #eee}figure.confusion{max-width:500px}
figcaption{font-size:.82rem;color:#555}.disclaimer{background:#fff6e0;border-left:4px solid #e0a82c;
padding:.5rem .8rem}code{background:#f3f3f3;padding:0 .2rem}"""


def _html_table(t: Table) -> str:
    e = html.escape
    parts = [f"<table><caption>{e(t.caption)}</caption><thead><tr>",
             *[f"<th>{e(h)}</th>" for h in t.headers], "</tr></thead><tbody>"]
    for i, row in enumerate(t.rows):
        parts.append('<tr class="anchor">' if i in t.italic_rows else "<tr>")
        for j, cell in enumerate(row):
            value, sep, interval = cell.partition(" [")
            text = f"<strong>{e(value)}</strong>" if t.bold and t.bold[i][j] else e(value)
            if sep:  # the interval on its own line keeps wide tables inside the page
                text += f'<br><span class="ci">[{e(interval)}</span>'
            parts.append(f"<td>{text}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    if t.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in t.notes) + "</ul>")
    return "".join(parts)


def _inline_code(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def to_html(sections: Sequence[Section], title: str, intro: Sequence[str]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", *[f"<p>{_inline_code(e(line))}</p>" for line in intro],
            f'<p class="disclaimer">{e(DISCLAIMER)}</p>']
    for s in sections:
        body.append(f"<h2>{e(s.title)}</h2>")
        body += [_html_table(t) for t in s.tables]
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            kind = ' class="confusion"' if "confusion" in f.filename else ""
            body.append(f'<figure{kind}><img alt="{e(f.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(f.caption)}</figcaption></figure>")
        if s.details:
            body.append("<details><summary>Per-class scores</summary>" + "".join(_html_table(t) for t in s.details)
                        + "</details>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{''.join(body)}</body></html>\n")


def write_report(entries: Sequence[Entry], out_dir: str | Path, title: str = "mentalglm evaluation report",
                 command: str = "", notes: Sequence[str] = (), reference: str | None = None,
                 split: str | None = None) -> tuple[Path, Path]:
    """Write report.md, plots/*.png (replacing earlier ones) and report.html into ``out_dir``;
    returns (md path, html path). ``reference``: the system the others are compared with, pair by pair;
    ``split``: the split every entry was scored on, when it is one (the anchors' notes depend on it)."""
    if not entries:
        raise ValueError("no entries to report")
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for stale in (out / "plots").glob("*.png"):  # plots of an earlier report in this folder would linger unlinked
        stale.unlink()
    sections = build_sections(entries, reference, split)
    boot = entries[0].card.bootstrap
    intro = _intro(command, notes, boot.get("resamples", BOOTSTRAP_RESAMPLES), boot.get("seed", BOOTSTRAP_SEED))
    for s in sections:
        for f in s.figures:
            (out / "plots" / f.filename).write_bytes(f.png)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(sections, title, intro), encoding="utf-8")
    page.write_text(to_html(sections, title, intro), encoding="utf-8")
    return md, page
