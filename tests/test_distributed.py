"""Data-parallel training with torch.distributed (gloo, 2 CPU processes) follows the single-process curve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aelab.commands import train
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.errors import UserError
from conftest import cli_env

ARGS = ["data=synthetic", "model=ae", "latent_dim=4", "batch_size=64", "device=cpu", "seed=3", "logger=tensorboard"]


def torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "aelab", "train", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_two_ranks_match_one_process_and_resume(compose_cfg, tmp_path) -> None:
    first = torchrun(tmp_path, *ARGS, "epochs=1", "trainer.strategy=ddp")
    assert first.returncode == 0, first.stderr
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # one set of logs and checkpoints, written by rank 0
    run = runs[0]
    assert len(list(run.glob("events.out.tfevents.*"))) >= 1 and checkpoint_path(run).is_file()

    again = torchrun(tmp_path, f"resume={run}", "epochs=2")
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1
    distributed = json.loads((run / "metrics.json").read_text())
    assert distributed["world_size"] == 2 and distributed["epochs"] == 2

    overrides = [a for a in ARGS if not a.startswith("logger")] + ["logger=none", "epochs=2"]
    single = train.run(compose_cfg(overrides), tmp_path / "single", overrides)
    assert distributed["steps"] == single["steps"]  # same global batch: same number of steps
    for key in ("train/loss", "val/loss"):
        assert distributed[key] == pytest.approx(single[key], rel=1e-4), key
    assert load_checkpoint(checkpoint_path(run))["progress"]["step"] == single["steps"]


def test_ddp_without_torchrun_says_how_to_launch(compose_cfg, tmp_path) -> None:
    overrides = ["data=synthetic", "epochs=1", "logger=none", "trainer.strategy=ddp"]
    with pytest.raises(UserError, match="torchrun --nproc_per_node"):
        train.run(compose_cfg(overrides), tmp_path, overrides)
