"""What a command writes: its output folder `<run>/<command>/<time>/` (pictures, GIFs, metrics.json as values
arrive, TensorBoard events, the config used) and the table it prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from aelab.files import atomic_path, save_figure

if TYPE_CHECKING:
    from aelab.viz.epoch_report import Report


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
