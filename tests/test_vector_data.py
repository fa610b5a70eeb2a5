"""Vector data (toy2d, csv): sources, training-split standardisation, the arch rule, scatter-plot views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from aelab.commands import train
from aelab.data import build_data
from aelab.engine.loading import load_trained
from aelab.errors import UserError
from conftest import REPO

CPU = torch.device("cpu")


def data_cfg(name: str, **keys):
    cfg = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    for key, value in keys.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def write_csv(path, rows: int = 200, label: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = ["a,b,c,kind" if label else "a,b,c"]
    for i in range(rows):
        a, b = rng.normal(5.0, 2.0), rng.normal(-3.0, 0.5)
        cells = [f"{a:.4f}", f"{b:.4f}", f"{a + b:.4f}"] + (["normal" if i % 3 else "odd"] if label else [])
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


def test_toy2d_is_a_sine_arc_and_a_circle() -> None:
    data = build_data(data_cfg("toy2d"), CPU)
    assert data.name == "toy2d" and tuple(data.shape) == (2,) and data.class_names == ["sine", "circle"]
    assert len(data.train) + len(data.val) + len(data.test) == 4000
    x, y = data.train.x, data.train.y
    arc, circle = x[y == 0], x[y == 1]
    assert arc[:, 0].min() > -2.5 and arc[:, 0].max() < 2.5
    assert (arc[:, 1] - torch.sin(arc[:, 0])).abs().mean() < 0.1  # on the curve, up to the noise
    radius = (circle - torch.tensor([1.5, -0.5])).norm(dim=1)
    assert (radius - 0.5).abs().mean() < 0.1


def test_csv_standardises_with_training_statistics_only(tmp_path) -> None:
    write_csv(tmp_path / "table.csv")
    data = build_data(data_cfg("csv", path=str(tmp_path / "table.csv"), label_column="kind"), CPU)
    assert tuple(data.shape) == (3,) and data.num_classes == 2 and data.class_names == ["normal", "odd"]
    train = data.train.x
    assert torch.allclose(train.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(train.std(0), torch.ones(3), atol=1e-4)
    held_out = torch.cat([data.val.x, data.test.x])
    assert not torch.allclose(held_out.mean(0), torch.zeros(3), atol=1e-3)  # their own statistics were not used

    unlabelled = tmp_path / "plain.csv"
    write_csv(unlabelled, label=False)
    assert build_data(data_cfg("csv", path=str(unlabelled)), CPU).num_classes is None


@pytest.mark.parametrize("content, keys, message", [
    (None, {}, "data.path: no CSV file given"),
    ("a,b\n1,2\n3,x\n", {"path": "FILE"}, "data.path: .*line 3, column 'b'"),
    ("a,b\n1,2\n3,4\n", {"path": "FILE", "label_column": "kind"}, "data.label_column: no column 'kind'"),
    ("a,b\n1,2\n3\n", {"path": "FILE"}, "data.path: .*line 3 has 1 fields"),
])
def test_csv_mistakes_are_one_line(tmp_path, content, keys, message) -> None:
    file = tmp_path / "bad.csv"
    if content is not None:
        file.write_text(content)
    keys = {k: (str(file) if v == "FILE" else v) for k, v in keys.items()}
    with pytest.raises(UserError, match=message):
        build_data(data_cfg("csv", **keys), CPU)


def test_vector_data_defaults_to_gaussian_and_refuses_conv(compose_cfg, tmp_path) -> None:
    from aelab.engine.build import build_model

    cfg = compose_cfg(["data=toy2d", "model=vae", "latent_dim=1"])
    assert cfg.model.likelihood == "gaussian"
    assert compose_cfg(["data=mnist5k", "model=vae"]).model.likelihood == "bernoulli"
    data = build_data(cfg.data, CPU)
    with pytest.raises(UserError) as error:
        build_model(compose_cfg(["data=toy2d", "arch=conv"]), data.shape, data.num_classes)
    assert error.value.line() == ("error: arch: conv needs images (C, H, W), the data's examples are vectors "
                                  "of shape [2] (arch=mlp)")


def test_cvae_refuses_data_without_labels(compose_cfg, tmp_path) -> None:
    write_csv(tmp_path / "plain.csv", label=False)
    overrides = ["data=csv", f"data.path={tmp_path / 'plain.csv'}", "model=cvae", "latent_dim=2", "epochs=1",
                 "logger=none", "device=cpu"]
    with pytest.raises(UserError, match="model: cvae decodes with the class label, but the data has no labels"):
        train.run(compose_cfg(overrides), tmp_path / "run", overrides)


def test_toy2d_tensorboard_shows_scatter_plots(compose_cfg, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["data=toy2d", "model=cvae", "latent_dim=1", "epochs=1", "device=cpu", "trainer.limit_batches=3",
                 "logger.manifold_points=300"]
    train.run(compose_cfg(overrides), tmp_path, overrides)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {"val/reconstructions", "val/decoded_curve", "val/prior_samples", "val/latent_manifold"} <= images
    assert "val/active_units" in events.Tags()["scalars"]  # the VAE family's diagnostics
    assert not any(tag.startswith("val/latent_grid") for tag in images)  # an image view: not for vectors


def test_commands_draw_scatter_plots_for_vectors(compose_cfg, tmp_path) -> None:
    from aelab.commands import eval as eval_command
    from aelab.commands import interpolate, sample

    overrides = ["data=toy2d", "model=vae", "latent_dim=1", "epochs=1", "device=cpu", "logger=none",
                 "trainer.limit_batches=3"]
    train.run(compose_cfg(overrides), tmp_path, overrides)
    run = [f"run={tmp_path}", "device=cpu"]
    cheap = ["iw_samples=0", "noise=[]", "probe.max_train=0", "generation.samples=0", "tensorboard=false"]
    out = eval_command.run(compose_cfg([*run, *cheap], config_name="eval"))
    assert (tmp_path / "eval").is_dir() and out["test/loss"] == pytest.approx(out["test/recon"] + out["test/kl"])
    loaded = load_trained(tmp_path)
    test = build_data(loaded.config.data, torch.device("cpu")).test
    with torch.no_grad():  # squared error of the mean reconstructions, summed over the 2 coordinates, by hand
        x = test.head(len(test)).x.float()  # (N, 2)
        by_hand = (loaded.model.reconstruct(x) - x).pow(2).sum(1).mean()
    assert out["test/recon_mse"] == pytest.approx(float(by_hand), rel=1e-4)
    assert next(tmp_path.glob("eval/*/reconstructions.png")).stat().st_size > 0
    sample.run(compose_cfg([*run, "tensorboard=false"], config_name="sample"))
    assert next(tmp_path.glob("sample/*/samples.png")).stat().st_size > 0
    interpolate.run(compose_cfg([*run, "by=class", "from=0", "to=1", "tensorboard=false"], config_name="interpolate"))
    assert next(tmp_path.glob("interpolate/*/interpolation.png")).stat().st_size > 0




def test_every_family_trains_on_toy2d_with_an_mlp(compose_cfg, tmp_path) -> None:
    from aelab.engine.build import build_model
    from aelab.engine.trainer import Trainer
    from aelab.viz.logger import NullLogger
    from conftest import model_names

    data = None
    from aelab.schema import resolve_target

    for family in model_names():
        cfg = compose_cfg(["data=toy2d", f"model={family}", "latent_dim=2", "device=cpu", "logger=none"])
        if "vectors" not in resolve_target(cfg.model._target_, "model").data_kinds:  # the family says so (vq_vae)
            continue
        data = data or build_data(cfg.data, CPU)
        torch.manual_seed(0)
        net = build_model(cfg, data.shape, data.num_classes)
        trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
        net.fit_closed_form(data.train)
        batch = data.train.head(256)
        for _ in range(3):
            trainer.train_step(batch)
        val = trainer.evaluate(data.val).scalars
        assert np.isfinite(val["loss"]) and net.reconstruct(batch.x, batch.y).shape == (256, 2), family
