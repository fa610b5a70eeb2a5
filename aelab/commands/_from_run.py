"""What eval / sample / interpolate share: load the run, pick the data, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.engine.loading import LoadedRun


def load(cfg: DictConfig) -> tuple[LoadedRun, Any]:
    """The trained model on the requested device, and the torch device."""
    import torch
    from threadpoolctl import threadpool_limits

    from aelab.engine.device import resolve_device
    from aelab.engine.loading import load_run
    from aelab.sweep.threads import apply_threads

    apply_threads(cfg.get("threads", "auto"))
    threadpool_limits(torch.get_num_threads())  # numpy / scikit-learn BLAS (probes, PCA, t-SNE) use as many
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


def named_data_config(spec: Any, key: str) -> DictConfig:
    """A dataset config by name (conf/data/<name>.yaml), or {name: <name>, ...keys to change} for its options."""
    from importlib import resources

    from omegaconf import OmegaConf

    from aelab.errors import UserError

    changes = OmegaConf.create(spec) if isinstance(spec, (dict, DictConfig)) else OmegaConf.create({"name": spec})
    name = str(changes.pop("name", ""))
    folder = resources.files("aelab.conf") / "data"
    options = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in options:
        raise UserError(key, f"unknown dataset {name!r}", "one of: " + ", ".join(options))
    return OmegaConf.merge(OmegaConf.create((folder / f"{name}.yaml").read_text()), changes)


def first_of_class(split, label: int, key: str) -> int:
    """Index of the first example of class `label` in the split."""
    from aelab.errors import UserError

    seen = 0
    for batch in split.batches(4096):
        if batch.y is None:
            raise UserError(key, "the data has no labels", f"pick an index: by=index {key}=N")
        hits = (batch.y == int(label)).nonzero()
        if len(hits):
            return seen + int(hits[0])
        seen += len(batch)
    raise UserError(key, f"no example of class {label} in the split", "another class, or by=index")


def pick_index(split, value: int, by: str, key: str, split_name: str) -> int:
    """An example of the split chosen by `key`: its index (by=index), or the first of that class (by=class)."""
    from aelab.errors import UserError

    index = first_of_class(split, int(value), key) if by == "class" else int(value)
    if index >= len(split):
        raise UserError(key, f"index {index} is past the end of the {split_name} split", f"0..{len(split) - 1}")
    return index


def fitted_gaussian(model, split, batch_size: int = 1024) -> tuple[Any, Any]:
    """Mean (D,) and covariance (D, D) of the model's codes on a split: a stand-in prior for families without one
    (ex-post density estimation, Ghosh et al. 2020)."""
    import torch

    from aelab.viz.views import latent_codes

    codes, _ = latent_codes(model, split, limit=20000, batch_size=batch_size)  # (N, D) on the CPU
    codes = codes.double()
    cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1]) + 1e-6 * torch.eye(codes.shape[1])
    return codes.mean(0), cov


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
