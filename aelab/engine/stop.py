"""Ctrl-C and SIGTERM (what cluster schedulers send) become a request to stop at the next step boundary."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by the engine after it saved a checkpoint in answer to a signal."""

    def __init__(self, signal_name: str, step: int) -> None:
        super().__init__(f"{signal_name} at step {step}")
        self.signal_name, self.step = signal_name, step
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))


class StopSignals:
    """While active, the first SIGINT/SIGTERM sets `requested`; a second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists: stop without waiting for the step
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only live there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
