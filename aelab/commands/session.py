"""One run session for the commands that open a trained run (eval, sample, interpolate, ...).

`RunSession` opens the run (stored config, checkpoint, model, data, split, device); its `out` writes the results
(PNG/GIF files, metrics.json, TensorBoard images and scalars, the config used, the terminal table) into a new
folder `<run>/<command>/<time>/`, created on first use so a command that fails early leaves nothing behind.
Each command is then only what it computes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from aelab.commands._common import output_dir
from aelab.errors import UserError
from aelab.files import atomic_path, why_not_writable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from aelab.data.base import DataModule, Split
    from aelab.engine.loading import LoadedRun
    from aelab.engine.measure import Report
    from aelab.models.base import Autoencoder


class ResultWriter:
    """A command's output folder and its TensorBoard events; metrics.json is rewritten as values arrive, so a later
    failure never loses what was already measured."""

    def __init__(self, out_dir: Path, tensorboard: bool) -> None:
        self.dir = out_dir
        self.values: dict[str, Any] = {}
        self.files: dict[str, str] = {}
        self._tensorboard = tensorboard
        self._logger = None

    @property
    def logger(self):
        """The TensorBoard sink of this folder (tensorboard --logdir <run> shows it beside training), or None."""
        if self._logger is None and self._tensorboard:
            from aelab.viz.tensorboard import TensorBoardLogger

            self._logger = TensorBoardLogger(self.dir)
        return self._logger

    def picture(self, name: str, picture: Any, tag: str | None = None) -> Path:
        """A (3, H, W) image or a matplotlib figure as <name>.png, and as a TensorBoard image under `tag`."""
        import torch

        from aelab.viz.images import save_png
        from aelab.viz.views import save_figure

        path = self.dir / f"{name.replace('/', '_')}.png"
        if isinstance(picture, torch.Tensor):
            save_png(picture, path)
            if tag and self.logger is not None:
                self.logger.writer.add_image(tag, picture, 0)
        else:
            if tag and self.logger is not None:
                self.logger.writer.add_figure(tag, picture, 0, close=False)
            save_figure(picture, path)
        self.files[name] = path.name
        return path

    def gif(self, name: str, frames: list[Any], frame_ms: int, tag: str | None = None) -> Path:
        """Frames as <name>.gif; in TensorBoard as steps of one image (the step slider plays it)."""
        from aelab.viz.images import save_gif

        path = save_gif(frames, self.dir / f"{name}.gif", frame_ms=frame_ms)
        if tag and self.logger is not None:
            for step, frame in enumerate(frames):
                self.logger.writer.add_image(tag, frame, step)
        self.files[f"{name}_gif"] = path.name
        return path

    def metrics(self, values: dict[str, Any]) -> None:
        """Add values to metrics.json now (the file is replaced atomically)."""
        self.values.update(values)
        with atomic_path(self.dir / "metrics.json", what="metrics") as tmp:
            tmp.write_text(json.dumps(self.values, indent=2, sort_keys=True, default=str) + "\n")

    def report(self, report: Report, prefix: str, step: int = 0) -> None:
        if self.logger is not None:
            self.logger.report(report, prefix, step)

    def close(self, cfg: DictConfig) -> None:
        with atomic_path(self.dir / "config.yaml", what="the config used") as tmp:
            OmegaConf.save(cfg, tmp)
        if self._logger is not None:
            self._logger.close()


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
        return int(self.run.checkpoint.get("progress", {}).get("step", 0))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.run.data["shape"])

    @cached_property
    def standardization(self) -> dict[str, list] | None:
        """A table run's training-split statistics: stored in the checkpoint, or (runs saved before they were
        stored) recomputed from the run's own training table with its split seed, which gives the same numbers.
        Data given to a command is scaled with these, never refitted on itself."""
        stored = self.run.data.get("standardization")
        source = str(OmegaConf.select(self.config.data, "source._target_", default=""))
        if stored is not None or not source.endswith("load_csv"):
            return stored
        import torch

        from aelab.data import build_data

        try:
            return build_data(self.config.data, torch.device("cpu")).standardization
        except UserError as error:
            raise UserError("run", f"the checkpoint holds no table statistics and its training table cannot be read "
                            f"again ({error.problem})", "a run trained by this version of aelab") from None

    @cached_property
    def data(self) -> DataModule:
        """The dataset given with data= on this command line, else the one the run was trained on."""
        from aelab.data import build_data

        data = build_data(self.cfg.data if self.cfg.get("data") else self.config.data, self.device,
                          standardization=self.standardization)
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


def print_results(title: str, values: dict[str, Any], out_dir: Path) -> None:
    """The terminal table: one row per value, then where the files are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    console.print(f"results: {out_dir}", soft_wrap=True, highlight=False)


# ---- what to draw samples from ------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampler:
    """Where samples come from: the model's own prior, or codes drawn from a density fitted to its codes."""

    key: str  # model | pixelcnn | gmm | gaussian
    source: str  # in words, for the table and metrics.json
    draw_codes: Callable[[int], Tensor] | None = None  # n -> codes (n, D); None: the model samples itself

    def images(self, model: Autoencoder, n: int, y: Tensor | None = None) -> Tensor:
        if self.draw_codes is None:
            return model.sample(n, y)
        y = model.default_labels(n) if y is None else y  # conditional families decode with a label
        return model.likelihood.mean(model.decode(self.draw_codes(n).to(model.device).float(), y))


def choose_sampler(session: RunSession, choice: str, key: str, gaussian_fallback: bool) -> Sampler | None:
    """`auto`: a density `aelab fit-prior` stored in the run (pixelcnn before gmm), else the model's prior, else
    (with gaussian_fallback) a Gaussian fitted to the training codes; None when there is nothing to draw from."""
    from aelab.models.fitted_prior import load_fitted_prior, prior_path

    model, run_dir = session.model, session.run.run_dir
    fitted = {"pixelcnn": prior_path(run_dir, "pixelcnn"), "gmm": prior_path(run_dir, "gmm")}
    if choice == "auto":
        choice = next((k for k, path in fitted.items() if path.is_file()), "model" if model.has_prior else
                      ("gaussian" if gaussian_fallback else ""))
        if not choice:
            return None
    if choice in fitted and not fitted[choice].is_file():
        raise UserError(key, f"{run_dir} has no fitted {choice} prior", f"aelab fit-prior run={run_dir} prior={choice}")
    if choice == "model":
        if not model.has_prior:
            raise UserError(key, f"{type(model).__name__} has no prior of its own", "gmm, pixelcnn or gaussian")
        return Sampler("model", "the prior")
    if choice == "pixelcnn":
        from aelab.models.pixelcnn_prior import PixelCNNPrior

        pixelcnn = PixelCNNPrior.load(fitted["pixelcnn"], map_location=session.device)
        return Sampler("pixelcnn", "a PixelCNN fitted to the training code grids", pixelcnn.sample)
    if choice == "gmm":
        gmm = load_fitted_prior(run_dir, "gmm")
        return Sampler("gmm", f"a {gmm.components}-component Gaussian mixture fitted to the training codes", gmm.sample)
    import torch

    mean, cov = fitted_gaussian(model, session.data.train)
    gaussian = torch.distributions.MultivariateNormal(mean, cov)
    return Sampler("gaussian", "a Gaussian fitted to the training codes", lambda n: gaussian.sample((n,)))


# ---- choosing examples and data by what the user named ----------------------------------------------
def named_data_config(spec: Any, key: str) -> DictConfig:
    """A dataset config by name (conf/data/<name>.yaml), or {name: <name>, ...keys to change} for its options."""
    from importlib import resources

    changes = OmegaConf.create(spec) if isinstance(spec, (dict, DictConfig)) else OmegaConf.create({"name": spec})
    name = str(changes.pop("name", ""))
    folder = resources.files("aelab.conf") / "data"
    options = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in options:
        raise UserError(key, f"unknown dataset {name!r}", "one of: " + ", ".join(options))
    return OmegaConf.merge(OmegaConf.create((folder / f"{name}.yaml").read_text()), changes)


def first_of_class(split: Split, label: int, key: str) -> int:
    """Index of the first example of class `label` in the split."""
    seen = 0
    for batch in split.batches(4096):
        if batch.y is None:
            raise UserError(key, "the data has no labels", f"pick an index: by=index {key}=N")
        hits = (batch.y == int(label)).nonzero()
        if len(hits):
            return seen + int(hits[0])
        seen += len(batch)
    raise UserError(key, f"no example of class {label} in the split", "another class, or by=index")


def pick_index(split: Split, value: int, by: str, key: str, split_name: str) -> int:
    """An example of the split chosen by `key`: its index (by=index), or the first of that class (by=class)."""
    index = first_of_class(split, int(value), key) if by == "class" else int(value)
    if index >= len(split):
        raise UserError(key, f"index {index} is past the end of the {split_name} split", f"0..{len(split) - 1}")
    return index


def fitted_gaussian(model: Autoencoder, split: Split, batch_size: int = 1024) -> tuple[Any, Any]:
    """Mean (D,) and covariance (D, D) of the model's codes on a split: a stand-in prior for families without one
    (ex-post density estimation, Ghosh et al. 2020)."""
    import torch

    from aelab.viz.views import latent_codes

    codes, _ = latent_codes(model, split, limit=20000, batch_size=batch_size)  # (N, D) on the CPU
    codes = codes.double()
    cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1]) + 1e-6 * torch.eye(codes.shape[1])
    return codes.mean(0), cov
