"""Disentanglement scores on constructed codes with known answers, and on dSprites images with a hand-made encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from aelab.data import dsprites
from aelab.metrics import disentanglement as dm

SIZES = dsprites.FACTOR_SIZES  # (3, 6, 40, 32, 32)
CHANCE = 1 / len(SIZES)


class IndexImages:
    """A factor source whose 'images' are the factor indices themselves (N, 1, 1, F)."""

    sizes = SIZES

    def render(self, factor_indices: Tensor) -> Tensor:
        return factor_indices.double().view(len(factor_indices), 1, 1, -1)


def perfect(x: Tensor) -> Tensor:
    return x.flatten(1)  # codes = factors


SCALES = [3.0, -0.5, 10.0, 0.25, 2.0]  # the negative one flips a dimension


def shuffled(x: Tensor, positive: bool = False) -> Tensor:
    """The codes with every dimension moved, rescaled and shifted: no score may change."""
    x = x.flatten(1)
    scales = torch.tensor(SCALES[: x.shape[1]], dtype=x.dtype)
    if positive:  # FactorVAE prunes by absolute std: keep every dimension alive
        scales = scales.abs().clamp_min(1.0)
    return x[:, torch.roll(torch.arange(x.shape[1]), 2)] * scales + 7.0


def noise(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(len(x), 6, generator=g, dtype=torch.float64)  # ignores the images


def codes_and_factors(n: int, seed: int) -> np.ndarray:
    return dm.sample_factors(SIZES, n, np.random.default_rng(seed))


def test_beta_vae_score() -> None:
    kw = dict(num_train=200, num_eval=150, seed=1)
    exact = dm.beta_vae_score(perfect, IndexImages(), **kw)
    assert exact["train_accuracy"] == 1.0 and exact["eval_accuracy"] > 0.98
    assert dm.beta_vae_score(shuffled, IndexImages(), **kw)["eval_accuracy"] > 0.98
    assert dm.beta_vae_score(noise(), IndexImages(), **kw)["eval_accuracy"] < CHANCE + 0.1


def test_factor_vae_score() -> None:
    kw = dict(num_train=300, num_eval=200, num_variance_estimate=1000, seed=2)
    exact = dm.factor_vae_score(perfect, IndexImages(), **kw)
    assert exact == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 5.0}
    assert dm.factor_vae_score(lambda x: shuffled(x, positive=True), IndexImages(), **kw) == exact
    random = dm.factor_vae_score(noise(), IndexImages(), **kw)
    assert random["eval_accuracy"] < CHANCE + 0.1
    # dimensions collapsed below std 0.05 are pruned; with none left the score is 0
    collapsed = dm.factor_vae_score(lambda x: 0.001 * x.flatten(1), IndexImages(), **kw)
    assert collapsed["num_active_dims"] == 0 and collapsed["eval_accuracy"] == 0.0
    # a collapsed extra dimension takes no votes
    extra = dm.factor_vae_score(lambda x: torch.cat([x.flatten(1), torch.zeros(len(x), 1)], 1), IndexImages(), **kw)
    assert extra["eval_accuracy"] == 1.0 and extra["num_active_dims"] == 5.0


def test_mig() -> None:
    f = codes_and_factors(5000, seed=3)
    exact = dm.mig(f.astype(float), f)
    # 20 bins hold the 3- and 6-valued factors whole; 40 and 32 values lose log(20)/log(K) of a bin each
    expected = np.mean([1, 1, np.log(20) / np.log(40), np.log(20) / np.log(32), np.log(20) / np.log(32)])
    assert exact == pytest.approx(expected, abs=0.02)
    # its parts, per factor: a code that mixes two factors in both of two dimensions has no gap on either
    gaps = dm.mig_gaps(f.astype(float), f)
    assert list(gaps) == [0, 1, 2, 3, 4] and np.mean(list(gaps.values())) == pytest.approx(exact, abs=1e-12)
    assert gaps[0] == pytest.approx(1.0, abs=0.01)
    rotated = f.astype(float)
    rotated[:, 3], rotated[:, 4] = f[:, 3] + f[:, 4], f[:, 3] - f[:, 4]  # posX and posY as a rotated plane
    mixed = dm.mig_gaps(rotated, f)
    assert mixed[3] < 0.05 and mixed[4] < 0.05 and mixed[1] == pytest.approx(gaps[1], abs=0.01)
    moved = torch.from_numpy(f.astype(float))
    assert dm.mig(shuffled(moved).numpy(), f) == pytest.approx(exact, abs=1e-9)
    assert dm.mig(np.random.default_rng(0).normal(size=(5000, 6)), f) < 0.02
    # with no more values than bins a perfect code scores 1, less the plug-in MI bias of the runner-up
    small = dm.sample_factors((2, 5, 20), 3000, np.random.default_rng(1))
    assert dm.mig(small.astype(float), small) == pytest.approx(1.0, abs=0.01)
    drawn = dm.sample_factors(SIZES, 3000, np.random.default_rng(4))  # what mig_score(seed=4) draws
    assert dm.mig_score(perfect, IndexImages(), num_points=3000, seed=4) == pytest.approx(dm.mig(drawn, drawn))


def test_sap() -> None:
    f_train, f_test = codes_and_factors(3000, seed=4), codes_and_factors(1000, seed=5)
    z_train, z_test = f_train.astype(float), f_test.astype(float)
    # continuous scoring: the squared correlation of a perfect code is 1, of any other dimension ~0
    assert dm.sap(z_train, f_train, z_test, f_test, continuous=True) > 0.99
    # discrete scoring (the library's, for dSprites): the gap between accuracies can reach at most
    # 1 - chance (a useless dimension still guesses right 1/K of the time), and a one-feature linear SVM
    # cannot name 32 or 40 classes, so even a perfect code stays far from 1
    assert 0.1 < dm.sap(z_train, f_train, z_test, f_test) < 0.5
    binary_train = dm.sample_factors((2, 2, 2), 2000, np.random.default_rng(6))
    binary_test = dm.sample_factors((2, 2, 2), 500, np.random.default_rng(7))
    assert dm.sap(binary_train.astype(float), binary_train, binary_test.astype(float), binary_test) == (
        pytest.approx(0.5, abs=0.05))
    for continuous in (False, True):
        base = dm.sap(z_train, f_train, z_test, f_test, continuous=continuous)
        moved = dm.sap(shuffled(torch.from_numpy(z_train)).numpy(), f_train,
                       shuffled(torch.from_numpy(z_test)).numpy(), f_test, continuous=continuous)
        assert moved == pytest.approx(base, abs=1e-9)
        rng = np.random.default_rng(8)
        assert dm.sap(rng.normal(size=(3000, 6)), f_train, rng.normal(size=(1000, 6)), f_test,
                      continuous=continuous) < 0.03


@pytest.mark.parametrize("estimator", [pytest.param("gbt", marks=pytest.mark.slow), "forest"])
def test_dci(estimator: str) -> None:
    # fewer values per factor than dSprites: gradient boosting grows 100 trees per class
    f_train = dm.sample_factors((2, 3, 4, 4), 400, np.random.default_rng(9))
    f_test = dm.sample_factors((2, 3, 4, 4), 200, np.random.default_rng(10))
    z_train, z_test = f_train.astype(float), f_test.astype(float)
    exact = dm.dci(z_train, f_train, z_test, f_test, estimator=estimator)
    assert exact["disentanglement"] > 0.99 and exact["completeness"] > 0.99
    assert exact["informativeness_test"] > 0.8
    moved = dm.dci(shuffled(torch.from_numpy(z_train)).numpy(), f_train,
                   shuffled(torch.from_numpy(z_test)).numpy(), f_test, estimator=estimator)
    assert moved == pytest.approx(exact, abs=1e-6)
    rng = np.random.default_rng(11)
    random = dm.dci(rng.normal(size=(400, 6)), f_train, rng.normal(size=(200, 6)), f_test, estimator=estimator)
    assert random["disentanglement"] < 0.1 and random["completeness"] < 0.1
    assert random["informativeness_test"] < 0.5  # chance over these four factors is about 0.35


def test_dci_from_importance_known_matrices() -> None:
    assert dm.dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dm.dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # two codes share one factor: each code is disentangled, the factor is not complete
    d, c = dm.dci_from_importance(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    assert d == pytest.approx(1.0) and c == pytest.approx(1 - 0.5 * np.log(2) / np.log(3))


NOISE = torch.Generator().manual_seed(0)


def moments(images: Tensor) -> Tensor:
    """A hand-made encoder of dSprites images: centroid column, centroid row, sqrt(area), then noise."""
    n, _, h, w = images.shape
    mass = images.flatten(1).sum(1).clamp_min(1)
    cols = (images.sum(2).squeeze(1) * torch.arange(w)).sum(1) / mass
    rows = (images.sum(3).squeeze(1) * torch.arange(h)).sum(1) / mass
    return torch.cat([torch.stack([cols, rows, mass.sqrt()], 1), torch.randn(n, 2, generator=NOISE)], 1)


def test_scores_on_dsprites_images_with_a_hand_made_encoder(compose_cfg) -> None:
    from aelab.data import build_data

    data = build_data(compose_cfg(["data=dsprites", "data.size=32", "data.subsample=1000"]).data, torch.device("cpu"))
    source = data.factors
    votes = dm.factor_vae_score(moments, source, num_train=200, num_eval=200, num_variance_estimate=500, seed=0)
    assert votes["eval_accuracy"] > 0.5  # posX, posY and scale named right; shape and orientation left over
    mig = dm.mig_score(moments, source, num_points=2000)
    assert 0.2 < mig < 0.9  # the positions are captured, shape and orientation are not


def test_eval_reports_the_five_scores_on_data_with_factors(compose_cfg, tmp_path) -> None:
    from aelab.commands import eval as eval_command
    from aelab.commands import train
    from aelab.engine.loading import load_trained

    overrides = ["data=dsprites", "data.size=32", "data.subsample=600", "model=beta_vae", "latent_dim=4", "epochs=1",
                 "batch_size=64", "device=cpu", "logger=none"]
    train.run(compose_cfg(overrides), tmp_path, overrides)
    sizes = {"num_train": 300, "num_eval": 200, "variance_points": 300, "batch_size": 16}
    quick = [f"run={tmp_path}", "device=cpu", "iw_samples=0", "probe.max_train=0", "noise=[]", "tensorboard=false",
             "num_images=0", "generation.samples=0", *(f"disentanglement.{k}={v}" for k, v in sizes.items())]
    out = eval_command.run(compose_cfg(quick, "eval"))
    names = ("betavae_score", "factorvae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
             "dci_informativeness")
    model = load_trained(tmp_path).model
    source = dsprites.load_dsprites(size=32, subsample=10).factor_spec
    direct = dm.disentanglement_scores(lambda x: model.encode(x).float(), source, seed=0, **sizes)
    assert {f"test/{n}" for n in names} <= set(out) and "disentanglement" in out["seconds"]
    assert all(out[f"test/{n}"] == pytest.approx(direct[n]) for n in names)  # the same draws, the same numbers
    skipped = eval_command.run(compose_cfg([*quick, "disentanglement.enabled=false"], "eval"))
    assert not any(n.endswith(names) for n in skipped)
