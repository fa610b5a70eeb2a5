"""Every user-facing key refuses a wrong value in one line, before any work starts.

The walk composes each config once (train with every model / arch / data / logger option, and the other commands),
then gives every key of it a value of the wrong type and, for numbers, one out of range, on a copy, and calls the
pre-check: each must raise a UserError naming that key. A few real subprocess runs prove the path a user sees
(exit status 2, one stderr line, no traceback, nothing on disk). Families added to conf/model/ are walked as well.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from aelab.commands import COMMANDS
from aelab.config_check import check_of
from aelab.errors import UserError
from conftest import REPO, arch_names, cli_env, model_names


def option_names(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the configs point at: an image folder, a CSV table, a run with a checkpoint, a folder of runs."""
    root = tmp_path_factory.mktemp("walk")
    (root / "images").mkdir()
    (root / "table.csv").write_text("a,b\n1,2\n3,4\n")
    run = root / "runs" / "run0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # the pre-check only asks whether it is there
    (run / "metrics.json").write_text('{"val/recon": 1.0}')
    return {"images": root / "images", "csv": root / "table.csv", "run": run, "runs": root / "runs"}


def configs(places: dict[str, Path]) -> list[tuple[str, list[str]]]:
    train = [[f"model={m}"] for m in model_names()] + [[f"arch={a}"] for a in arch_names()]
    train += [[f"data={d}"] for d in option_names("data")] + [[f"logger={lg}"] for lg in option_names("logger")]
    extra = {"data=folder": [f"data.source.path={places['images']}"], "data=csv": [f"data.path={places['csv']}"]}
    out = [("train", o + extra.get(o[0], [])) for o in train]
    # every other command reads a run (eval, sample, interpolate, and those added since: fit_prior, traverse, ...)
    out += [(c, [f"run={places['run']}"]) for c in commands() if c not in ("train", "report")]
    out += [("eval", [f"run={places['run']}", "data=synthetic"]), ("report", [f"dir={places['runs']}"])]
    return out


def commands() -> list[str]:
    """The commands with a config (conf/<command>.yaml) and a check."""
    return sorted(c.config for c in COMMANDS.values())


def leaves(values: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if str(key).startswith("_") and str(key).endswith("_"):
            continue  # _target_, _partial_: which object, not one of its options (a bad _target_: test_cli)
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def wrong_values(value: Any) -> tuple[list[Any], list[Any]]:
    """Values of the wrong type for a key now holding `value` (each must be refused), and for numbers values out of
    range below and above (at least one must be refused: a key bounded only above, e.g. InfoVAE's alpha <= 1, may
    take -1)."""
    if isinstance(value, bool):
        return ["abc", 2], []
    if isinstance(value, int):
        return ["abc", 1.5], [-1, 10**12]
    if isinstance(value, float):
        return ["abc"], [-1.0, 1e12]
    if isinstance(value, str):
        return [["x"], 3.5], []
    if isinstance(value, list):
        numeric = bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return (["abc"], [[-1], [10**12]]) if numeric else (["abc", [1]] if value else ["abc"]), []
    assert value is None, f"a config value of an unexpected kind: {value!r}"
    return [["x"]], []


def put(values: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        values = values[p]
    values[leaf] = value


def test_every_key_refuses_a_wrong_value(places: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    composed = []
    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        for command, overrides in configs(places):
            cfg = compose(config_name=command, overrides=overrides)
            composed.append((command, overrides, OmegaConf.to_container(cfg, resolve=True)))
    GlobalHydra.instance().clear()

    keys, walked, tries, missed = set(), 0, 0, []
    def refusal(command: str, base: dict[str, Any], path: str, wrong: Any) -> str | None:
        """None if the check refuses the value in one line naming the key, else what happened."""
        bad = copy.deepcopy(base)
        put(bad, path, wrong)
        try:
            check_of(command)(bad)
        except UserError as error:
            return None if error.key == path and "\n" not in error.line() else error.line()
        return "accepted"

    for command, overrides, base in composed:
        check_of(command)(base)  # the defaults themselves pass
        where = f"{command} {' '.join(overrides)}"
        for path, value in leaves(base):
            keys.add((command, path))
            walked += 1
            wrong_type, out_of_range = wrong_values(value)
            for wrong in wrong_type:
                tries += 1
                if (problem := refusal(command, base, path, wrong)) is not None:
                    missed.append(f"{where}: {path}={wrong!r} -> {problem}")
            if out_of_range:
                tries += len(out_of_range)
                problems = [refusal(command, base, path, wrong) for wrong in out_of_range]
                if None not in problems:
                    missed.append(f"{where}: {path}: no out-of-range value refused ({out_of_range} -> {problems})")
    print(f"walked {walked} keys of {len(composed)} configs ({len(keys)} distinct command/key pairs), {tries} wrong values")
    assert not missed, "\n".join(missed)
    assert not list(tmp_path.iterdir())  # nothing created on disk
    # the families, archs, datasets and loggers of conf/ and every command all took part
    assert {"train", "eval", "sample", "interpolate", "report"} <= {command for command, _, _ in composed}
    assert len(keys) > 150


@pytest.mark.parametrize("args, key", [
    (["train", "data=synthetic", "data.split_seed=abc"], "data.split_seed"),
    (["train", "data=synthetic", "hydra.run.dir=/proc/x"], "hydra.run.dir"),
    (["train", "data=synthetic", "model=dae", "model.corruption=masking", "noise=1.5"], "noise"),
], ids=["split_seed", "run_dir", "interpolated"])
def test_the_user_sees_one_line_and_nothing_on_disk(tmp_path: Path, args: list[str], key: str) -> None:
    out = subprocess.run([sys.executable, "-m", "aelab", *args], cwd=tmp_path, env=cli_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {key}:"), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert [p.name for p in tmp_path.iterdir()] == []
