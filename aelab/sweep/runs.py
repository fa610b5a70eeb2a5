"""Find every training run under a folder and read what it is (overrides, choices) and what it measured."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aelab.sweep.jobs import read_status
from aelab.sweep.naming import EXCLUDED_KEYS, override_key

SKIP_DIRS = {".hydra", "checkpoints", "eval", "sample", "interpolate", "__pycache__"}
DONE, FAILED, RUNNING, STOPPED, INCOMPLETE = "done", "failed", "running", "stopped", "incomplete"


@dataclass
class Run:
    path: Path
    name: str  # path relative to the gathered folder
    overrides: dict[str, str]  # key -> value as typed on the command line, in command-line order
    choices: dict[str, str]  # config group -> option (model, arch, data, ...)
    status: str  # done | failed | running | stopped | incomplete
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # train's metrics.json + the latest eval per key
    directions: dict[str, str | None] = field(default_factory=dict)  # what the run's family said of its metrics
    config: dict[str, Any] | None = None  # .hydra/config.yaml, read lazily for keys the run did not override

    def value(self, key: str) -> str | None:
        """The run's value for key: its override, else its group choice, else its config's top-level value."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return self.choices[key]
        if self.config is None:
            self.config = _read_yaml(self.path / ".hydra" / "config.yaml") or {}
        node: Any = self.config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return None if node is None or isinstance(node, (dict, list)) or "${" in str(node) else str(node)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_run(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file() or (path / "metrics.json").is_file()


def find_runs(root: Path) -> list[Path]:
    """Run folders under root (root itself if it is one), never looking inside a run."""
    if is_run(root):
        return [root]
    found = []
    for current, dirs, _ in os.walk(root):
        here = Path(current)
        if here != root and is_run(here):
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    """Job 10 after job 9: numbers in names compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(path: Path, has_metrics: bool) -> tuple[str, str | None]:
    record = read_status(path)
    if record is None:
        return (DONE, None) if has_metrics else (INCOMPLETE, None)
    status = record.get("status")
    if status == "failed":
        return FAILED, record.get("error")
    if status == "stopped":
        return STOPPED, record.get("error")
    if has_metrics or status == "done":
        return DONE, None
    # "running": believe it unless its process is gone from this very machine
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
            and not _pid_alive(record["pid"]):
        return STOPPED, "its process is gone"
    return RUNNING, None


def read_run(path: Path, root: Path) -> Run:
    overrides: dict[str, str] = {}
    for item in _read_yaml(path / ".hydra" / "overrides.yaml") or []:
        key = override_key(str(item))
        if "=" in str(item) and not key.startswith("hydra") and key not in EXCLUDED_KEYS:
            overrides[key] = str(item).split("=", 1)[1]
    hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml") or {}
    choices = {k: str(v) for k, v in ((hydra_cfg.get("hydra") or {}).get("runtime", {}).get("choices") or {}).items()
               if not k.startswith("hydra") and v is not None}
    train = _read_json(path / "metrics.json")
    metrics = _numeric(train)
    directions = _directions(train)
    for eval_file in sorted(path.glob("eval/*/metrics.json")):  # oldest first: the latest eval wins
        found = _read_json(eval_file)
        for key, value in _numeric(found).items():
            metrics[key if key not in train else f"eval/{key}"] = value
        directions.update({key if key not in train else f"eval/{key}": d for key, d in _directions(found).items()})
    status, error = _status(path, bool(train))
    name = "." if path == root else str(path.relative_to(root))
    return Run(path, name, overrides, choices, status, error, metrics, directions)


def _directions(values: dict[str, Any]) -> dict[str, str | None]:
    """The `directions` a metrics.json carries (runs written before they did carry none)."""
    found = values.get("directions")
    return {str(k): v for k, v in found.items() if v in ("min", "max", None)} if isinstance(found, dict) else {}


def gather(root: Path) -> list[Run]:
    return [read_run(p, root) for p in find_runs(root)]
