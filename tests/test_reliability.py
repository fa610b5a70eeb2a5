"""Interrupted, killed, corrupted and diverging runs never cost the user their work."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aelab.commands import train
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.engine.trainer import DivergedError
from conftest import TINY, cli_env

# long enough to be caught mid-run, short enough to finish quickly once resumed
RUN = ["data=synthetic", "model=vae", "latent_dim=4", "epochs=25", "batch_size=64", "device=cpu",
       "trainer.checkpoint_every=5", "trainer.log_every=1", "logger=tensorboard", "seed=7"]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aelab", "train", *args], cwd=tmp_path, env=cli_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("outputs/*/*/checkpoints/last.pt"))
        if found:
            return found[0].parents[1]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _straight_run(compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The same run uninterrupted, on the same machine: it shares the interrupted run's fast-path cache (the
    subprocesses' data dir), as any two runs on one machine do."""
    monkeypatch.setenv("AELAB_DATA_DIR", cli_env(tmp_path)["AELAB_DATA_DIR"])
    overrides = [o for o in RUN if not o.startswith("logger")] + ["logger=none"]
    return train.run(compose_cfg(overrides), tmp_path / "straight", overrides)


def _scalar_steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return [e.step for e in events.Scalars(tag)]


def _resume(tmp_path: Path, run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aelab", "train", f"resume={run}"], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(compose_cfg, tmp_path, monkeypatch) -> None:
    proc = _start(tmp_path, *RUN)
    run = _wait_for_checkpoint(tmp_path, proc)
    time.sleep(0.3)  # let it run past the first checkpoint, into the middle of something
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(checkpoint_path(run))["progress"]
    assert 0 < saved["step"] < 25 * 12, "the kill should land mid-run"

    resumed = _resume(tmp_path, run)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((run / "metrics.json").read_text())
    straight = _straight_run(compose_cfg, tmp_path, monkeypatch)
    assert final["steps"] == straight["steps"] == 25 * 12
    for key in ("train/loss", "val/loss", "val/kl"):
        assert final[key] == pytest.approx(straight[key], rel=1e-5), key
    steps = _scalar_steps(run, "train/loss")
    assert steps == list(range(1, 25 * 12 + 1)), "the TensorBoard curve must have no gaps or duplicates"


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(compose_cfg, tmp_path, monkeypatch) -> None:
    proc = _start(tmp_path, *RUN)
    run = _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step" in err and f"aelab train resume={run}" in err
    assert "Traceback" not in err
    step = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert load_checkpoint(checkpoint_path(run))["progress"]["step"] == step  # saved exactly where it stopped

    resumed = _resume(tmp_path, run)
    assert resumed.returncode == 0, resumed.stderr
    straight = _straight_run(compose_cfg, tmp_path, monkeypatch)
    assert json.loads((run / "metrics.json").read_text())["val/loss"] == pytest.approx(straight["val/loss"], rel=1e-5)


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(compose_cfg, tmp_path, caplog) -> None:
    overrides = [*TINY, "model=ae", "epochs=2"]
    train.run(compose_cfg(overrides), tmp_path, overrides)
    previous = tmp_path / "checkpoints" / "previous.pt"
    assert load_checkpoint(previous)["progress"]["epoch"] == 1  # the epoch before last is kept
    last = checkpoint_path(tmp_path)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])

    with caplog.at_level(logging.WARNING):
        resumed = train.run(compose_cfg([f"resume={tmp_path}", "epochs=3"]), tmp_path, [f"resume={tmp_path}", "epochs=3"])
    assert "previous.pt" in caplog.text and "cannot read checkpoint" in caplog.text
    assert resumed["epochs"] == 3 and load_checkpoint(last)["progress"]["epoch"] == 3

    eval_out = subprocess.run([sys.executable, "-m", "aelab", "eval", f"run={tmp_path}"], cwd=tmp_path,
                              env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert eval_out.returncode == 0, eval_out.stderr  # last.pt is whole again after the resumed epoch
    last.write_bytes(b"garbage")
    broken = subprocess.run([sys.executable, "-m", "aelab", "eval", f"run={tmp_path}"], cwd=tmp_path,
                            env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and broken.stderr.startswith("error: run: cannot read checkpoint")
    assert "Traceback" not in broken.stderr


def _poisoned(trainer_losses, bad_steps: set[int]):
    def losses(batch, step):
        terms = trainer_losses(batch, step)
        if step in bad_steps:
            terms["recon"] = terms["recon"] * float("nan")
        return terms
    return losses


def test_nan_stops_training_naming_term_and_step_and_keeps_the_last_good_checkpoint(compose_cfg, tmp_path, monkeypatch) -> None:
    from aelab.engine import trainer as engine

    original = engine.Trainer.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.loss_fn = _poisoned(self.model.losses, {15})

    monkeypatch.setattr(engine.Trainer, "__init__", patched)
    overrides = [*TINY, "model=ae", "epochs=3", "trainer.log_every=4"]  # 12 steps per epoch
    with pytest.raises(DivergedError, match=r"loss term 'recon'.*between steps 13 and 16.*epoch 2") as info:
        train.run(compose_cfg(overrides), tmp_path, overrides)
    assert "lower lr" in info.value.line()
    state = load_checkpoint(checkpoint_path(tmp_path))
    assert state["progress"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_skip_nonfinite_skips_a_bounded_number_of_batches(compose_cfg, tmp_path, monkeypatch) -> None:
    from aelab.engine import trainer as engine

    original = engine.Trainer.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.loss_fn = _poisoned(self.model.losses, {3, 9})

    monkeypatch.setattr(engine.Trainer, "__init__", patched)
    ok = [*TINY, "model=ae", "epochs=1", "trainer.skip_nonfinite=2"]
    metrics = train.run(compose_cfg(ok), tmp_path / "ok", ok)
    assert metrics["steps"] == 12 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert load_checkpoint(checkpoint_path(tmp_path / "ok"))["progress"]["skipped"] == 2
    strict = [*TINY, "model=ae", "epochs=1", "trainer.skip_nonfinite=1"]
    with pytest.raises(DivergedError, match="more than 1 batches"):
        train.run(compose_cfg(strict), tmp_path / "strict", strict)


def test_two_runs_started_together_get_their_own_directories(tmp_path) -> None:
    args = ["data=synthetic", "epochs=1", "logger=none", "device=cpu", "trainer.limit_batches=1"]
    procs = [_start(tmp_path, *args) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    runs = list(tmp_path.glob("outputs/*/*"))
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)
    if runs[0].name.split("-")[:3] == runs[1].name.split("-")[:3]:  # same second: the suffix kept them apart
        assert {r.name for r in runs} == {runs[0].name.removesuffix("-1"), runs[0].name.removesuffix("-1") + "-1"}
