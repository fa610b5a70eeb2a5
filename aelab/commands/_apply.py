"""What encode, reconstruct and score share: the data a trained run is applied to, read whole and in order.

`split=all` (the default) takes every example of the given data in its own order (a CSV's rows, a folder's
sorted files, a dataset's train then test examples), without carving or shuffling anything; `split=train|val|test`
takes one split of it as the training run cut it. Tables are standardised with the training run's stored
statistics, never with statistics of the new data.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import UserError
from aelab.files import atomic_path, why_not_writable

if TYPE_CHECKING:
    import torch

    from aelab.commands.session import RunSession
    from aelab.data.base import Batch, Split

PROGRESS_MIN_BATCHES = 8  # below this a bar only flickers


@dataclass
class Applied:
    """The examples a command runs the model on, and what identifies each of them in its output."""

    name: str  # the dataset really read
    split: Split  # every chosen example, in order; Batch.index is the row in `index`
    index: list[int]  # each example's position in the data's own order
    names: list[str] | None  # folders: each image's path under the folder
    class_names: list[str] | None
    columns: list[str] | None  # tables: the feature columns
    table: Path | None  # tables: the CSV file the rows came from
    standardization: dict[str, list] | None  # tables: the training statistics the rows were scaled with
    folder: Path | None  # folders: the folder the images came from

    def __len__(self) -> int:
        return len(self.split)

    def label_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names and 0 <= label < len(self.class_names) else str(label)


def _is_table(data_cfg: DictConfig) -> bool:
    return str(OmegaConf.select(data_cfg, "source._target_", default="")).endswith("load_csv")


def _is_folder(data_cfg: DictConfig) -> bool:
    return str(OmegaConf.select(data_cfg, "source._target_", default="")).endswith("load_folder")


def csv_header(path: Path, delimiter: str = ",") -> list[str] | None:
    """The first row's cells when it is a header (any cell not a number), else None; same rule as data.table."""
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter=delimiter):
            if any(cell.strip() for cell in row):
                cells = [c.strip() for c in row]
                return cells if any(not _is_number(c) for c in cells) else None
    return None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def data_config(session: RunSession) -> DictConfig:
    """data= of the command line, else the run's training data; a table keeps the training table's label column."""
    given = session.cfg.get("data")
    if not given:
        return session.config.data
    data_cfg = OmegaConf.create(OmegaConf.to_container(given, resolve=True))
    trained_label = OmegaConf.select(session.config, "data.label_column", default=None)
    if _is_table(data_cfg) and data_cfg.get("label_column") is None and trained_label is not None:
        path = Path(str(data_cfg.source.path)).expanduser()
        header = csv_header(path, str(data_cfg.source.get("delimiter", ","))) if path.is_file() else None
        if header is not None and str(trained_label) in header:  # the new table has the training labels: not a feature
            data_cfg.label_column = trained_label
            data_cfg.source.label_column = trained_label
    return data_cfg


def run_standardization(session: RunSession) -> dict[str, list] | None:
    """The training split's table statistics (see RunSession.standardization)."""
    return session.standardization


def check_columns(columns: list[str] | None, stats: dict[str, list], file: Path | None) -> None:
    """The table must have the training table's feature columns, in its order (the model reads them by position)."""
    trained = list(stats.get("columns") or [])
    if columns is None or not trained or columns == trained:
        return
    extra = [c for c in columns if c not in trained]
    missing = [c for c in trained if c not in columns]
    where = f"{file}" if file else "the table"
    if extra or missing:
        parts = ([f"columns not in the training table: {', '.join(extra)}"] if extra else []) + \
                ([f"missing: {', '.join(missing)}"] if missing else [])
        raise UserError("data.path", f"{where}: {'; '.join(parts)}", "the training table's columns: " + ", ".join(trained))
    raise UserError("data.path", f"{where}: the columns are in another order than the training table's",
                    "in this order: " + ", ".join(trained))


def applied_data(session: RunSession, split_name: str = "all") -> Applied:
    """The examples of data= (or the training data) the model is applied to; shape and columns checked."""
    import torch

    from aelab.data.base import LoaderSplit, TensorSplit
    from aelab.data.sources import StreamData, TensorData
    from aelab.instantiate import build

    data_cfg = data_config(session)
    stats = run_standardization(session)
    table = Path(str(data_cfg.source.path)).expanduser() if _is_table(data_cfg) else None
    folder = Path(str(data_cfg.source.path)).expanduser() if _is_folder(data_cfg) else None
    if folder is not None:  # streamed: each example keeps its file's name and position (a cached folder is tensors)
        data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))  # a copy, open to a new key
        data_cfg.source.cache = False
    if split_name != "all":
        return _one_split(session, data_cfg, stats, split_name, table, folder)
    src = build(data_cfg.source, "data.source")
    if isinstance(src, TensorData):
        x, y = src.train_x, src.train_y
        if src.test_x is not None:  # a dataset with its own test split: train then test, as the files hold them
            x = torch.cat([x, src.test_x])
            y = None if y is None or src.test_y is None else torch.cat([y, src.test_y])
        if src.standardize:
            if stats is None:
                raise UserError("data", f"{src.name} is a table scaled by training statistics, and the run was not "
                                "trained on one", "the kind of data the run was trained on")
            check_columns(src.columns, stats, table)  # before the shape: the columns name what differs
        _check_shape(session, src.name, tuple(x.shape[1:]))
        if src.standardize:
            x = _standardized(x, stats)
        split = TensorSplit(x, y, session.device)
        return Applied(src.name, split, list(range(len(x))), None, src.class_names, src.columns, table, stats, folder)
    if isinstance(src, StreamData):
        _check_shape(session, src.name, tuple(src.shape))
        split = LoaderSplit(src.dataset, session.device, src.num_classes is not None,
                            int(data_cfg.get("num_workers", 0) or 0))
        names = src.dataset.relative_names() if hasattr(src.dataset, "relative_names") else None
        return Applied(src.name, split, list(range(len(split))), names, src.class_names, None, None, None, folder)
    raise TypeError(f"data source {data_cfg.source._target_} returned {type(src).__name__}")


def _standardized(x: torch.Tensor, stats: dict[str, list]) -> torch.Tensor:
    from aelab.data import standardize

    return standardize(x, stats)


def _one_split(session: RunSession, data_cfg: DictConfig, stats: dict[str, list] | None, split_name: str,
               table: Path | None, folder: Path | None) -> Applied:
    """One split of the data, cut as training cut it (same fractions and split seed), tables scaled as trained."""
    from aelab.data import build_data
    from aelab.data.base import LoaderSplit

    if table is not None and stats is not None:  # the columns name what differs: before anything is built on them
        from aelab.data.table import load_csv

        source = data_cfg.source
        check_columns(load_csv(str(source.path), source.get("label_column"), str(source.get("delimiter", ","))).columns,
                      stats, table)
    data = build_data(data_cfg, session.device, standardization=stats)
    _check_shape(session, data.name, tuple(data.shape))
    split = getattr(data, split_name)
    index, names = list(range(len(split))), None
    if isinstance(split, LoaderSplit) and hasattr(split.dataset, "indices"):  # a Subset of the whole stream
        index = [int(i) for i in split.dataset.indices]
        whole = split.dataset.dataset
        if hasattr(whole, "relative_names"):
            every = whole.relative_names()
            names = [every[i] for i in index]
    columns = None if data.standardization is None else data.standardization.get("columns")
    return Applied(data.name, split, index, names, data.class_names, columns, table, stats, folder)


def _check_shape(session: RunSession, name: str, shape: tuple[int, ...]) -> None:
    if shape != session.input_shape:
        raise UserError("data", f"{name} has examples of shape {list(shape)}, the model takes "
                        f"{list(session.input_shape)}", "data of the training data's shape")


def require_labels_if_conditional(session: RunSession, applied: Applied) -> None:
    if session.model.conditional and not applied.split.has_labels:
        raise UserError("data", f"the model of this run ({type(session.model).__name__}) is conditional and needs "
                        f"each example's class, {applied.name} has no labels", "labelled data of the training classes")


def batches(applied: Applied, batch_size: int, what: str) -> Iterator[Batch]:
    """The examples in order, with a progress bar on a terminal when there are many."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = len(applied)
    console = Console(stderr=True)
    if not console.is_terminal or total < PROGRESS_MIN_BATCHES * batch_size:
        yield from applied.split.batches(batch_size)
        return
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=total)
        for batch in applied.split.batches(batch_size):
            yield batch
            bar.advance(task, len(batch))


def refuse_run_paths(session: RunSession, target: Path, key: str) -> None:
    """An output path of the user's must be writable and not land on the run's own training files."""
    problem = why_not_writable(target.expanduser())
    if problem:
        raise UserError(key, problem, "a path you can write")
    run = session.run.run_dir.resolve()
    target = target.expanduser().resolve()
    protected = [run / "checkpoints", run / ".hydra"]
    if target == run or any(target == p or p in target.parents for p in protected):
        raise UserError(key, f"{target} would write among the run's training files",
                        "a folder outside the run, or leave it unset for a new folder of the run")
    for name in ("metrics.json", "thresholds.json", "train.log"):
        if target == run / name:
            raise UserError(key, f"{target} is one of the run's own files", "another file name")


def write_csv(path: Path, header: list[str], rows: Iterator[list[Any]] | list[list[Any]]) -> Path:
    """A CSV written to a temporary name and renamed: a reader never sees half a file."""
    with atomic_path(path, what="table") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_table_rows(path: Path, delimiter: str = ",") -> tuple[list[str] | None, list[list[str]]]:
    """A CSV's header (or None) and its non-blank rows as text, in file order (the rows data.table read)."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if any(cell.strip() for cell in row)]
    if rows and any(not _is_number(c.strip()) for c in rows[0]):
        return [c.strip() for c in rows[0]], rows[1:]
    return None, rows
