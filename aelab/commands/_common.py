"""Glue shared by the commands: the Hydra entry wrapper (one-line errors) and output folders."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelab.errors import (EXIT_WRITE_ERROR, UserError, WriteError, exit_with, full_errors_requested,
                          is_write_failure, os_reason)
from aelab.sweep.rundirs import STARTED


def run_command(task: Callable[[], Any], cleanup: Callable[[], None] | None = None,
                interrupted: Callable[[], str] | None = None) -> Any:
    """Run a command body; a UserError becomes one line on stderr and exit status 2, a file that could not be
    written (a full disk, a read-only folder) one line naming it and what it was, exit status 1, followed by
    `interrupted()` (how to continue, for training: its last checkpoint is intact).

    In a sweep (-m) a failing job records its error line in <job>/status.json and returns instead,
    so the sweep's other jobs still run.
    """
    from aelab.sweep.jobs import run_sweep_job, sweep_job_dir

    quiet_log_file_errors()
    try:
        job_dir = sweep_job_dir()
        return task() if job_dir is None else run_sweep_job(task, job_dir)
    except UserError as error:
        if cleanup is not None:
            cleanup()
        if full_errors_requested():
            raise
        exit_with(error)
    except OSError as error:
        if not isinstance(error, WriteError) and not is_write_failure(error) or full_errors_requested():
            raise
        # an error no `writing(...)` names (it may be a read, e.g. a file without permission): what the OS says
        line = error.line() if isinstance(error, WriteError) else \
            f"error: {error.filename or 'a file'}: {os_reason(error)}"
        print(f"{line}{'; ' + interrupted() if interrupted else ''}", file=sys.stderr)
        sys.exit(EXIT_WRITE_ERROR)
    except KeyboardInterrupt as stop:  # Ctrl-C, or the engine's clean stop on SIGINT/SIGTERM
        what = f"stopped by {stop}" if str(stop) else "interrupted"
        print(f"\n{what}{'; ' + interrupted() if interrupted else ''}", file=sys.stderr)
        sys.exit(getattr(stop, "exit_code", 130))


def hydra_entry(run: Callable[[Any], Any]) -> Callable[[], Any]:
    """A command module's `main`: Hydra composes conf/<module's name>.yaml with the command line, then
    run_command(run(cfg)) (one-line errors). The command's name is its module's, so nothing is named twice."""
    import functools

    import hydra

    name = run.__module__.rsplit(".", 1)[-1]

    @functools.wraps(run)  # Hydra names the job after the task function's module: the command's, not this one
    def task(cfg: Any) -> Any:
        return run_command(lambda: run(cfg))

    return hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name=name)(task)


def quiet_log_file_errors() -> None:
    """A log file that cannot be written (train.log on a full disk) is said once, in one line: logging's own
    handler would print a traceback at every record. The files that matter raise WriteError themselves."""
    import logging

    def said_once(handler: logging.FileHandler) -> Callable[[logging.LogRecord], None]:
        def handle_error(record: logging.LogRecord) -> None:
            exc = sys.exc_info()[1]
            if not getattr(handler, "aelab_failed", False):
                handler.aelab_failed = True
                print(f"warning: could not write the log {handler.baseFilename}: {os_reason(exc)}; "
                      "going on without it", file=sys.stderr)
        return handle_error

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and not hasattr(handler, "aelab_failed"):
            handler.aelab_failed = False
            handler.handleError = said_once(handler)


def output_dir(run_dir: Path, command: str) -> Path:
    """A new folder <run>/<command>/<time>[-k] for a command's results; training files are never touched."""
    base = Path(run_dir) / command / STARTED
    candidate, k = base, 1
    while candidate.exists():
        candidate, k = base.with_name(f"{base.name}-{k}"), k + 1
    candidate.mkdir(parents=True)
    return candidate


def remove_if_only_hydra(run_dir: Path, created_subdir: Path) -> None:
    """Undo what Hydra created for a run that failed before it wrote anything of its own."""
    if created_subdir.is_dir():
        shutil.rmtree(created_subdir, ignore_errors=True)
    if run_dir.is_dir():
        leftovers = [p for p in run_dir.iterdir() if p.name not in {".hydra", "train.log"}]
        hydra_dir = run_dir / ".hydra"
        if not leftovers and (not hydra_dir.exists() or not any(hydra_dir.iterdir())):
            shutil.rmtree(run_dir, ignore_errors=True)
            for parent in (run_dir.parent, run_dir.parent.parent):  # outputs/<date>/ and outputs/
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                else:
                    break


def save_json(values: dict[str, Any], path: Path, what: str = "results") -> Path:
    import json

    from aelab.files import atomic_path

    with atomic_path(path, what=what) as tmp:
        tmp.write_text(json.dumps(values, indent=2, sort_keys=True, default=str) + "\n")
    return path
