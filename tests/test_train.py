"""The shared engine end to end through `train.run`: outputs, TensorBoard, determinism, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aelab.commands import train
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.errors import UserError
from conftest import TINY


def _train(compose_cfg, run_dir, overrides: list[str]) -> dict:
    return train.run(compose_cfg([*TINY, *overrides]), run_dir, overrides)


def test_run_writes_checkpoints_metrics_and_tensorboard(compose_cfg, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = _train(compose_cfg, tmp_path, ["model=vae", "latent_dim=2", "epochs=2", "logger=tensorboard"])
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "checkpoints" / "best.pt").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["data"] == "synthetic" and saved["epochs"] == 2
    assert saved["val/loss"] == pytest.approx(saved["val/recon"] + saved["val/kl"])
    assert math.isfinite(metrics["val/loss"])

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"train/recon", "train/kl", "train/loss", "train/lr", "train/images_per_s", "val/loss", "val/kl"} <= scalars
    assert {"val/reconstructions", "val/latent_manifold", "val/latent_grid", "val/prior_samples"} <= images
    assert len(events.Images("val/reconstructions")) == 2  # one per epoch

    state = load_checkpoint(checkpoint_path(tmp_path))
    assert state["config"]["latent_dim"] == 2 and state["config"]["model"]["latent_dim"] == 2
    assert state["progress"]["epoch"] == 2 and state["data"]["name"] == "synthetic"


def test_training_improves_validation_loss(compose_cfg, tmp_path) -> None:
    first = _train(compose_cfg, tmp_path / "a", ["model=ae", "epochs=1", "trainer.limit_batches=1"])
    longer = _train(compose_cfg, tmp_path / "b", ["model=ae", "epochs=6"])
    assert longer["val/loss"] < 0.8 * first["val/loss"]


def test_same_seed_same_curve_other_seed_differs(compose_cfg, tmp_path) -> None:
    a = _train(compose_cfg, tmp_path / "a", ["model=vae", "epochs=2", "seed=3"])
    b = _train(compose_cfg, tmp_path / "b", ["model=vae", "epochs=2", "seed=3"])
    c = _train(compose_cfg, tmp_path / "c", ["model=vae", "epochs=2", "seed=4"])
    keys = ["train/loss", "val/loss", "val/kl"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["val/loss"] != c["val/loss"]


def test_resume_continues_exactly(compose_cfg, tmp_path) -> None:
    straight = _train(compose_cfg, tmp_path / "straight", ["model=vae", "epochs=3"])
    _train(compose_cfg, tmp_path / "split", ["model=vae", "epochs=1"])
    resumed = train.run(compose_cfg([f"resume={tmp_path / 'split'}", "epochs=3"]), tmp_path / "split",
                        [f"resume={tmp_path / 'split'}", "epochs=3"])
    assert resumed["steps"] == straight["steps"] and resumed["epochs"] == 3
    for key in ("train/loss", "val/loss", "val/recon", "val/kl"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
    # the resumed run kept the stored config (synthetic data, latent 4, no TensorBoard) under the defaults
    assert load_checkpoint(checkpoint_path(tmp_path / "split"))["config"]["data"]["source"]["_target_"].endswith("load_synthetic")


def test_resume_refuses_to_switch_groups(compose_cfg, tmp_path) -> None:
    _train(compose_cfg, tmp_path, ["model=ae"])
    with pytest.raises(UserError, match="model"):
        train.run(compose_cfg([f"resume={tmp_path}", "model=vae"]), tmp_path, [f"resume={tmp_path}", "model=vae"])


def test_best_checkpoint_tracks_lowest_validation_loss(compose_cfg, tmp_path) -> None:
    _train(compose_cfg, tmp_path, ["model=ae", "epochs=3"])
    best = load_checkpoint(checkpoint_path(tmp_path, "best"))
    last = load_checkpoint(checkpoint_path(tmp_path, "last"))
    assert best["progress"]["best"] == last["progress"]["best"]
    assert best["progress"]["epoch"] <= last["progress"]["epoch"]


def test_diverging_run_stops_with_the_bad_term(compose_cfg, tmp_path) -> None:
    with pytest.raises(UserError, match=r"loss term 'recon'.*non-finite"):
        _train(compose_cfg, tmp_path, ["model=ae", "lr=1e30", "epochs=3", "trainer.log_every=1"])


def test_data_stays_fixed_across_seeds(compose_cfg) -> None:
    from aelab.data import build_data

    a = build_data(compose_cfg([*TINY, "seed=1"]).data, torch.device("cpu"))
    b = build_data(compose_cfg([*TINY, "seed=2"]).data, torch.device("cpu"))
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.x, b.val.x)


def test_the_trainers_settings_are_trainer_options_with_every_default_in_the_yaml(compose_cfg) -> None:
    import dataclasses

    from omegaconf import OmegaConf

    from aelab.engine.options import TrainerOptions
    from conftest import REPO

    declared = dataclasses.fields(TrainerOptions)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in declared)
    assert {f.name for f in declared} == set(OmegaConf.load(REPO / "conf" / "trainer" / "default.yaml"))
    cfg = compose_cfg(["data=synthetic", "model=ae", "trainer.log_every=7", "epochs=3"])
    stored = OmegaConf.to_container(cfg.trainer, resolve=True)
    del stored["early_stopping"], stored["fast_paths"]  # a run saved before these keys existed
    options = TrainerOptions.from_config(stored)
    assert (options.log_every, options.epochs, options.early_stopping, options.fast_paths) == (7, 3, None, "auto")


def test_metrics_json_carries_what_the_family_says_of_its_metrics(compose_cfg, tmp_path) -> None:
    overrides = [*TINY, "model=aae", "trainer.limit_batches=2"]
    train.run(compose_cfg(overrides), tmp_path, overrides)
    directions = json.loads((tmp_path / "metrics.json").read_text())["directions"]
    assert directions["train/adv_gen"] is None and directions["val/adv_disc"] is None  # opposing players
    assert directions["val/recon"] == "min" and directions["val/loss"] == "min"
