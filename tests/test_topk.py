"""The k-sparse (TopK) autoencoder, `model=sparse_ae model.penalty=topk`: exactly the k largest pre-activations
kept, the dead-latent counts, AuxK's gradient on the dead latents only, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.sparse_ae import FiringWindow, Standardizer, dead_fraction, topk_code
from aelab.precheck import compose_checked
from aelab.viz.logger import NullLogger
from conftest import TINY

CPU = torch.device("cpu")
TOPK = ["model=sparse_ae", "model.penalty=topk", "latent_dim=64"]


def _build(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, *TOPK, *overrides])
    data = build_data(cfg.data, CPU)
    torch.manual_seed(0)
    return cfg, data, build_model(cfg, data.shape, data.num_classes)


@pytest.mark.parametrize("k", [1, 5, 32])
def test_the_code_keeps_exactly_the_k_largest_pre_activations(compose_cfg, k: int) -> None:
    _, data, net = _build(compose_cfg, f"model.k={k}")
    x = data.train.head(50).x
    pre = net.pre_activations(x)  # (50, 64): standardised over these 50 (training mode)
    z = net.encode(x)
    top = pre.topk(k, dim=1)
    # every nonzero is one of the top k, equal to it; the top k that are positive are all there (ReLU after)
    assert torch.equal((z != 0).sum(1), (top.values > 0).sum(1))
    assert torch.equal(z.gather(1, top.indices), top.values.relu())
    # shifted so that every pre-activation is positive: exactly k units per example
    shifted = topk_code(pre + pre.abs().max() + 1, k)
    assert torch.equal((shifted != 0).sum(1), torch.full((50,), k))


def test_dead_fraction_counts_units_silent_on_every_example() -> None:
    codes = torch.zeros(6, 8)
    codes[0, 0], codes[3, 2], codes[5, 7] = 1.0, 0.5, 2.0  # units 0, 2 and 7 fire once each
    assert dead_fraction(codes) == 5 / 8


def test_the_training_window_declares_a_latent_dead_after_dead_after_silent_examples() -> None:
    window = FiringWindow(3, dead_after=10)
    first = torch.tensor([[1.0, 1.0, 0.0]] * 4)  # a batch of 4: units 0 and 1 fire
    later = torch.tensor([[1.0, 0.0, 0.0]] * 4)  # then only unit 0
    window.update(first)
    window.update(later)
    window.update(later)  # 12 examples: unit 2 silent for 12, unit 1 for 8
    assert window.since_fired.tolist() == [0, 8, 12]
    assert window.dead().tolist() == [False, False, True]
    window.update(later)  # unit 1: 12 silent examples now
    assert window.dead().tolist() == [False, True, True]


def test_auxk_trains_the_top_auxk_dead_latents_and_nothing_else(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, "model.k=4", "model.auxk=3", "model.dead_after=5")
    batch = data.train.head(16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[10:30] = True
    net.firing.since_fired.copy_(torch.where(dead, 100, 0))
    pre = net.pre_activations(batch.x).detach().requires_grad_(True)  # (16, 64)
    net.auxk_loss(pre, topk_code(pre, 4), batch).backward()
    touched = pre.grad != 0  # (16, 64)
    assert not touched[:, ~dead].any()  # live latents get nothing from AuxK
    assert touched.any(1).all() and (touched.sum(1) <= 3).all()  # each example: at most auxk dead latents
    chosen = pre.detach().masked_fill(~dead, float("-inf")).topk(3, dim=1)
    assert touched.gather(1, chosen.indices).eq(chosen.values > 0).all()  # the largest dead, where positive
    net.firing.since_fired.zero_()  # nothing dead: AuxK is zero, its graph kept
    assert float(net.auxk_loss(pre, topk_code(pre, 4), batch).detach()) == 0.0


def test_the_standardizer_centres_and_scales_each_unit_over_the_batch_and_keeps_running_statistics() -> None:
    torch.manual_seed(0)
    norm = Standardizer(3)
    pre = torch.randn(256, 3) * torch.tensor([0.1, 1.0, 10.0]) + torch.tensor([5.0, -2.0, 0.0])
    out = norm.train()(pre)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(3), atol=1e-3)
    mean, var = norm.norm.running_mean.clone(), norm.norm.running_var.clone()  # 0.9 * (0, 1) + 0.1 * batch's
    assert torch.allclose(mean, 0.1 * pre.mean(0)) and torch.allclose(var, 0.9 + 0.1 * pre.var(0))
    expected = (pre[:5] - mean) / (var + norm.norm.eps).sqrt()
    assert torch.allclose(norm.eval()(pre[:5]), expected)  # eval: the running statistics, untouched
    assert torch.allclose(norm.train()(pre[:1]), expected[:1])  # a batch of one has no variance: running ones too
    assert torch.equal(norm.norm.running_mean, mean)


@pytest.mark.parametrize("standardize, dead_at_init", [("true", 0.0), ("false", 0.6)])
def test_standardized_every_unit_wins_on_some_example_at_initialisation(compose_cfg, standardize: str,
                                                                         dead_at_init: float) -> None:
    # The encoder's outputs share a large common part, so unstandardised the same few units top every example
    # (measured: 42 of 64 never fire on 200 examples); standardised, each unit is ranked against its own spread.
    _, data, net = _build(compose_cfg, "model.k=4", f"model.standardize={standardize}")
    dead = dead_fraction(net.encode(data.train.head(200).x))
    assert dead == 0.0 if standardize == "true" else dead > dead_at_init


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_training_tracks_the_window_and_reports_dead_fractions(compose_cfg, tmp_path, standardize: str) -> None:
    cfg, data, net = _build(compose_cfg, "model.k=4", "model.auxk=16", "model.dead_after=128",
                            f"model.standardize={standardize}",
                            "trainer.precision=fp32", "trainer.fast_paths=off")  # no timing of the alternatives
    trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
    for batch in data.train.batches(64, shuffle=True, generator=trainer.data_rng):
        terms = trainer.train_step(batch)
    assert set(terms) == {"recon", "auxk"}
    seen = len(data.train)
    assert int(net.firing.since_fired.max()) <= seen and int(net.firing.since_fired.min()) == 0
    report = net.eval().diagnostics(data.val.head(200)).scalars
    assert report["dead_fraction_train"] == pytest.approx(float(net.firing.dead().float().mean()))
    assert report["dead_fraction"] == pytest.approx(dead_fraction(net.encode(data.val.head(200).x)))
    assert report["active_fraction"] <= 4 / 64 + 1e-9
    # one epoch (768 examples) with AuxK: standardised, no latent is silent over the last 128 examples;
    # unstandardised, AuxK does not revive them (measured: 60 of 64 dead)
    if standardize == "true":
        assert report["dead_fraction_train"] == 0.0
    else:
        assert report["dead_fraction_train"] > 0.8


@pytest.mark.parametrize("overrides, key", [
    (["model.k=65"], "model.k"),
    (["model.auxk=100"], "model.auxk"),
    (["beta=0.01"], "beta"),
])
def test_mistakes_are_one_line(overrides: list[str], key: str) -> None:
    with pytest.raises(UserError) as err:
        compose_checked("train", [*TINY, *TOPK, *overrides])
    assert err.value.key == key and "\n" not in err.value.line()


def test_k_defaults_to_a_quarter_of_the_code(compose_cfg) -> None:
    _, data, net = _build(compose_cfg)  # latent_dim=64, model.k left null
    assert net.k == 16 and int((net.encode(data.train.head(8).x) != 0).sum(1).max()) <= 16
