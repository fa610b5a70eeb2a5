"""A numeric table from a CSV file: one example per row, optionally a label column; standardised per column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from aelab.data.sources import TensorData
from aelab.errors import UserError


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_csv(path: str | None, label_column: str | int | None = None, delimiter: str = ",") -> TensorData:
    """Rows of numbers (a header row of names is detected); the label column may hold any class names."""
    if not path:
        raise UserError("data.path", "no CSV file given", "data=csv data.path=/path/to/table.csv")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError("data.path", f"no such file: {file}")
    with open(file, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if any(cell.strip() for cell in row)]
    if not rows:
        raise UserError("data.path", f"{file} holds no rows")
    has_header = any(_number(cell) is None for cell in rows[0])
    names = [c.strip() for c in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    label_at = _column(label_column, names) if label_column is not None else None
    features = [i for i in range(len(names)) if i != label_at]
    if not features:
        raise UserError("data.path", f"{file} has no feature columns besides the label")
    values = np.empty((len(body), len(features)), dtype=np.float32)
    for r, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != len(names):
            raise UserError("data.path", f"{file} line {r} has {len(row)} fields, the first row {len(names)}")
        for j, i in enumerate(features):
            number = _number(row[i])
            if number is None or not np.isfinite(number):
                raise UserError("data.path", f"{file} line {r}, column {names[i]!r}: {row[i]!r} is not a finite number",
                                "numeric columns only; name a text column with data.label_column")
            values[r - (2 if has_header else 1), j] = number
    x = torch.from_numpy(values)
    columns = [names[i] for i in features]
    if label_at is None:
        return TensorData(f"csv:{file.name}", x, None, standardize=True, columns=columns)
    labels = [row[label_at].strip() for row in body]
    classes = sorted(set(labels), key=lambda c: (_number(c) is None, _number(c) or 0.0, c))
    index = {c: k for k, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], dtype=torch.long)
    return TensorData(f"csv:{file.name}", x, y, num_classes=len(classes), class_names=classes, standardize=True,
                      columns=columns)


def _column(label_column: str | int, names: list[str]) -> int:
    if isinstance(label_column, int) or str(label_column).isdigit() and str(label_column) not in names:
        i = int(label_column)
        if 0 <= i < len(names):
            return i
    elif str(label_column) in names:
        return names.index(str(label_column))
    raise UserError("data.label_column", f"no column {label_column!r}", "one of: " + ", ".join(names))


def _check_csv_options(options: dict, key: str) -> None:
    """The file must be there before the run starts; csv reads one-character delimiters only."""
    if not options.get("path"):
        raise UserError(f"{key}.path", "no CSV file given", "data=csv data.path=/path/to/table.csv")
    if not Path(str(options["path"])).expanduser().is_file():
        raise UserError(f"{key}.path", f"no such file: {Path(str(options['path'])).expanduser()}")
    if len(str(options.get("delimiter", ","))) != 1:
        raise UserError(f"{key}.delimiter", f"got {options['delimiter']!r}", "one character, e.g. ';' or '\\t'")


load_csv.check_options = _check_csv_options  # type: ignore[attr-defined]  (read by aelab/schema.py)
