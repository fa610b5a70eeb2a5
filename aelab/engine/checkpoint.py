"""Checkpoints: written atomically (temp file, fsync, rename), read with weights_only=True."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from aelab.errors import UserError
from aelab.files import atomic_path, save_torch

FORMAT = "aelab-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
PREVIOUS = "previous.pt"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def save_checkpoint(state: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Never leaves a half-written file under `path`: the old one stays until the new one is complete.

    keep_previous: the file being replaced survives as previous.pt, a fallback
    should the newest ever be damaged (a full disk, a copy gone wrong).
    A write that fails (a full disk) raises WriteError naming the file; the previous checkpoint is untouched.
    """
    if keep_previous and path.exists():  # before the new one replaces it; a failed write leaves both names on it
        with atomic_path(path.with_name(PREVIOUS), what="checkpoint") as link_tmp:
            try:
                os.link(path, link_tmp)  # a second name for the old file: no copy, no window without last.pt
            except OSError:
                shutil.copyfile(path, link_tmp)
    save_torch({"format": FORMAT, **state}, path, "checkpoint", sync=True)


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


def load_latest(run_dir: Path, key: str = "resume") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run: last.pt, or previous.pt (with a warning) if last.pt is damaged."""
    import logging

    last = checkpoint_path(run_dir, "last")
    try:
        return load_checkpoint(last, key=key), last
    except UserError as damaged:
        previous = last.with_name(PREVIOUS)
        if not previous.is_file():
            raise
        state = load_checkpoint(previous, key=key)
        logging.getLogger(__name__).warning(
            "%s; resuming from %s (step %s) instead", damaged.problem, previous, state["progress"]["step"])
        return state, previous
