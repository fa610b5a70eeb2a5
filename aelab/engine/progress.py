"""Live progress: a rich bar with loss and images/s on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, total_epochs: int, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, quiet=quiet)  # quiet: ranks other than 0
        self.total_epochs = total_epochs
        self.live = self.console.is_terminal and not quiet
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> EpochProgress:
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[ips]:,.0f} img/s"),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {epoch}/{self.total_epochs}", total=batches, loss=float("nan"), ips=0.0)

    def update(self, completed: int, loss: float, images_per_s: float) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=completed, loss=loss, ips=images_per_s)

    def epoch_done(self, line: str) -> None:
        self.console.print(line, highlight=False)


def seconds_since_launch() -> float:
    """Wall time since this process started (Linux /proc; elsewhere since this module was imported)."""
    try:
        ticks = int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19])  # start, since boot
        uptime = float(open("/proc/uptime").read().split()[0])  # now, since boot (1/100 s)
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()
