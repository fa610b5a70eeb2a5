"""The run table: one row per setting with seeds averaged (mean ± std), written as markdown and CSV."""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aelab.errors import UserError
from aelab.files import atomic_path
from aelab.metrics.directions import DESCRIBED, MODES, Direction, resolve
from aelab.sweep.naming import short_number
from aelab.sweep.runs import DONE, FAILED, Run, gather

DEFAULT_METRICS = ("val/*", "test/*", "eval/*")


def as_number(value: str | None) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _sort_key(value: str | None) -> tuple[int, float, str]:
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std over seeds (n - 1); None for a single run
    n: int


@dataclass
class Group:
    values: dict[str, str | None]  # the row's settings: every varying key except the seed
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.status == DONE]

    def state(self) -> str:
        """`2/2 done`, or what the others are doing: `1/2 done, 1 failed`."""
        counts: dict[str, int] = {}
        for run in self.runs:
            if run.status != DONE:
                counts[run.status] = counts.get(run.status, 0) + 1
        tail = "".join(f", {n} {status}" for status, n in counts.items())
        return f"{len(self.done)}/{len(self.runs)} done{tail}"


@dataclass
class SweepTable:
    root: Path
    runs: list[Run]
    keys: list[str]  # settings that differ between runs (seed included), in command-line order
    constant: dict[str, str]  # settings every run shares
    seed_key: str
    metrics: list[str]  # columns, y first
    y: str | None  # the metric of interest: first column, best mean marked, plotted
    groups: list[Group]
    mode: str = "auto"  # how the best row was chosen: auto (y's own direction), min or max (given)
    direction: Direction | None = None  # min: lowest mean is best; max: highest; None: no row marked

    @property
    def group_keys(self) -> list[str]:
        return [k for k in self.keys if k != self.seed_key]

    @property
    def seeds_averaged(self) -> bool:
        return self.seed_key in self.keys

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.status] = out.get(run.status, 0) + 1
        return out


def _settings(runs: list[Run]) -> tuple[list[str], dict[str, str]]:
    """The override keys of all runs (plus `model` when families differ), split into varying and constant."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    if "model" not in keys and len({r.choices.get("model") for r in runs}) > 1:
        keys.insert(0, "model")
    varying, constant = [], {}
    for key in keys:
        values = {run.value(key) for run in runs}
        if len(values) > 1:
            varying.append(key)
        else:
            constant[key] = str(next(iter(values)))
    return varying, constant


def _columns(runs: list[Run], patterns: list[str] | tuple[str, ...], y: str | None) -> list[str]:
    present: list[str] = []
    for run in runs:
        present += [k for k in run.metrics if k not in present]
    # A pattern matches names as deep as itself: val/* takes val/recon but not the per-dimension breakdowns
    # (val/kl_dim/00, ...) that every epoch's report also holds; val/kl_dim/* asks for those.
    chosen = sorted(k for k in present if any(fnmatch.fnmatchcase(k, p) and k.count("/") <= max(p.count("/"), 1)
                                              for p in patterns))
    if y in present:
        chosen = [y] + [k for k in chosen if k != y]
    return chosen


def build_report(root: Path, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, y: str | None = "val/recon",
                 seed_key: str = "seed", mode: str = "auto") -> SweepTable:
    """mode: auto marks the best row by y's own direction (aelab.metrics.directions), min or max overrides it."""
    if mode not in MODES:
        raise UserError("mode", f"unknown value {mode!r}", "one of: " + ", ".join(MODES))
    runs = gather(root)
    keys, constant = _settings(runs)
    columns = _columns(runs, metrics, y)
    group_keys = [k for k in keys if k != seed_key]
    groups: dict[tuple, Group] = {}
    for run in runs:
        values = {k: run.value(k) for k in group_keys}
        groups.setdefault(tuple(values.values()), Group(values, [])).runs.append(run)
    ordered = sorted(groups.values(), key=lambda g: [_sort_key(v) for v in g.values.values()])
    for group in ordered:
        for metric in columns:
            xs = [r.metrics[metric] for r in group.done if metric in r.metrics and math.isfinite(r.metrics[metric])]
            if xs:
                group.stats[metric] = Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))
    y = y if y in columns else None
    recorded = next((r.directions for r in runs if y in r.directions), None)  # the family's word, when a run has it
    return SweepTable(root, runs, keys, constant, seed_key, columns, y, ordered, mode,
                      resolve(y, mode, recorded) if y else None)


def _decimals(x: float) -> int:
    """Two decimals for losses around 100, more for small numbers: about five significant digits."""
    digits = len(str(int(abs(x)))) if math.isfinite(x) else 1
    return min(6, max(2, 5 - digits)) if abs(x) >= 1 or x == 0 else min(6, max(2, 3 - int(math.floor(math.log10(abs(x))))))


def format_stat(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    d = _decimals(stat.mean)
    return f"{stat.mean:.{d}f}" if stat.std is None else f"{stat.mean:.{d}f} ± {stat.std:.{d}f}"


def best_group(report: SweepTable) -> Group | None:
    """The row with the best mean of y in its direction; None when y has no known direction (and no mode)."""
    scored = [g for g in report.groups if report.y and report.y in g.stats]
    if not scored or report.direction is None:
        return None
    pick = min if report.direction == "min" else max
    return pick(scored, key=lambda g: g.stats[report.y].mean)  # type: ignore[index]


def direction_note(report: SweepTable) -> str:
    """Which way y was ranked and by what: `higher is better, mode=auto` (y's own direction), or how to choose."""
    if report.y is None:
        return ""
    if report.direction is None:
        return f"{report.y} has no known direction: no row marked best (mode=min or mode=max marks one)"
    return f"{DESCRIBED[report.direction]}, mode={report.mode}"


def summary_line(report: SweepTable) -> str:
    counts = report.counts()
    parts = [f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: kv[0] != DONE)]
    return f"{len(report.runs)} runs: " + ", ".join(parts)


def table_rows(report: SweepTable) -> tuple[list[str], list[list[str]]]:
    header = [*report.group_keys, "runs", *report.metrics]
    rows = [[short_number(str(g.values[k])) for k in report.group_keys] + [g.state()] + [format_stat(g.stats.get(m)) for m in
            report.metrics] for g in report.groups]
    return header, rows


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_markdown(report: SweepTable, path: Path, plots: list[Path] = ()) -> Path:  # type: ignore[assignment]
    header, rows = table_rows(report)
    best = best_group(report)
    lines = [f"# aelab report: {report.root}", "", summary_line(report) + "."]
    if report.constant:
        lines.append("Same in every run: " + ", ".join(f"`{k}={v}`" for k, v in report.constant.items()) + ".")
    if report.seeds_averaged:
        lines.append(f"Runs that differ only in `{report.seed_key}` are one row: mean ± sample std over the finished "
                     "ones.")
    if best is not None:
        word = "Lowest" if report.direction == "min" else "Highest"
        lines.append(f"{word} `{report.y}`: " + ", ".join(f"`{k}={v}`" for k, v in best.values.items()) +
                     f" (bold; {direction_note(report)}).")
    elif report.y is not None:
        lines.append(f"No row marked best: `{report.y}` has no known direction (mode=min or mode=max marks one).")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    y_column = header.index(report.y) if best is not None else -1
    for group, row in zip(report.groups, rows):
        cells = [_md_cell(c) for c in row]
        if group is best:
            cells[y_column] = f"**{cells[y_column]}**"
        lines.append("| " + " | ".join(cells) + " |")
    run_metrics = report.metrics
    lines += ["", "## Runs", "", "| run | status | " + " | ".join(run_metrics) + " |", "|" + "---|" * (2 + len(run_metrics))]
    for run in report.runs:
        cells = [f"`{run.name}`", run.status] + [format_stat(Stat(run.metrics[m], None, 1)) if m in run.metrics else "–"
                                                 for m in run_metrics]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    problems = [r for r in report.runs if r.error]
    if problems:
        lines += ["", "## Failed or stopped", ""] + [f"- `{r.name}`: {r.status}: {r.error}" for r in problems]
    for plot in plots:
        lines += ["", f"![{plot.stem}]({plot.name})"]
    with atomic_path(path, what="report") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def write_csv(report: SweepTable, path: Path) -> Path:
    """One row per setting: the keys, run counts, then `<metric>` (mean) and `<metric>_std` per metric."""
    with atomic_path(path, what="report table") as tmp, tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*report.group_keys, "runs", "done", "failed"] +
                     [c for m in report.metrics for c in (m, f"{m}_std")])
        for g in report.groups:
            stats = [g.stats.get(m) for m in report.metrics]
            out.writerow([g.values[k] for k in report.group_keys] +
                         [len(g.runs), len(g.done), sum(r.status == FAILED for r in g.runs)] +
                         [c for s in stats for c in (("", "") if s is None else (s.mean, "" if s.std is None else s.std))])
    return path


def write_runs_csv(report: SweepTable, path: Path) -> Path:
    """One row per run, raw: name, status, every varying key, every metric, the error line."""
    metrics = sorted({k for r in report.runs for k in r.metrics})
    with atomic_path(path, what="table of runs") as tmp, tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["run", "status", *report.keys, *metrics, "error"])
        for run in report.runs:
            out.writerow([run.name, run.status, *(run.value(k) for k in report.keys),
                          *(run.metrics.get(m, "") for m in metrics), run.error or ""])
    return path


def summary_record(report: SweepTable) -> dict[str, Any]:
    """summary.json: every job's settings, status, error line and final metrics."""
    return {
        "root": str(report.root), "counts": report.counts(), "constant": report.constant, "keys": report.keys,
        "y": report.y, "mode": report.mode, "direction": report.direction,
        "jobs": [{"run": r.name, "status": r.status, "error": r.error, "settings": {k: r.value(k) for k in report.keys},
                  "metrics": r.metrics} for r in report.runs],
    }


def _width(report: SweepTable) -> int:
    """Characters the table needs with every cell on one line."""
    header, rows = table_rows(report)
    return sum(max(len(c) for c in column) + 3 for column in zip(header, *rows)) + 1


def print_report(report: SweepTable, written: list[Path]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # piped into a file or a log, nobody resizes the window: keep each row on one line there
    console = Console() if sys.stdout.isatty() else Console(width=max(80, min(400, _width(report))))
    header, rows = table_rows(report)
    title = f"{summary_line(report)}" + (f" (mean ± std over {report.seed_key})" if report.seeds_averaged else "")
    best = best_group(report)
    caption = (f"bold: {'lowest' if report.direction == 'min' else 'highest'} {report.y} ({direction_note(report)})"
               if best is not None else direction_note(report))
    table = Table(title=escape(title), title_justify="left", caption=escape(caption) or None, caption_justify="left")
    for i, name in enumerate(header):
        table.add_column(escape(name), justify="left" if i <= len(report.group_keys) else "right")
    for group, row in zip(report.groups, rows):
        table.add_row(*map(escape, row), style="bold" if group is best else None)
    console.print(table)
    if report.constant:
        console.print(escape("same in every run: " + " ".join(f"{k}={v}" for k, v in report.constant.items())),
                      soft_wrap=True, highlight=False)
    for run in report.runs:
        if run.error:
            console.print(f"[red]{run.status}[/]: " + escape(f"{run.name}: {run.error}"), soft_wrap=True, highlight=False)
    for path in written:
        console.print(escape(f"wrote {path}"), soft_wrap=True, highlight=False)


def write_report_files(report: SweepTable, out_dir: Path, x: str | None = "auto") -> list[Path]:
    """summary.json, report.md, report.csv, runs.csv and, when a numeric key varies, `<y>_vs_<x>.png`."""
    from aelab.sweep.plot import choose_x, plot_metric, plot_path

    summary = out_dir / "summary.json"
    with atomic_path(summary, what="sweep summary") as tmp:
        tmp.write_text(json.dumps(summary_record(report), indent=2, default=str) + "\n")
    plots = []
    x_key = choose_x(report, x)
    if x_key and report.y and any(report.y in g.stats for g in report.groups):
        plots.append(plot_metric(report, x_key, report.y, plot_path(out_dir, x_key, report.y)))
    return [summary, write_markdown(report, out_dir / "report.md", plots), write_csv(report, out_dir / "report.csv"),
            write_runs_csv(report, out_dir / "runs.csv"), *plots]
