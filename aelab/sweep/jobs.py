"""One job of a sweep: a failure is recorded in the job's folder and the other jobs go on."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelab.errors import UserError, WriteError, full_errors_requested
from aelab.files import atomic_path

STATUS_FILE = "status.json"


def sweep_job_dir() -> Path | None:
    """This job's folder when Hydra runs it as part of a sweep (-m), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not hc.runtime.output_dir:
        return None
    return Path(hc.runtime.output_dir)


def write_status(job_dir: Path, status: str, **extra: Any) -> None:
    """status.json: running | done | failed | stopped, with when, where and (on failure) the error line."""
    now = _dt.datetime.now().isoformat(timespec="seconds")
    record = {"status": status, "time": now, "host": socket.gethostname(), "pid": os.getpid(), **extra}
    with atomic_path(job_dir / STATUS_FILE, what="job status") as tmp:  # a reader never sees half a file
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")


def read_status(job_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((job_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def error_line(exc: BaseException) -> str:
    """`error: <key>: <problem>` for a UserError, else `error: <Type>: <first line of the message>`."""
    if isinstance(exc, (UserError, WriteError)):
        return exc.line()
    message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"error: {type(exc).__name__}: {message}" if message else f"error: {type(exc).__name__}"


def run_sweep_job(task: Callable[[], Any], job_dir: Path) -> Any:
    """Run one job; a failure is written to status.json and printed as one line, and the job returns None.

    Hydra's launchers stop a sweep at a job's SystemExit (and the basic sweeper
    re-raises a job's exception after the batch), so a failing job must not raise.
    Ctrl-C still stops the whole sweep. HYDRA_FULL_ERROR=1 / AELAB_DEBUG=1 raise instead.
    """
    started, clock = _dt.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    write_status(job_dir, "running", started=started)

    def took() -> dict[str, Any]:
        return {"started": started, "seconds": round(time.perf_counter() - clock, 1)}

    try:
        result = task()
    except KeyboardInterrupt as stop:
        write_status(job_dir, "stopped", error=f"stopped by {stop}" if str(stop) else "interrupted", **took())
        raise
    except Exception as exc:  # noqa: BLE001  (any failure of one job is recorded, the sweep goes on)
        line = error_line(exc)
        trace = None if isinstance(exc, (UserError, WriteError)) else traceback.format_exc()
        write_status(job_dir, "failed", error=line, **took(), **({"traceback": trace} if trace else {}))
        if full_errors_requested():
            raise
        print(f"{line}  [job {job_dir.name}]", file=sys.stderr)
        return None
    write_status(job_dir, "done", **took())
    return result
