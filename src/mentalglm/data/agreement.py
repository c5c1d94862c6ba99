"""Inter-rater agreement: Cohen's kappa (optionally weighted), Fleiss' kappa, Krippendorff's alpha.

Small exact implementations (no dependency), tested against textbook values: Cohen (1960) via the
usual 2x2 example, Fleiss (1971) via the 10-subject, 14-rater example, Krippendorff (2011) via his
4-coder, 12-unit example with missing values (nominal 0.743, ordinal 0.815, interval 0.849).
``None`` marks a missing rating.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Hashable, Sequence

Value = Hashable | None


def cohen_kappa(a: Sequence[Value], b: Sequence[Value], weights: str | None = None) -> float:
    """Cohen's kappa of two raters over the items both rated.

    ``weights``: None (unweighted), "linear" or "quadratic"; weighted kappa needs numeric ratings and
    uses their numeric distance (a scale point nobody used still counts as a step).
    """
    if len(a) != len(b):
        raise ValueError(f"the two raters rated {len(a)} and {len(b)} items")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        raise ValueError("no item rated by both raters")
    cats = sorted({v for p in pairs for v in p}, key=_sort_key)
    n = len(pairs)
    observed = Counter(pairs)
    ma, mb = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)

    def w(x, y) -> float:
        if weights is None:
            return 0.0 if x == y else 1.0
        d = abs(float(x) - float(y))
        if weights == "linear":
            return d
        if weights == "quadratic":
            return d * d
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")

    d_obs = sum(w(x, y) * c for (x, y), c in observed.items()) / n
    d_exp = sum(w(x, y) * ma[x] * mb[y] for x in cats for y in cats) / (n * n)
    if d_exp == 0:
        return 1.0  # both raters used a single, identical category: perfect (and degenerate) agreement
    return 1.0 - d_obs / d_exp


def fleiss_kappa(items: Sequence[Sequence[Value]]) -> float:
    """Fleiss' kappa; ``items`` holds each item's ratings. Items with a missing rating are left out,
    because the statistic needs the same number of raters per item."""
    complete = [[v for v in item] for item in items if item and all(v is not None for v in item)]
    if not complete:
        raise ValueError("no item rated by every rater")
    raters = len(complete[0])
    if raters < 2 or any(len(item) != raters for item in complete):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per item")
    n_items = len(complete)
    totals: Counter = Counter()
    p_items = []
    for item in complete:
        counts = Counter(item)
        totals.update(counts)
        p_items.append((sum(c * c for c in counts.values()) - raters) / (raters * (raters - 1)))
    p_bar = sum(p_items) / n_items
    p_e = sum((c / (n_items * raters)) ** 2 for c in totals.values())
    if p_e == 1:
        return 1.0
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha(items: Sequence[Sequence[Value]], level: str = "nominal") -> float:
    """Krippendorff's alpha over units with any number of (possibly missing) values.

    ``level``: nominal, ordinal, interval or ratio (ordinal/interval/ratio need numeric values).
    """
    coincidence: dict[tuple, float] = defaultdict(float)
    for item in items:
        values = [v for v in item if v is not None]
        m = len(values)
        if m < 2:
            continue  # a unit with one value carries no information about agreement
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(values[i], values[j])] += 1.0 / (m - 1)
    if not coincidence:
        raise ValueError("no unit has two or more values")
    n_c: Counter = Counter()
    for (c, _), o in coincidence.items():
        n_c[c] += o
    cats = sorted(n_c, key=_sort_key)
    n = sum(n_c.values())
    delta = _metric(level, cats, n_c)
    d_obs = sum(o * delta(c, k) for (c, k), o in coincidence.items())
    d_exp = sum(n_c[c] * n_c[k] * delta(c, k) for c in cats for k in cats) / (n - 1)
    if d_exp == 0:
        return 1.0
    return 1.0 - d_obs / d_exp


def _metric(level: str, cats: list, n_c: Counter):
    if level == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if level == "interval":
        return lambda c, k: (float(c) - float(k)) ** 2
    if level == "ratio":
        return lambda c, k: 0.0 if c == k else ((float(c) - float(k)) / (float(c) + float(k))) ** 2
    if level == "ordinal":
        index = {c: i for i, c in enumerate(cats)}

        def ordinal(c, k) -> float:
            lo, hi = sorted((index[c], index[k]))
            between = sum(n_c[cats[g]] for g in range(lo, hi + 1))
            return (between - (n_c[c] + n_c[k]) / 2) ** 2

        return ordinal
    raise ValueError(f"level must be nominal, ordinal, interval or ratio, not {level!r}")


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))


def pairwise_cohen(ratings: dict[str, Sequence[Value]], weights: str | None = None) -> dict[str, float]:
    """Cohen's kappa for every pair of raters (``"a~b"``), plus their mean under ``"mean"``."""
    out = {}
    for r1, r2 in combinations(sorted(ratings), 2):
        try:
            out[f"{r1}~{r2}"] = cohen_kappa(ratings[r1], ratings[r2], weights)
        except ValueError:
            continue
    if out:
        out["mean"] = sum(out.values()) / len(out)
    return out
