"""Latent traversals: rows ordered by KL, only the swept dimension moves, the command's files, and the per-epoch
view on data with known factors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from aelab.commands import traverse, train
from aelab.data.base import FactorSpec
from aelab.engine.build import build_trainer
from aelab.errors import UserError
from aelab.viz import views
from conftest import TINY

CPU = torch.device("cpu")


def _vae(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, "model=vae", *overrides])
    torch.manual_seed(0)
    trainer, data = build_trainer(cfg, CPU, "unused")
    return trainer.model.eval(), data


def test_rows_follow_the_kl_of_each_dimension(compose_cfg, monkeypatch) -> None:
    model, data = _vae(compose_cfg, "latent_dim=4")
    x = data.val.head(16).x
    mu = torch.zeros(16, 4)
    mu[:, 2], mu[:, 0] = 3.0, 0.5  # KL 0.5 * mu^2: 4.5 for dimension 2, 0.125 for dimension 0
    logvar = torch.zeros(16, 4)
    logvar[:, 3] = -2.0  # a tighter posterior costs KL too: 0.5 * (e^-2 - 1 + 2) = 0.568
    monkeypatch.setattr(model, "posterior", lambda x, y=None: (mu, logvar))
    order, kl = views.traversal_order(model, x)
    assert order == [2, 3, 0, 1]
    assert kl.tolist() == pytest.approx([0.125, 0.0, 4.5, 0.5 * (torch.e ** -2 + 1)])


def test_only_the_swept_dimension_moves(compose_cfg) -> None:
    model, data = _vae(compose_cfg, "latent_dim=3")
    example = data.val.head(1)
    low, high = views.traversal_range(model, None)
    assert low[0] == pytest.approx(-2.0537, abs=1e-3) and high[0] == pytest.approx(2.0537, abs=1e-3)  # N(0,1) 2%, 98%
    rows = views.traversal(model, example.x, None, [1, 0], low, high, steps=5)
    assert rows.shape == (2, 5, *data.shape)
    z = model.encode(example.x)
    for row, dim in enumerate([1, 0]):
        for step, value in ((0, low[dim]), (4, high[dim])):
            moved = z.clone()
            moved[0, dim] = value
            assert torch.allclose(rows[row, step], model.likelihood.mean(model.decode(moved))[0], atol=1e-6)


def test_families_without_a_prior_sweep_the_codes_range() -> None:
    class Coded:
        has_prior, latent_dim = False, 2

    codes = torch.stack([torch.linspace(-10, 10, 101), torch.linspace(0, 1, 101)], dim=1)
    low, high = views.traversal_range(Coded(), codes)
    assert low.tolist() == pytest.approx([-9.6, 0.02]) and high.tolist() == pytest.approx([9.6, 0.98])
    low, high = views.traversal_range(Coded(), codes, span=(-1.0, 2.0))
    assert low.tolist() == [-1.0, -1.0] and high.tolist() == [2.0, 2.0]


def test_traverse_command_writes_the_rows_and_a_gif(compose_cfg, tmp_path) -> None:
    train.run(compose_cfg([*TINY, "model=ae", "latent_dim=3"]), tmp_path, ["model=ae"])
    out = traverse.run(compose_cfg([f"run={tmp_path}", "device=cpu", "steps=6", "dims=2", "index=3"], "traverse"))
    folder = Path(out["output_dir"])
    assert folder.parent.name == "traverse" and out["range"] == "the codes' 2%..98%" and len(out["dims"]) == 2
    png = Image.open(folder / "traversal.png")
    assert png.size == (6 * 17 + 1, 2 * 17 + 1)  # 16-px images with 1-px gaps: 6 steps by 2 dimensions
    gif = Image.open(folder / "traversal.gif")
    assert gif.n_frames == 6 + 4  # played forward, then back without repeating the ends
    with pytest.raises(UserError, match="index: index 9999 is past the end of the test split"):
        traverse.run(compose_cfg([f"run={tmp_path}", "device=cpu", "index=9999"], "traverse"))


def test_data_with_known_factors_shows_a_traversal_each_epoch(compose_cfg, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aelab.viz.tensorboard import TensorBoardLogger

    cfg = compose_cfg([*TINY, "model=vae", "trainer.limit_batches=2"])
    trainer, data = build_trainer(cfg, CPU, tmp_path)
    trainer.logger = TensorBoardLogger(tmp_path, manifold_points=64)
    trainer.fit()
    trainer.logger.close()
    images = set(EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload().Tags()["images"])
    assert "val/traversal" not in images  # no known factors: no traversal
    data.factors = FactorSpec(names=("shape",), sizes=(4,), render=lambda f: torch.zeros(len(f), 1, 16, 16))
    trainer.logger = TensorBoardLogger(tmp_path / "factors", manifold_points=64)
    trainer.fit(epochs=2)
    trainer.logger.close()
    images = set(EventAccumulator(str(tmp_path / "factors"), size_guidance={"images": 0}).Reload().Tags()["images"])
    assert "val/traversal" in images
