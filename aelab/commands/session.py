"""One run session for the commands that open a trained run (eval, sample, interpolate, ...).

`RunSession` is the trained run (aelab/engine/loading.py's LoadedRun, the object `aelab.load_run` opens too) as a
command sees it: its device and threads, the data given on the command line or the run's own, the split; its
`out` (aelab/commands/results.py) writes the results into a new folder `<run>/<command>/<time>/`, created on first
use so a command that fails early leaves nothing behind. Each command is then only what it computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from aelab.commands._common import output_dir
from aelab.commands.results import ResultWriter
from aelab.errors import UserError
from aelab.files import why_not_writable

if TYPE_CHECKING:
    from aelab.data.base import DataModule, Split
    from aelab.engine.loading import LoadedRun
    from aelab.models.base import Autoencoder


class RunSession:
    """A trained run opened for one command."""

    def __init__(self, cfg: DictConfig, command: str, writes: bool = True) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        from aelab.engine.device import resolve_device
        from aelab.engine.loading import load_trained
        from aelab.sweep.threads import apply_threads

        self.cfg, self.command = cfg, command
        apply_threads(cfg.get("threads", "auto"))
        threadpool_limits(torch.get_num_threads())  # numpy / scikit-learn BLAS (probes, PCA, t-SNE) use as many
        torch.manual_seed(int(cfg.get("seed", 0)))
        self.device: torch.device = resolve_device(cfg.get("device", "auto"))
        self.run: LoadedRun = load_trained(cfg.run, cfg.get("ckpt", "last"), self.device)
        problem = writes and why_not_writable(self.run.run_dir / command)  # before any work, not at the end
        if problem:
            raise UserError("run", f"{problem}: `aelab {command}` writes its results in the run's folder",
                            "a run folder you can write (copy the run somewhere writable)")
        self.model: Autoencoder = self.run.model
        self._out: ResultWriter | None = None

    @property
    def config(self) -> DictConfig:
        """The run's resolved training config."""
        return self.run.config

    @property
    def step(self) -> int:
        """The training step of the checkpoint (step-dependent weights such as a KL warm-up, as trained)."""
        return self.run.step

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.run.input_shape

    @property
    def standardization(self) -> dict[str, list] | None:
        """The run's table statistics (LoadedRun.standardization): data given to a command is scaled with these."""
        return self.run.standardization

    @cached_property
    def data(self) -> DataModule:
        """The dataset given with data= on this command line, else the one the run was trained on."""
        data = self.run.build_data(self.cfg.data if self.cfg.get("data") else None, self.device)
        self.check_shape(data, "data")
        return data

    def check_shape(self, data: DataModule, key: str) -> None:
        if tuple(data.shape) != self.input_shape:
            raise UserError(key, f"{data.name} has examples of shape {list(data.shape)}, the model takes "
                            f"{list(self.input_shape)}", "a dataset of the training data's shape")

    @property
    def split_name(self) -> str:
        return str(self.cfg.get("split", "test"))

    @property
    def split(self) -> Split:
        return getattr(self.data, self.split_name)

    @property
    def out(self) -> ResultWriter:
        """The command's output folder, created on first use."""
        if self._out is None:
            self._out = ResultWriter(output_dir(self.run.run_dir, self.command), bool(self.cfg.get("tensorboard", False)))
        return self._out

    def close(self) -> None:
        if self._out is not None:
            self._out.close(self.cfg)


@contextmanager
def open_run(cfg: DictConfig, command: str, writes: bool = True) -> Iterator[RunSession]:
    """A RunSession whose output folder gets its config and TensorBoard events closed however the command ends.
    writes=False: a command that writes nothing (explore) also opens a run in a folder it cannot write."""
    session = RunSession(cfg, command, writes)
    try:
        yield session
    finally:
        session.close()
