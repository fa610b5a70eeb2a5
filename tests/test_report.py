"""One measurement path: what a run measures does not depend on the logger; the checkpoint monitor, early
stopping, interval means, fp16 and the eval failures that must not lose work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aelab.commands import eval as eval_command
from aelab.commands import train
from aelab.engine.build import build_trainer
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.engine.loading import load_trained
from aelab.engine.measure import measure
from aelab.errors import UserError
from conftest import TINY, noise_images

CPU = torch.device("cpu")
QUICK_EVAL = ["device=cpu", "iw_samples=0", "generation.samples=0", "probe.max_train=0", "noise=[]",
              "tensorboard=false", "num_images=0"]


class Recorder:
    """A logger that keeps what it is given (a sink only: it asks for no pictures)."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.reports: list[tuple[int, dict[str, float]]] = []

    def scalars(self, values, step):
        self.logged.append((step, dict(values)))

    def picture_options(self, epoch):
        return None

    def report(self, report, prefix, step):
        self.reports.append((step, report.prefixed(prefix)))

    def hparams(self, params, metrics):
        pass

    def close(self):
        pass


def _trainer(compose_cfg, tmp_path, *overrides: str):
    cfg = compose_cfg([*TINY, *overrides])
    torch.manual_seed(0)
    trainer, data = build_trainer(cfg, CPU, tmp_path)
    trainer.logger = Recorder()
    return trainer, data, cfg


def test_metrics_json_has_the_same_val_keys_with_or_without_a_logger(compose_cfg, tmp_path) -> None:
    saved = {}
    for logger in ("none", "tensorboard"):
        overrides = ["model=vae", "latent_dim=2", f"logger={logger}", "trainer.limit_batches=2"]
        train.run(compose_cfg([*TINY, *overrides]), tmp_path / logger, overrides)
        saved[logger] = json.loads((tmp_path / logger / "metrics.json").read_text())
    keys = {name: sorted(k for k in values if k.startswith("val/")) for name, values in saved.items()}
    assert keys["none"] == keys["tensorboard"]
    assert {"val/active_units", "val/kl_dim/00", "val/kl_dim/01", "val/loss"} <= set(keys["none"])  # diagnostics too
    assert saved["none"]["val/loss"] == pytest.approx(saved["tensorboard"]["val/loss"])  # same run, same numbers


def test_eval_reports_what_training_measures_on_the_same_split(compose_cfg, tmp_path) -> None:
    overrides = ["model=sparse_ae", "latent_dim=8"]
    train.run(compose_cfg([*TINY, *overrides]), tmp_path, overrides)
    out = eval_command.run(compose_cfg([f"run={tmp_path}", "split=val", *QUICK_EVAL], "eval"))
    loaded = load_trained(tmp_path)
    cfg = compose_cfg([*TINY, *overrides])
    from aelab.data import build_data

    report = measure(loaded.model, build_data(cfg.data, CPU).val, step=0, batch_size=1024)
    for name in ("loss", "recon", "sparsity", "mean_activation", "active_fraction"):
        assert out[f"val/{name}"] == pytest.approx(report.scalars[name], rel=1e-6), name
    trained = json.loads((tmp_path / "metrics.json").read_text())
    assert out["val/loss"] == pytest.approx(trained["val/loss"], rel=1e-6)  # the last epoch's report, recomputed


def test_train_scalars_are_means_of_each_logging_interval(compose_cfg, tmp_path) -> None:
    trainer, _, _ = _trainer(compose_cfg, tmp_path, "model=ae", "trainer.log_every=2", "epochs=1")
    per_step: list[float] = []
    step_fn = trainer.train_step

    def recording(batch):
        terms = step_fn(batch)
        per_step.append(float(terms["recon"]))
        return terms

    trainer.train_step = recording
    metrics = trainer.fit()
    logged = {step: values["train/recon"] for step, values in trainer.logger.logged if "train/recon" in values}
    assert len(per_step) >= 4 and 2 in logged and 4 in logged
    assert logged[2] == pytest.approx(sum(per_step[0:2]) / 2, rel=1e-5)
    assert logged[4] == pytest.approx(sum(per_step[2:4]) / 2, rel=1e-5)  # not the running mean of steps 1-4
    assert metrics["train/recon"] == pytest.approx(sum(per_step) / len(per_step), rel=1e-5)  # the epoch's mean


def test_best_checkpoint_holds_the_best_epoch_of_the_monitor(compose_cfg, tmp_path) -> None:
    # monitor_mode=max on a falling loss makes epoch 1 the "best": best.pt must be epoch 1, last.pt epoch 3
    trainer, data, _ = _trainer(compose_cfg, tmp_path, "model=ae", "epochs=3", "trainer.monitor=val/recon",
                                "trainer.monitor_mode=max")
    metrics = trainer.fit()
    by_epoch = [values["val/recon"] for _, values in trainer.logger.reports]
    assert by_epoch[0] > by_epoch[-1] and metrics["monitor_best_epoch"] == 1
    assert metrics["monitor_best"] == pytest.approx(max(by_epoch))
    best, last = load_checkpoint(checkpoint_path(tmp_path, "best")), load_checkpoint(checkpoint_path(tmp_path, "last"))
    assert best["progress"]["epoch"] == 1 and last["progress"]["epoch"] == 3
    model = load_trained(tmp_path, "best").model  # the AE is deterministic: its val/recon is reproduced exactly
    assert measure(model, data.val, step=0, batch_size=1024).scalars["recon"] == pytest.approx(by_epoch[0], rel=1e-5)


def test_early_stopping_ends_the_run_when_the_monitor_stops_improving(compose_cfg, tmp_path) -> None:
    overrides = ["model=ae", "epochs=6", "trainer.monitor_mode=max", "trainer.early_stopping=2"]
    metrics = train.run(compose_cfg([*TINY, *overrides]), tmp_path, overrides)
    assert metrics["stopped_early"] is True and metrics["epochs"] == 3 and metrics["monitor_best_epoch"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["monitor"] == "val/loss"


@pytest.mark.parametrize("overrides, monitor, mode", [
    (["model=vae"], "val/loss", "min"),
    (["model=beta_vae", "model.kl_warmup_steps=100"], "val/loss_at_beta", "min"),
    (["model=aae"], "val/recon", "min"),
    (["model=factor_vae", "model.disc_hidden=[16]"], "val/recon", "min"),
    (["model=vae", "trainer.monitor=val/recon"], "val/recon", "min"),
])
def test_each_family_monitors_what_means_a_better_model(compose_cfg, tmp_path, overrides, monitor, mode) -> None:
    trainer, _, _ = _trainer(compose_cfg, tmp_path, *overrides, "trainer.limit_batches=1")
    metrics = trainer.fit()
    assert (metrics["monitor"], metrics["monitor_mode"]) == (monitor, mode)
    assert metrics["monitor_best"] == pytest.approx(metrics[monitor])


def test_loss_at_final_beta_does_not_favour_an_underweighted_warm_up_epoch(compose_cfg, tmp_path) -> None:
    trainer, data, _ = _trainer(compose_cfg, tmp_path, "model=beta_vae", "beta=4", "model.kl_warmup_steps=1000")
    trainer.step = 10  # the KL weight is 4 * 10 / 1000 here
    report = trainer.evaluate(data.val)
    assert report.scalars["kl"] < 0.05 * report.scalars["loss_at_beta"]
    unweighted = report.scalars["kl"] / (4 * 10 / 1000)
    assert report.scalars["loss_at_beta"] == pytest.approx(report.scalars["recon"] + 4 * unweighted, rel=0.05)


def test_a_monitor_the_run_does_not_measure_is_refused_before_training(compose_cfg, tmp_path) -> None:
    trainer, _, _ = _trainer(compose_cfg, tmp_path, "model=ae", "trainer.monitor=val/accuracy")
    with pytest.raises(UserError, match=r"trainer\.monitor: val/accuracy is not measured.*val/recon"):
        trainer.fit()
    assert not (tmp_path / "checkpoints").exists()


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(compose_cfg, tmp_path) -> None:
    trainer, data, cfg = _trainer(compose_cfg, tmp_path, "model=ae", "trainer.precision=fp16", "epochs=2")
    assert trainer.amp_dtype == torch.float16 and trainer.scaler is not None
    before = trainer.evaluate(data.val).scalars["loss"]
    trainer.fit()
    assert trainer.evaluate(data.val).scalars["loss"] < before
    state = load_checkpoint(checkpoint_path(tmp_path, "last"))
    assert state["scaler"]["scale"] == trainer.scaler.get_scale()
    again, _ = build_trainer(cfg, CPU, tmp_path / "again")
    again.load_state_dict(state)
    assert again.scaler.get_scale() == trainer.scaler.get_scale()


def test_eval_refuses_unknown_normal_classes_before_measuring(compose_cfg, tmp_path) -> None:
    train.run(compose_cfg([*TINY, "model=ae"]), tmp_path, ["model=ae"])
    with pytest.raises(UserError, match=r"anomaly\.normal: no class 42 in synthetic \(classes: 0=.*3="):
        eval_command.run(compose_cfg([f"run={tmp_path}", "anomaly.normal=[42]", *QUICK_EVAL], "eval"))
    assert not (tmp_path / "eval").exists()


def test_eval_refuses_unlabelled_outliers_for_a_conditional_run_before_measuring(compose_cfg, tmp_path) -> None:
    folder = noise_images(tmp_path / "scans", 20)
    run_dir = tmp_path / "run"
    train.run(compose_cfg([*TINY, "model=cvae"]), run_dir, ["model=cvae"])
    outliers = f"anomaly.outliers={{name: folder, source: {{path: '{folder}', size: 16}}}}"
    with pytest.raises(UserError, match=r"anomaly\.outliers: .* no labels"):
        eval_command.run(compose_cfg([f"run={run_dir}", outliers, *QUICK_EVAL], "eval"))
    assert not (run_dir / "eval").exists()


def test_a_late_failure_keeps_the_metrics_already_measured(compose_cfg, tmp_path, monkeypatch) -> None:
    import aelab.metrics.generation as generation

    train.run(compose_cfg([*TINY, "model=vae"]), tmp_path, ["model=vae"])

    def broken(*args, **kwargs):
        raise RuntimeError("the feature classifier ran out of memory")

    monkeypatch.setattr(generation, "generation_metrics", broken)
    overrides = [f"run={tmp_path}", "device=cpu", "iw_samples=4", "probe.max_train=0", "noise=[]",
                 "tensorboard=false", "generation.samples=64"]
    with pytest.raises(RuntimeError, match="out of memory"):
        eval_command.run(compose_cfg(overrides, "eval"))
    saved = json.loads(next(Path(tmp_path, "eval").glob("*/metrics.json")).read_text())
    assert {"test/loss", "test/psnr", "test/nll_iw", "test/active_units"} <= set(saved)


def test_tensorboard_cards_start_with_train_and_val(compose_cfg, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["model=vae", "latent_dim=2", "logger=tensorboard", "trainer.limit_batches=2"]
    train.run(compose_cfg([*TINY, *overrides]), tmp_path, overrides)
    scalars = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload().Tags()["scalars"]
    assert scalars and all(tag.startswith(("train/", "val/")) for tag in scalars), scalars  # no epoch, no hparam/*
