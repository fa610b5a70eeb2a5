"""`aelab report <dir>`: one table of every run under a sweep or runs folder, seeds averaged, plus a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.config_check import check_report
from aelab.errors import UserError
from aelab.files import why_not_writable


def run(cfg: DictConfig) -> dict[str, Any]:
    """Gather, print and write the report; returns the run counts and the files written. Never imports torch."""
    from aelab.sweep.table import build_report, print_report, write_report_files

    check_report(cfg)
    root = Path(str(cfg.dir)).expanduser()
    out = Path(str(cfg.out)).expanduser() if cfg.get("out") else root
    problem = why_not_writable(out)
    if problem:
        raise UserError("out" if cfg.get("out") else "dir", problem, "a folder you can write: out=<folder>")
    report = build_report(root, list(cfg.metrics), str(cfg.y), str(cfg.seed_key), str(cfg.get("mode", "auto")))
    if report.y is None and any(r.metrics for r in report.runs):
        present = sorted({k for r in report.runs for k in r.metrics})
        raise UserError("y", f"no run has the metric {cfg.y!r}", "one of: " + ", ".join(present))
    written = write_report_files(report, out, cfg.x)
    print_report(report, written)
    return {"runs": len(report.runs), **report.counts(), "files": [str(p) for p in written]}


main = hydra_entry(run)
