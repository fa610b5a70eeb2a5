"""What eval / sample / interpolate share: load the run, pick the data, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.engine.loading import LoadedRun


def load(cfg: DictConfig) -> tuple[LoadedRun, Any]:
    """The trained model on the requested device, and the torch device."""
    import torch

    from aelab.engine.device import resolve_device
    from aelab.engine.loading import load_run

    torch.manual_seed(int(cfg.seed))
    device = resolve_device(cfg.device)
    return load_run(cfg.run, cfg.ckpt, device), device


def load_data(cfg: DictConfig, loaded: LoadedRun, device):
    """The dataset given with data= on this command line, else the one the run was trained on."""
    from aelab.data import build_data
    from aelab.errors import UserError

    data = build_data(cfg.data if cfg.get("data") else loaded.config.data, device)
    if tuple(data.shape) != tuple(loaded.data["shape"]):
        raise UserError("data", f"{data.name} has examples of shape {list(data.shape)}, the model takes "
                        f"{list(loaded.data['shape'])}", "a dataset of the training data's shape")
    return data


def print_results(title: str, values: dict[str, Any], out_dir: Path) -> None:
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
