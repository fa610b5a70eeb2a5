"""What each family adds on top of the shared contract: corruption, sparsity, KL schedules, conditioning,
adversarial phases and priors, closed-form PCA, and the diagnostics TensorBoard shows."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.data import build_data
from aelab.data.base import Batch
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.aae import hash_fraction
from aelab.models.beta_vae import BetaVAE
from aelab.models.priors import LatentPrior
from aelab.models.sparse_ae import activation, bernoulli_kl
from aelab.models.vae import VAE
from aelab.viz.logger import NullLogger
from conftest import TINY

CPU = torch.device("cpu")


def _build(compose_cfg, *overrides: str, seed: int = 0):
    cfg = compose_cfg([*TINY, *overrides])
    data = build_data(cfg.data, CPU)
    torch.manual_seed(seed)
    return cfg, data, build_model(cfg, data.shape, data.num_classes)


# ---- dae ------------------------------------------------------------------------------------------
def test_dae_with_no_noise_is_a_plain_ae(compose_cfg, tmp_path) -> None:
    results = []
    for family in ("ae", "dae"):
        cfg, data, net = _build(compose_cfg, f"model={family}", "noise=0")
        trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
        batch = data.train.head(32)
        torch.manual_seed(1)
        steps = [trainer.train_step(batch)["recon"].item() for _ in range(3)]
        results.append(steps)
    assert results[0] == results[1]


@pytest.mark.parametrize("corruption", ["gaussian", "salt_pepper", "masking", "downsample"])
def test_dae_corrupts_only_the_input_and_only_in_training(compose_cfg, corruption: str) -> None:
    _, data, net = _build(compose_cfg, "model=dae", "noise=0.5", f"model.corruption={corruption}", "model.factor=4")
    x = data.train.head(64).x
    torch.manual_seed(0)
    noisy = net.train().corrupt(x)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    assert noisy.min() >= 0 and noisy.max() <= 1  # clipped to the Bernoulli data range
    assert torch.equal(net.eval().corrupt(x), x)
    if corruption == "masking":
        dropped = ((noisy == 0) & (x != 0)).sum() / (x != 0).sum()
        assert 0.4 < dropped < 0.6
    if corruption == "salt_pepper":
        changed = noisy != x
        assert ((noisy[changed] == 0) | (noisy[changed] == 1)).all() and 0.15 < changed.float().mean() < 0.35
    if corruption == "downsample":  # 16x16 -> 4x4 -> back: only low frequencies are left
        assert (noisy - x).abs().mean() > 0.05 and noisy.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean()


def test_dae_downsample_needs_images(compose_cfg) -> None:
    with pytest.raises(UserError, match="model.corruption: downsample needs images"):
        _build(compose_cfg, "model=dae", "data=toy2d", "latent_dim=1", "model.corruption=downsample")


# ---- sparse_ae ------------------------------------------------------------------------------------
def test_sparsity_penalties(compose_cfg) -> None:
    z = torch.tensor([[0.0, 2.0, -2.0], [0.0, 0.0, 1.0]])
    a = activation(z)
    assert a[0, 0] == 0 and a[0, 1] == a[0, 2] == pytest.approx(2 * torch.sigmoid(torch.tensor(2.0)).item() - 1)
    assert bernoulli_kl(0.1, torch.tensor([0.1])).item() == pytest.approx(0.0, abs=1e-7)
    assert bernoulli_kl(0.1, torch.tensor([0.5])).item() > bernoulli_kl(0.1, torch.tensor([0.2])).item() > 0

    _, _, l1 = _build(compose_cfg, "model=sparse_ae", "beta=0.5")
    assert l1.code_penalties(z)["sparsity"].item() == pytest.approx(0.5 * a.sum(1).mean().item())
    _, _, kl = _build(compose_cfg, "model=sparse_ae", "beta=2", "model.penalty=kl", "model.rho=0.1")
    expected = 2 * bernoulli_kl(0.1, a.mean(0)).sum().item()
    assert kl.code_penalties(z)["sparsity"].item() == pytest.approx(expected)


def test_sparse_ae_logs_activations_per_class(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, "model=sparse_ae", "latent_dim=9")
    found = net.eval().diagnostics(data.val.head(64))
    assert found.histograms["activations"].numel() == 64 * 9
    tiles = found.images["mean_activation_per_class"].images  # one 3x3 tile of unit means per class
    assert tiles.shape[0] == data.num_classes and tiles.shape[-2:] == (48, 48) and float(tiles.amax()) == 1.0
    assert 0 <= found.scalars["mean_activation"] <= 1


# ---- vae / beta_vae -------------------------------------------------------------------------------
def test_beta_vae_is_the_vae_with_other_hooks(compose_cfg) -> None:
    assert BetaVAE.losses is VAE.losses  # a schedule and free bits are hooks, not a copy of the loss
    cfg, _, net = _build(compose_cfg, "model=beta_vae")
    assert cfg.beta == 4.0 and net.beta == 4.0  # its own default beta...
    cfg, _, net = _build(compose_cfg, "model=beta_vae", "beta=2")
    assert net.beta == 2.0  # ...which `beta=` still overrides


def test_kl_schedules_and_free_bits(compose_cfg) -> None:
    _, _, linear = _build(compose_cfg, "model=beta_vae", "beta=2", "model.kl_warmup_steps=100")
    assert [linear.kl_weight(s) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    _, _, cyclical = _build(compose_cfg, "model=beta_vae", "beta=2", "model.kl_warmup_steps=100",
                            "model.kl_schedule=cyclical")
    assert [cyclical.kl_weight(s) for s in (50, 150, 200, 250)] == [1.0, 2.0, 0.0, 1.0]
    _, _, free = _build(compose_cfg, "model=beta_vae", "model.free_bits=0.5")
    assert free.kl_penalty(torch.tensor([0.1, 2.0])).item() == pytest.approx(2.5)
    with pytest.raises(UserError, match="model.kl_schedule"):
        _build(compose_cfg, "model=beta_vae", "model.kl_schedule=sawtooth")


def test_vae_logs_kl_per_dimension_and_active_units(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, "model=vae", "latent_dim=3")
    found = net.eval().diagnostics(data.val.head(64))
    assert {"kl_dim/00", "kl_dim/01", "kl_dim/02", "active_units"} <= set(found.scalars)
    assert 0 <= found.scalars["active_units"] <= 3 and found.histograms["kl_per_dim"].shape == (3,)


# ---- cae / cvae -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["cae", "cvae"])
def test_conditional_decoders_use_the_label(compose_cfg, family: str) -> None:
    _, data, net = _build(compose_cfg, f"model={family}", "latent_dim=2")
    net.eval()
    z = torch.zeros(4, 2)
    a, b = net.decode(z, torch.zeros(4, dtype=torch.long)), net.decode(z, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b)
    assert "style_transfer" in net.diagnostics(data.val.head(64)).images
    if net.has_prior:  # cvae: generate a chosen class
        assert net.sample(5, torch.full((5,), 2)).shape == (5, *data.shape)


def test_conditional_encoder_option(compose_cfg) -> None:
    _, data, plain = _build(compose_cfg, "model=cae")
    _, _, conditioned = _build(compose_cfg, "model=cae", "model.condition_encoder=true")
    batch = data.val.head(4)
    assert torch.equal(plain.encode(batch.x, batch.y), plain.encode(batch.x, (batch.y + 1) % 4))
    assert not torch.equal(conditioned.encode(batch.x, batch.y), conditioned.encode(batch.x, (batch.y + 1) % 4))


# ---- aae ------------------------------------------------------------------------------------------
def test_aae_phases_own_their_parameters(compose_cfg) -> None:
    _, _, net = _build(compose_cfg, "model=aae")
    phases = {p.name: {id(q) for q in p.parameters} for p in net.phases()}
    encoder, decoder = ({id(q) for q in m.parameters()} for m in (net.encoder, net.decoder))
    discriminator = {id(q) for q in net.discriminator.parameters()}
    assert list(phases) == ["reconstruction", "generator", "discriminator"]
    assert phases["reconstruction"] == encoder | decoder and phases["generator"] == encoder
    assert phases["discriminator"] == discriminator


@pytest.mark.parametrize("overrides, expected", [
    (["model=aae", "model.adv_weight=0.01"], {"reconstruction": 1e-3, "generator": 1e-5, "discriminator": 1e-3}),
    (["model=factor_vae", "model.disc_lr_scale=0.5"], {"vae": 1e-3, "discriminator": 5e-4}),
])
def test_each_phase_steps_with_its_own_learning_rate(compose_cfg, tmp_path, overrides, expected) -> None:
    """A phase's lr_scale reaches its optimiser (fused Adam included): the AAE's generator and FactorVAE's
    discriminator are tuned by it."""
    cfg, data, net = _build(compose_cfg, *overrides, "lr=1e-3")
    trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
    lrs = {p.name: opt.param_groups[0]["lr"] for p, opt in zip(trainer.phases, trainer.optimizers)}
    assert lrs == pytest.approx(expected)


def test_priors_draw_where_they_should() -> None:
    uniform = LatentPrior("uniform", 3).sample(1000, None, CPU)
    assert uniform.shape == (1000, 3) and uniform.min() >= -1 and uniform.max() <= 1
    grid = LatentPrior("grid", 2, grid_size=3)
    cells = torch.arange(9).repeat(100)
    drawn = grid.sample(900, cells, CPU)
    side = 2 / 3
    centre = torch.stack([cells % 3, cells // 3], 1) * side - 1 + side / 2
    assert ((drawn - centre).abs() <= side / 4 + 1e-6).all()  # each draw inside its cell's patch
    mixture = LatentPrior("mixture", 2, num_modes=4)
    drawn = mixture.sample(4000, torch.arange(4).repeat(1000), CPU)
    means = torch.stack([drawn[k::4].mean(0) for k in range(4)])
    assert torch.allclose(means, mixture.mode_centres(CPU), atol=0.05)
    quantiles = LatentPrior("uniform", 2).quantile(torch.tensor([0.0, 0.5, 1.0]))  # (P, dim): each coordinate's
    assert torch.allclose(quantiles, torch.tensor([[-1.0, -1], [0, 0], [1, 1]]))


def test_aae_supervised_needs_a_region_per_class(compose_cfg) -> None:
    with pytest.raises(UserError, match="model.supervised"):
        _build(compose_cfg, "model=aae", "model.supervised=true", "model.prior=gaussian")
    _, data, net = _build(compose_cfg, "model=aae", "latent_dim=2", "model.supervised=true", "model.prior=mixture")
    assert net.discriminator[0].in_features == 2 + data.num_classes
    assert net.sample(8, torch.arange(8) % 4).shape == (8, *data.shape)


def test_semi_supervised_aae_uses_a_fixed_fraction_of_labels_and_reports_accuracy(compose_cfg) -> None:
    fractions = hash_fraction(torch.arange(100000))
    assert abs((fractions < 0.1).float().mean().item() - 0.1) < 0.005
    _, data, net = _build(compose_cfg, "model=aae", "model.semi_supervised_fraction=0.25", "model.disentangle=true")
    batch = data.train.head(256)
    net.train()
    known = net.labelled(batch)
    assert torch.equal(known, net.labelled(Batch(batch.x, batch.y, batch.index)))  # the same examples each time
    assert 0.15 < known.float().mean() < 0.35 and net.eval().labelled(batch).all()
    terms = net.train().losses(batch, 1)
    assert {"recon", "label", "adv_gen", "adv_gen_label", "style_confusion", "adv_disc", "adv_disc_label",
            "style_adversary"} <= set(terms)
    assert all(torch.isfinite(t) for t in terms.values())
    assert 0 <= net.eval().diagnostics(data.val.head(64)).scalars["accuracy"] <= 1


# ---- pca ------------------------------------------------------------------------------------------
def test_pca_is_the_best_linear_reconstruction(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, "model=pca", "latent_dim=5", "model.likelihood=gaussian")
    net.fit_closed_form(data.train)
    x = data.train.x.float().div(255).flatten(1)  # (N, d)
    centred = x - x.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    ours = net.reconstruct(data.train.head(len(data.train)).x).flatten(1)
    best = centred @ v[:5].T @ v[:5] + x.mean(0)
    assert torch.allclose(ours, best, atol=1e-3)
    assert net.phases() == [] and not list(net.parameters())


def test_pca_variance_picks_the_number_of_components(compose_cfg, tmp_path) -> None:
    from aelab.commands import train
    from aelab.engine.loading import load_trained

    overrides = ["model=pca", "model.variance=0.9", "epochs=1"]
    metrics = train.run(compose_cfg([*TINY, *overrides]), tmp_path, overrides)
    assert math.isfinite(metrics["val/recon"]) and metrics["steps"] == 0
    model = load_trained(tmp_path).model  # rebuilt from the config, then sized by the stored fit
    shares = model.explained
    assert shares.sum() >= 0.9 and shares[:-1].sum() < 0.9
    assert model.latent_dim == len(shares) == model.encode(torch.rand(2, 1, 16, 16)).shape[1]

    from aelab.commands import eval as eval_command
    from aelab.commands import interpolate, sample

    run = [f"run={tmp_path}", "device=cpu"]
    cheap = ["iw_samples=0", "noise=[]", "probe.max_train=0", "generation.samples=0", "tensorboard=false"]
    assert eval_command.run(compose_cfg([*run, *cheap], config_name="eval"))["test/recon"] > 0
    assert interpolate.run(compose_cfg([*run, "steps=4", "tensorboard=false"], config_name="interpolate"))["steps"] == 4
    # no prior: sample draws from a Gaussian fitted to the training codes, and says so
    assert "fitted" in sample.run(compose_cfg(run, config_name="sample"))["source"]


def test_pca_latent_dim_cannot_exceed_the_input_size(compose_cfg) -> None:
    with pytest.raises(UserError, match="latent_dim: pca keeps at most 256 components"):
        _build(compose_cfg, "model=pca", "latent_dim=300")
