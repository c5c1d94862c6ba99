"""The data card of a build: counts per task, label and split, QC and drop reasons, a length histogram."""

from __future__ import annotations

from pathlib import Path

from .. import DISCLAIMER

PLOT = "explanation_lengths.png"


def plot_lengths(report: dict, path: Path) -> Path | None:
    """Histogram of explanation lengths (characters), one outline per task."""
    series = {name: t["explanation_lengths"] for name, t in report["tasks"].items() if t["explanation_lengths"]}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    top = max(max(v) for v in series.values())
    bins = list(range(0, top + 21, max(10, (top + 20) // 40)))
    for name, lengths in series.items():
        ax.hist(lengths, bins=bins, histtype="step", linewidth=1.6, label=f"{name} (n={len(lengths)})")
    ax.set_xlabel("explanation length (characters)")
    ax.set_ylabel("samples")
    ax.set_title("C-IMHI explanations kept after quality control")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _quality_control(report: dict) -> list[str]:
    """The card's quality-control section: thresholds, rule failures, tries of the kept samples, drop reasons."""
    tasks, qc = report["tasks"], report["config"]["qc"]
    out = ["## Quality control", "",
           f"Thresholds: length {qc['min_chars']}–{qc['max_chars']} characters, CJK share ≥ {qc['min_cjk_share']}, "
           f"copy ratio ≤ {qc['max_copy_ratio']}, near-duplicate post Jaccard ≥ {qc['near_duplicate_jaccard']} "
           f"(character {qc['shingle']}-grams).", "",
           "Rule failures, counted over every checked explanation (a sample can fail several rules, and again after "
           "regeneration):", ""]
    rules = list(report["rules"])
    out += [_table(["rule", *tasks, "what it checks"],
                   [[f"`{r}`", *(t["checks_failed"][r] for t in tasks.values()), report["rules"][r]]
                    for r in rules]), ""]
    out += ["Tries needed by the kept samples (1 = the first explanation passed):", ""]
    tries = sorted({k for t in tasks.values() for k in t["tries_of_accepted"]}, key=int)
    out += [_table(["task", *tries, "reused source explanations"],
                   [[n, *(t["tries_of_accepted"].get(k, 0) for k in tries), t["reused_explanations"]]
                    for n, t in tasks.items()]), ""]
    out += ["Drop reasons (the rule failed on the last try):", ""]
    reasons = sorted({r for t in tasks.values() for r in t["dropped"]})
    out += [_table(["task", *reasons], [[n, *(t["dropped"].get(r, 0) for r in reasons)] for n, t in tasks.items()])
            if reasons else "Nothing was dropped.", ""]
    return out


def card_markdown(report: dict, plot: str | None = PLOT) -> str:
    cfg, tasks = report["config"], report["tasks"]
    out = ["# C-IMHI build: data card", ""]
    if cfg.get("command"):
        out += ["Built with:", "", "```", cfg["command"], "```", ""]
    cap = (f"a stratified sample of at most {cfg['max_per_task']} posts per task" if cfg["max_per_task"]
           else "every post")
    teacher = cfg["teacher"] or "none (source explanations only)"
    out += [f"Teacher: `{teacher}`; {cap}; up to {cfg['retries']} regenerations per failing sample; "
            f"source explanations reused: {'yes' if cfg['reuse_explanations'] else 'no'}; seed {cfg['seed']}; "
            f"wall time {report['seconds']:.0f} s.", ""]

    out += ["## Counts per task and split", ""]
    rows = []
    for name, t in tasks.items():
        for split in t["loaded"]:
            dropped = t["sampled"].get(split, 0) - t["accepted"].get(split, 0)
            rows.append([name, split, t["loaded"][split], t["after_dedup"][split], t["sampled"].get(split, 0),
                         t["accepted"].get(split, 0), dropped])
    total = [sum(r[k] for r in rows) for k in (2, 3, 4, 5, 6)]
    rows.append(["**all**", "", *total])
    out += [_table(["task", "split", "source posts", "after de-duplication", "sampled", "kept", "dropped"], rows), ""]

    out += ["## Labels of the kept samples", ""]
    for name, t in tasks.items():
        splits = list(t["labels"])
        labels = list(dict.fromkeys(lab for s in splits for lab in t["labels"][s]))
        out += [f"**{name}**", "", _table(["label", *splits], [[lab, *(t["labels"][s].get(lab, 0) for s in splits)]
                                                               for lab in labels]), ""]

    out += ["## Duplicates and leaks (removed before any teacher call)", ""]
    kinds = list(report["dedup_kinds"])
    out += [_table(["task", *kinds], [[n, *(t["removed"][k] for k in kinds)] for n, t in tasks.items()]), ""]
    out += [f"- `{k}`: {v}" for k, v in report["dedup_kinds"].items()]
    leak_lines = [f"- {n}: `{lk['id']}` ({lk['first_split']} and {lk['other_split']})"
                  for n, t in tasks.items() for lk in t["leaks"]]
    out += ["", "Posts found in two splits (`leaks()`):" if leak_lines else "No post sits in two splits.",
            *leak_lines, ""]

    out += _quality_control(report)

    out += ["## Teacher calls and tokens", ""]
    out += [_table(["task", "new calls", "cached calls", "prompt tokens", "completion tokens", "call seconds"],
                   [[n, t["teacher"].get("calls", 0), t["teacher"].get("cached_calls", 0),
                     t["teacher"].get("prompt_tokens", 0), t["teacher"].get("completion_tokens", 0),
                     round(t["teacher"].get("seconds", 0.0), 1)] for n, t in tasks.items()]), ""]
    bad = report["cache"]["bad_lines"]
    if bad:
        out += [f"Damaged cache lines skipped: {', '.join(str(b['line']) for b in bad)}.", ""]

    out += ["## Explanation lengths (characters)", ""]
    out += [_table(["task", "n", "mean", "median", "min", "max"],
                   [[n, *(t["explanation_chars"].get(k, "") for k in ("n", "mean", "median", "min", "max"))]
                    for n, t in tasks.items()]), ""]
    if plot:
        out += [f"![explanation lengths]({plot})", ""]
    out += ["## Caveats", "",
            "- Explanations are written by a language model that was told the gold label; they justify the label, "
            "they do not validate it. Rate a sample with `mentalglm data review-sample` before relying on them.",
            "- Some posts describe suicidal intent. Keep the data out of logs and public issues.",
            f"- {DISCLAIMER}", ""]
    return "\n".join(out)


def write_card(report: dict, folder: Path) -> Path:
    plot = plot_lengths(report, folder / PLOT)
    path = folder / "DATA_CARD.md"
    path.write_text(card_markdown(report, PLOT if plot else None), encoding="utf-8")
    return path
