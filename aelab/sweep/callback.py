"""Hydra callback (conf/train.yaml `hydra.callbacks`): records the sweep at its start, summarises it at its end."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aelab.files import atomic_path
from aelab.sweep.naming import SWEEP_FILE, override_key

log = logging.getLogger(__name__)


def _sweep_shape(overrides: list[str]) -> tuple[list[str], int | None]:
    """The keys given one value for every job, and the number of jobs the basic sweeper will make."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    constant, jobs = [], 1
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            try:
                jobs *= len(list(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001  (interval() and other non-discrete sweeps: count unknown)
                jobs = 0
        else:
            constant.append(override_key(override.input_line))
    return constant, jobs or None


class SweepSummary(Callback):
    """At the start: sweep.json (the command line, which keys are constant, how many jobs). At the end: with
    `sweep_eval` set, `aelab eval` on every finished job; then summary.json + report.md/report.csv/runs.csv + a
    plot in the sweep folder, the table on stdout, and exit status 1 when a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]  # type: ignore[union-attr]
        constant, jobs = _sweep_shape(overrides)
        record = {"command": " ".join(["aelab", "train", "-m", *overrides]), "overrides": overrides,
                  "constant_keys": constant, "jobs": jobs}
        with atomic_path(sweep_dir / SWEEP_FILE, what="sweep description") as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from aelab.sweep.table import build_report, print_report, write_report_files
        from aelab.sweep.runs import find_runs

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir() or not find_runs(sweep_dir):
            return
        evaluation = config.get("sweep_eval")
        if evaluation:
            evaluate_jobs(find_runs(sweep_dir), [str(o) for o in evaluation.get("overrides") or []])
        try:
            columns = (evaluation or {}).get("metrics")
            report = build_report(sweep_dir, y=(evaluation or {}).get("y") or "val/recon",
                                  **({"metrics": [str(c) for c in columns]} if columns else {}))
            written = write_report_files(report, sweep_dir)
        except Exception as exc:  # noqa: BLE001  (a summary problem must not hide the jobs' own results)
            log.warning(f"could not write the sweep summary: {exc}")
            return
        print_report(report, written)
        print(f"full report with other columns or a plot: aelab report {sweep_dir} x=<key> y=<metric>")
        failed = report.counts().get("failed", 0)
        if failed:  # the other jobs finished, but a script running the sweep must still learn of it
            print(f"error: sweep: {failed} of {len(report.runs)} jobs failed (see {sweep_dir / 'summary.json'})",
                  file=sys.stderr)
            sys.exit(1)


def evaluate_jobs(runs: list[Path], overrides: list[str]) -> None:
    """`aelab eval run=<job> <overrides>` on every finished job, one after another (a separate process each: the
    sweep layer stays below the commands); a job whose evaluation fails is reported and the others go on."""
    import subprocess

    done = [run for run in runs if (run / "metrics.json").is_file()]
    for number, run in enumerate(done, start=1):
        print(f"sweep_eval: {number}/{len(done)} {run.name}", flush=True)
        quoted = str(run).replace("\\", "\\\\").replace("'", "\\'")  # job names hold = and , (Hydra's grammar)
        result = subprocess.run([sys.executable, "-m", "aelab", "eval", f"run='{quoted}'", *overrides],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            log.warning(f"sweep_eval: evaluating {run.name} failed: {last}")
