"""TensorBoard sink: scalars each interval, an epoch's report (scalars, histograms, pictures), the HParams session."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aelab.files import writing
from aelab.schema import Annotated, Range

if TYPE_CHECKING:
    from aelab.viz.epoch_report import PictureOptions, Report


F = TypeVar("F", bound=Callable[..., Any])


def _events(method: F) -> F:
    """A write that fails (a full disk) is one WriteError naming the event folder. TensorBoard writes from a
    thread of its own and raises its error at the next call, which this wraps too."""
    @functools.wraps(method)
    def wrapped(self: TensorBoardLogger, *args: Any, **kwargs: Any) -> Any:
        with writing("TensorBoard events in", self.log_dir):
            return method(self, *args, **kwargs)
    return wrapped  # type: ignore[return-value]


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread re-raises its OSError in the caller (as the WriteError above) and also dies
    printing a traceback: keep that one quiet, and every other thread's as it was."""
    previous = threading.excepthook
    if getattr(previous, "aelab_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.aelab_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TensorBoardLogger:
    def __init__(self, log_dir: Path | str, start_step: int = 0, image_every: Annotated[int, Range(1, None)] = 1,
                 num_images: Annotated[int, Range(0, None)] = 32, manifold_points: Annotated[int, Range(0, None)] = 2000,
                 grid_size: Annotated[int, Range(2, None)] = 15, num_samples: Annotated[int, Range(0, None)] = 64) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from aelab.viz.epoch_report import PictureOptions

        _quiet_writer_threads()
        self.log_dir = Path(log_dir)
        # start_step is the step of the checkpoint a resumed run starts from; purging what a
        # killed run logged after it keeps the curve free of duplicated steps.
        with writing("TensorBoard events in", self.log_dir):
            self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step > 0 else None)
        self.image_every = max(1, image_every)
        self.options = PictureOptions(num_images, manifold_points, grid_size, num_samples)

    @_events
    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def picture_options(self, epoch: int) -> PictureOptions | None:
        return None if epoch % self.image_every else self.options

    @_events
    def report(self, report: Report, prefix: str, step: int) -> None:
        self.scalars(report.prefixed(prefix), step)
        for name, values in report.histograms.items():
            self.writer.add_histogram(f"{prefix}/{name}", values.detach().float().cpu(), step)
        for name, image in report.images.items():
            self.writer.add_image(f"{prefix}/{name}", image, step)
        for name, figure in report.figures.items():
            self.writer.add_figure(f"{prefix}/{name}", figure, step)
        self.writer.flush()

    @_events
    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """A HParams session naming `metrics` (scalar tags this run already wrote, e.g. val/loss): TensorBoard reads
        their last values, so no copy of them (no `hparam/*` cards) is written."""
        from torch.utils.tensorboard.summary import hparams

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        # Session records only, in this run's own event file. add_hparams would also write an experiment
        # record per run, and with several (a sweep under one --logdir) the HParams tab takes the first run's
        # as the whole experiment: one run's values as the only domain, its metrics only. Without them,
        # TensorBoard builds the experiment from every run's session: all runs side by side.
        _, session_start, session_end = hparams(clean, dict(metrics))
        writer = self.writer._get_file_writer()
        writer.add_summary(session_start)
        writer.add_summary(session_end)
        self.writer.flush()

    @_events
    def close(self) -> None:
        self.writer.close()
