"""What the engine and the commands write through: sinks for reports. `logger=none` writes nothing.

A logger never decides what is measured (aelab/engine/measure.py does); it only says how many pictures it would
show (`picture_options`: None means it shows none, so none are drawn) and writes what it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aelab.viz.epoch_report import PictureOptions, Report


class Logger(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def picture_options(self, epoch: int) -> PictureOptions | None: ...

    def report(self, report: Report, prefix: str, step: int) -> None: ...

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def __init__(self, log_dir: Path | str | None = None, start_step: int = 0) -> None:
        pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def picture_options(self, epoch: int) -> PictureOptions | None:
        return None

    def report(self, report: Report, prefix: str, step: int) -> None:
        pass

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
