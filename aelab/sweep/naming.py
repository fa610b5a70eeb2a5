"""Readable, filesystem-safe job folder names: `<num>_<key>=<value>,...` with only what the sweep varies."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

SWEEP_FILE = "sweep.json"  # written by the sweep callback before any job starts
EXCLUDED_KEYS = {"device", "resume"}  # where a job ran, not what it is
MAX_NAME = 120  # well under the 255-byte limit of most file systems
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def override_key(override: str) -> str:
    """`+arch.hidden=[1]` -> `arch.hidden`."""
    return override.split("=", 1)[0].lstrip("+~")


def safe_value(value: str) -> str:
    """`[400,200]` -> `400_200`, `/data/imgs` -> `data_imgs`: no separators, quotes, globs or spaces.

    Long floats (an optimising sweeper's 0.000342123...) are cut to 4 significant digits; the exact
    value stays in the job's .hydra/overrides.yaml.
    """
    return _UNSAFE.sub("_", short_number(value)).strip("_") or "_"


def short_number(value: str) -> str:
    """`0.000342123412` -> `0.0003421`; anything else unchanged."""
    return f"{float(value):.4g}" if re.fullmatch(r"-?\d*\.\d{5,}(e-?\d+)?", value) else value


def constant_keys(sweep_dir: str | Path) -> set[str]:
    """Keys the sweep's command line set to one value for every job (recorded in sweep.json)."""
    try:
        return set(json.loads((Path(sweep_dir) / SWEEP_FILE).read_text())["constant_keys"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def job_dirname(num: int | str, overrides: Iterable[str], sweep_dir: str | Path = "") -> str:
    """The job folder: its number and the overrides that differ between jobs, in command-line order."""
    items = [o for o in overrides if not override_key(o).startswith("hydra") and override_key(o) not in EXCLUDED_KEYS]
    constant = constant_keys(sweep_dir) if sweep_dir else set()
    varying = [o for o in items if override_key(o) not in constant] or items  # `-m model=ae`: still say what ran
    parts = [f"{override_key(o)}={safe_value(o.split('=', 1)[1]) if '=' in o else 'deleted'}" for o in varying]
    name = ",".join([str(num)] if not parts else [f"{num}_{parts[0]}", *parts[1:]])
    if len(name) > MAX_NAME:  # keep it unique and short: a hash of what was cut
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}-{digest}"
    return name
