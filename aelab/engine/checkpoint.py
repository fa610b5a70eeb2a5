"""Checkpoints: written atomically (temp file, fsync, rename), read with weights_only=True."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from aelab.errors import UserError

FORMAT = "aelab-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Never leaves a half-written file under `path`: the old one stays until the new one is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, key: str = "run") -> dict[str, Any]:
    """Load on the CPU; any unreadable, truncated or foreign file becomes one clear line."""
    if not path.is_file():
        raise UserError(key, f"no checkpoint at {path}", "a run directory written by `aelab train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(key, f"cannot read checkpoint {path}: {reason}", "the file is truncated or not an aelab checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(key, f"{path} is not an aelab checkpoint", f"expected format {FORMAT}")
    return state
