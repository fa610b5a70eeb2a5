"""What the engine logs through: scalars each interval, views each epoch. `logger=none` logs nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from aelab.data.base import DataModule
from aelab.models.base import Autoencoder


class Logger(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def views(self, model: Autoencoder, data: DataModule, step: int, epoch: int) -> None: ...

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def __init__(self, log_dir: Path | str | None = None, start_step: int = 0) -> None:
        pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def views(self, model: Autoencoder, data: DataModule, step: int, epoch: int) -> None:
        pass

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
