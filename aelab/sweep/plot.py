"""One metric against one swept key, one line per setting of the other keys (per family), seeds as error bars."""

from __future__ import annotations

import re
from pathlib import Path

from aelab.errors import UserError
from aelab.files import save_figure
from aelab.metrics.directions import DESCRIBED
from aelab.sweep.table import SweepTable, as_number


def numeric_keys(report: SweepTable) -> list[str]:
    """Varying keys (not the seed) whose values are all numbers, with at least two of them."""
    out = []
    for key in report.group_keys:
        values = {g.values[key] for g in report.groups}
        if len(values) > 1 and all(as_number(v) is not None for v in values):
            out.append(key)
    return out


def choose_x(report: SweepTable, x: str | None) -> str | None:
    """`auto`: the first numeric swept key; None: no plot; a key: checked against what the runs vary."""
    if x is None:
        return None
    if x == "auto":
        keys = numeric_keys(report)
        return keys[0] if keys else None
    if x not in report.group_keys:
        allowed = ", ".join(report.group_keys) or "none: every run has the same settings"
        raise UserError("x", f"{x!r} is not a key the runs differ in", f"one of: {allowed}")
    return x


def natural_key(value: str) -> tuple:
    """Text with its numbers compared as numbers: beta_vae_1 < beta_vae_4 < beta_vae_16 (as strings, 16 < 4), so
    a line through a family's categorical arms runs in the order of their setting."""
    parts = re.split(r"(\d+(?:\.\d+)?)", value)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def plot_path(out_dir: Path, x: str, y: str) -> Path:
    return out_dir / f"{y.replace('/', '-')}_vs_{x.replace('/', '-')}.png"


def plot_metric(report: SweepTable, x: str, y: str, path: Path) -> Path:
    """Mean of y over seeds against x; one line per combination of the other keys; std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in report.group_keys if k != x]
    series: dict[str, list[tuple[str, float, float]]] = {}
    for group in report.groups:
        stat = group.stats.get(y)
        if stat is None:
            continue
        label = ", ".join(f"{k}={group.values[k]}" for k in others) or y
        series.setdefault(label, []).append((str(group.values[x]), stat.mean, stat.std or 0.0))
    numeric = all(as_number(v) is not None for points in series.values() for v, _, _ in points)
    categories = sorted({v for points in series.values() for v, _, _ in points},
                        key=lambda v: (as_number(v), v) if numeric else natural_key(v))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, points in series.items():
        points.sort(key=lambda p: categories.index(p[0]))
        xs = [as_number(p[0]) if numeric else categories.index(p[0]) for p in points]
        ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3, label=label)
    if numeric:
        values = [as_number(v) for v in categories]
        if min(values) > 0 and max(values) / min(values) >= 100:  # learning rates and the like
            ax.set_xscale("log")
        ax.set_xticks(values, categories)
    else:
        ax.set_xticks(range(len(categories)), categories)
        if sum(len(c) for c in categories) > 48:  # names that would run into each other side by side
            ax.tick_params(axis="x", labelrotation=30)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{y} ({DESCRIBED[report.direction]})" if report.direction and y == report.y else y)
    seeds = " (mean ± std over seeds)" if report.seeds_averaged else ""
    ax.set_title(f"{y} vs {x}{seeds}")
    ax.grid(alpha=0.3)
    if 1 < len(series) <= 12:  # a search's one-point-per-setting cloud would drown in its legend
        ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, what="plot")
