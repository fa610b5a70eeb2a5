"""Examples and datasets chosen by what the user named: an index or the first of a class, a dataset by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import UserError

if TYPE_CHECKING:
    from aelab.data.base import Split


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
