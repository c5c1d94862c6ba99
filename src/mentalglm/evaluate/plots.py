"""Report figures as PNG bytes: per-class F1 bars and confusion-matrix heatmaps.

Matplotlib's object API (``Figure`` + Agg canvas), not pyplot: no global state, no display
needed. Axis labels use the English label names, so no CJK font has to be installed.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from ..tasks import TaskSpec

COLORS = ["#3b6ea8", "#e08a2c", "#4f9d69", "#b5495b", "#7a5ea8", "#8c8c8c"]


def _label_names(spec: TaskSpec) -> list[str]:
    return [f"{lab.code} {lab.en}" if lab.code else lab.en for lab in spec.labels]


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def per_class_f1_png(spec: TaskSpec, systems: Sequence[tuple[str, dict]]) -> bytes:
    """Horizontal grouped bars: one group per label, one bar per system (name, per_class dict)."""
    from matplotlib.figure import Figure

    names = _label_names(spec)
    k = max(1, len(systems))
    height = 0.8 / k
    fig = Figure(figsize=(7.5, 0.9 + 0.28 * len(names) * max(1.0, k * 0.6)))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    for i, (system, per_class) in enumerate(systems):
        f1 = [per_class[n]["f1"] * 100 for n in spec.label_names]
        ax.barh(y + (i - (k - 1) / 2) * height, f1, height=height, color=COLORS[i % len(COLORS)], label=system)
    support = [max((pc[n]["support"] for _, pc in systems), default=0) for n in spec.label_names]
    ax.set_yticks(y, [f"{n} (n={s})" for n, s in zip(names, support)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("F1 (%)")
    ax.set_title(f"{spec.title_en}: F1 per {'label' if spec.multi_label else 'class'}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / len(names)), ncol=2, frameon=False)
    return _png(fig)


def confusion_png(spec: TaskSpec, system: str, confusion: dict) -> bytes:
    """Gold rows x predicted columns (the last column: invalid answers); colour = share of the gold row."""
    from matplotlib.figure import Figure

    matrix = np.array(confusion["matrix"], dtype=float)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    names = _label_names(spec)
    size = 2.2 + 0.42 * len(names)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(names) + 1), [*names, "invalid"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{system}: {spec.title_en}", fontsize=10)
    for (r, c), value in np.ndenumerate(matrix):
        if value:
            ax.text(c, r, int(value), ha="center", va="center", fontsize=7,
                    color="white" if share[r, c] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    return _png(fig)
