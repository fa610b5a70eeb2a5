"""Gumbel-softmax codes (aelab/models/gumbel.py) and the families on them, cat_vae and joint_vae: relaxed draws
becoming one-hot as tau falls, the Gumbel-max draw's law, straight-through, the KL to the uniform prior (closed form
and Monte Carlo), the temperature schedule, the code layouts and their refusals, JointVAE's capacities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.errors import UserError
from aelab.models.gumbel import categorical_kl_uniform, gumbel_softmax, temperature, uniform_one_hot
from aelab.models.vae import gaussian_kl
from conftest import TINY, load_script

CPU = torch.device("cpu")


def _build(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, *overrides])
    data = build_data(cfg.data, CPU)
    torch.manual_seed(0)
    return data, build_model(cfg, data.shape, data.num_classes)


# ---- the relaxation -------------------------------------------------------------------------------
def test_relaxed_draws_become_one_hot_as_the_temperature_falls() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4000, 10)
    mean_max = {tau: float(gumbel_softmax(logits, tau).amax(-1).mean()) for tau in (5.0, 1.0, 0.5, 0.1, 0.01)}
    values = list(mean_max.values())
    assert all(a < b for a, b in zip(values, values[1:])), mean_max  # max prob rises as tau falls
    assert mean_max[5.0] < 0.35 and mean_max[0.01] > 0.99, mean_max  # measured: 0.168, 0.518, 0.727, 0.945, 0.9955
    draws = gumbel_softmax(logits, 0.5)
    assert torch.allclose(draws.sum(-1), torch.ones(4000)) and (draws >= 0).all()  # on the simplex at every tau


def test_the_argmax_of_a_relaxed_draw_is_a_draw_of_the_categorical() -> None:
    torch.manual_seed(1)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 200_000
    drawn = gumbel_softmax(p.log().expand(n, 4), 1.0).argmax(-1)  # Gumbel-max: argmax(log p + g) ~ Cat(p), any tau
    freq = torch.bincount(drawn, minlength=4).float() / n
    assert torch.allclose(freq, p, atol=4 * math.sqrt(0.25 / n)), freq


def test_hard_draws_are_one_hot_with_the_relaxed_gradient() -> None:
    torch.manual_seed(2)
    logits = torch.randn(64, 5, requires_grad=True)
    weights = torch.randn(5)
    torch.manual_seed(3)
    hard = gumbel_softmax(logits, 0.7, hard=True)
    one_hot = torch.zeros(64, 5).scatter_(1, hard.argmax(-1, keepdim=True), 1.0)
    assert torch.allclose(hard.detach(), one_hot, atol=1e-6)  # one-hot up to float rounding of soft - soft
    (hard * weights).sum().backward()
    hard_grad = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(3)  # the same Gumbel noise: straight-through passes the soft draw's gradient
    soft = gumbel_softmax(logits, 0.7)
    assert torch.equal(soft.argmax(-1), hard.argmax(-1))
    (soft * weights).sum().backward()
    assert torch.allclose(hard_grad, logits.grad, atol=1e-6) and hard_grad.abs().sum() > 0


def test_the_kl_to_the_uniform_prior_is_the_closed_form_and_the_monte_carlo_estimate() -> None:
    p = torch.tensor([0.5, 0.25, 0.25])
    closed = 0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25) + math.log(3)  # sum p log p + log K = 0.0589 nats
    assert float(categorical_kl_uniform(p.log())) == pytest.approx(closed, abs=1e-6)
    assert float(categorical_kl_uniform(torch.zeros(7))) == pytest.approx(0.0, abs=1e-6)  # q = prior
    assert float(categorical_kl_uniform(torch.tensor([60.0, 0.0, 0.0, 0.0]))) == pytest.approx(math.log(4), abs=1e-6)
    torch.manual_seed(4)
    logits = torch.randn(6) * 2
    q = logits.softmax(0)
    c = torch.multinomial(q, 400_000, replacement=True)
    monte_carlo = float((q.log()[c] - math.log(1 / 6)).mean())  # E_q[log q(c) - log p(c)]
    assert float(categorical_kl_uniform(logits)) == pytest.approx(monte_carlo, abs=0.01)


def test_the_temperature_schedule() -> None:
    assert temperature(0, 1.0, 3e-5, 0.5) == 1.0
    assert temperature(int(round(math.log(2) / 1e-4)), 1.0, 1e-4, 0.1) == pytest.approx(0.5, rel=1e-4)  # half-life
    assert temperature(10_000, 2.0, 1e-4, 0.1) == pytest.approx(2.0 * math.exp(-1.0))
    assert temperature(10**7, 1.0, 3e-5, 0.5) == 0.5  # floored at the minimum
    assert temperature(10**7, 0.67, 0.0, 0.67) == 0.67  # rate 0: JointVAE's fixed tau


def test_uniform_prior_draws_one_category_per_variable_uniformly() -> None:
    torch.manual_seed(5)
    z = uniform_one_hot(30_000, [3, 2], CPU)
    assert z.shape == (30_000, 5) and torch.equal(z[:, :3].sum(1), torch.ones(30_000))
    assert torch.allclose(z[:, :3].mean(0), torch.full((3,), 1 / 3), atol=0.015)
    assert torch.allclose(z[:, 3:].mean(0), torch.full((2,), 1 / 2), atol=0.015)


# ---- cat_vae ------------------------------------------------------------------------------------
def test_cat_vae_code_is_one_hot_per_variable_and_its_size_agrees(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=cat_vae", "latent_dim=12", "model.categories=3")
    assert net.categorical_dims == 4 and net.sizes == [3, 3, 3, 3]
    z = net.encode(data.train.head(8).x).view(8, 4, 3)
    assert set(z.unique().tolist()) == {0.0, 1.0} and torch.equal(z.sum(-1), torch.ones(8, 4))
    assert net.sample(5).shape == (5, *data.shape)
    with pytest.raises(UserError) as error:  # 10 is not a multiple of 3
        _build(compose_cfg, "model=cat_vae", "latent_dim=10", "model.categories=3")
    assert error.value.key == "latent_dim" and "model.categories=3" in error.value.line()
    _, net = _build(compose_cfg, "model=cat_vae", "latent_dim=7")  # both null: one 7-way variable
    assert (net.categorical_dims, net.categories) == (1, 7)
    _, net = _build(compose_cfg, "model=cat_vae", "latent_dim=12", "model.categorical_dims=2")
    assert (net.categorical_dims, net.categories) == (2, 6)
    with pytest.raises(UserError) as error:
        _build(compose_cfg, "model=cat_vae", "latent_dim=12", "model.categories=3", "model.categorical_dims=5")
    line = error.value.line()
    assert error.value.key == "latent_dim" and "model.categorical_dims=5" in line and "latent_dim=15" in line
    assert len(line.splitlines()) == 1


def test_cat_vae_loss_is_the_reconstruction_and_the_closed_form_kl(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=cat_vae", "latent_dim=8", "model.categories=4")
    batch = data.train.head(32)
    terms = net.losses(batch, 0)
    assert set(terms) == {"recon", "kl"}
    logits = net.posterior_parts(batch.x)[2]
    expected = sum(categorical_kl_uniform(l).mean() for l in logits)
    assert float(terms["kl"]) == pytest.approx(float(expected), rel=1e-5)


def test_the_temperature_follows_the_training_step(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=cat_vae", "model.anneal_rate=1e-3", "model.min_temperature=0.1")
    net.train()
    net.losses(data.train.head(16), 500)
    assert net.diagnostics(data.val.head(32)).scalars["temperature"] == pytest.approx(math.exp(-0.5))
    net.eval()
    net.losses(data.val.head(16), 9000)  # validation does not move the schedule
    assert int(net.last_step) == 500


# ---- joint_vae ----------------------------------------------------------------------------------
def test_joint_vae_code_is_the_means_then_the_one_hot(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=joint_vae", "latent_dim=9", "model.discrete=[3]")
    assert net.continuous == 6 and net.sizes == [3]
    x = data.train.head(8).x
    z = net.encode(x)
    mu, _, logits = net.posterior_parts(x)
    assert z.shape == (8, 9) and torch.equal(z[:, :6], mu)
    assert torch.equal(z[:, 6:].argmax(1), logits[0].argmax(1)) and torch.equal(z[:, 6:].sum(1), torch.ones(8))
    assert net.decode(z).shape == x.shape and net.sample(4).shape == (4, *data.shape)
    with pytest.raises(UserError) as error:
        _build(compose_cfg, "model=joint_vae", "latent_dim=4", "model.discrete=[3,3]")
    assert error.value.key == "latent_dim" and "latent_dim >= 6" in error.value.line()
    with pytest.raises(UserError) as error:
        _build(compose_cfg, "model=joint_vae", "model.discrete=[1]")
    assert error.value.key == "model.discrete"


def test_joint_vae_capacities_rise_linearly_and_the_discrete_one_stops_at_log_k(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=joint_vae", "latent_dim=9", "model.discrete=[3]", "model.gamma=10",
                       "model.continuous_capacity=8", "model.discrete_capacity=5", "model.capacity_steps=1000")
    assert net.capacities(0) == (0.0, 0.0)
    c_z, c_c = net.capacities(100)
    assert c_z == pytest.approx(0.8) and c_c == pytest.approx(0.5)  # C_c = 5 x 0.1 < log 3: still rising
    c_z, c_c = net.capacities(250)  # Dupont's order: ramp to 5 x 0.25 = 1.25, then cap at log 3
    assert c_z == pytest.approx(2.0) and c_c == pytest.approx(math.log(3))
    assert net.capacities(5000) == (pytest.approx(8.0), pytest.approx(math.log(3)))
    batch = data.train.head(32)
    net.eval()
    torch.manual_seed(6)
    terms = net.losses(batch, 250)
    mu, logvar, logits = net.posterior_parts(batch.x)
    kl_z = float(gaussian_kl(mu, logvar).mean(0).sum())
    kl_c = float(categorical_kl_uniform(logits[0]).mean())
    assert float(terms["kl_continuous"]) == pytest.approx(10 * abs(kl_z - 2.0), rel=1e-5)
    assert float(terms["kl_discrete"]) == pytest.approx(10 * abs(kl_c - math.log(3)), rel=1e-5)
    scalars = net.diagnostics(data.val.head(64)).scalars
    assert {"elbo_loss", "capacity_continuous", "capacity_discrete", "temperature", "category_perplexity"} <= set(scalars)
    assert net.monitor == "elbo_loss"


def test_joint_vae_excess_penalty_charges_only_the_kl_above_its_capacity(compose_cfg) -> None:
    data, net = _build(compose_cfg, "model=joint_vae", "latent_dim=9", "model.discrete=[3]", "model.gamma=10",
                       "model.continuous_capacity=8", "model.discrete_capacity=5", "model.capacity_steps=1000",
                       "model.capacity_penalty=excess")
    batch = data.train.head(32)
    net.eval()
    mu, logvar, logits = net.posterior_parts(batch.x)
    kl_z = float(gaussian_kl(mu, logvar).mean(0).sum())
    kl_c = float(categorical_kl_uniform(logits[0]).mean())
    for step in (0, 1000):  # C = 0 (every KL above it) and C_z = 8, C_c = log 3 (both KLs below: free)
        c_z, c_c = net.capacities(step)
        torch.manual_seed(6)
        terms = net.losses(batch, step)
        assert float(terms["kl_continuous"]) == pytest.approx(10 * max(0.0, kl_z - c_z), rel=1e-5, abs=1e-6)
        assert float(terms["kl_discrete"]) == pytest.approx(10 * max(0.0, kl_c - c_c), rel=1e-5, abs=1e-6)
    assert kl_z < 8 and kl_c < math.log(3)  # so at step 1000 both terms were 0: nothing pushes a KL up
    assert float(net.losses(batch, 0)["kl_continuous"]) > 0


def test_joint_vae_ramps_each_capacity_over_its_own_steps(compose_cfg) -> None:
    _, net = _build(compose_cfg, "model=joint_vae", "latent_dim=9", "model.discrete=[3]",
                    "model.continuous_capacity=40", "model.discrete_capacity=1", "model.capacity_steps=1000",
                    "model.discrete_capacity_steps=100")
    assert net.capacities(50) == (pytest.approx(2.0), pytest.approx(0.5))
    assert net.capacities(500) == (pytest.approx(20.0), pytest.approx(1.0))  # C_c full, C_z halfway
    _, net = _build(compose_cfg, "model=joint_vae", "latent_dim=9", "model.discrete=[3]",
                    "model.continuous_capacity=40", "model.discrete_capacity=1", "model.capacity_steps=1000")
    assert net.capacities(500) == (pytest.approx(20.0), pytest.approx(0.5))  # null: C_c shares C_z's steps


def _dupont_reference(cont: int, disc: int) -> torch.nn.Module:
    """Dupont's JointVAE for 64 px images (jointvae/models.py of github.com/Schlumberger/joint-vae), its layers under
    his names: what scripts/joint_vae_shape.py --dupont reads his released dSprites weights from."""
    nn = torch.nn
    ref = nn.Module()
    convs = [(1, 32), (32, 32), (32, 64), (64, 64)]
    ref.img_to_features = nn.Sequential(*[m for a, b in convs for m in (nn.Conv2d(a, b, 4, 2, 1), nn.ReLU())])
    ref.features_to_hidden = nn.Sequential(nn.Linear(1024, 256), nn.ReLU())
    ref.fc_mean, ref.fc_log_var = nn.Linear(256, cont), nn.Linear(256, cont)
    ref.fc_alphas = nn.ModuleList([nn.Linear(256, disc)])
    ref.latent_to_features = nn.Sequential(nn.Linear(cont + disc, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU())
    ref.features_to_img = nn.Sequential(*[m for a, b in [(64, 64), (64, 32), (32, 32)]
                                          for m in (nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU())],
                                        nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())
    return ref


def test_duponts_released_weights_load_into_joint_vae_on_burgess_conv(compose_cfg) -> None:
    script = load_script("joint_vae_shape")
    data, net = _build(compose_cfg, "model=joint_vae", "arch=burgess_conv", "data.source.size=64",
                       "data.source.n=64", "latent_dim=9", "model.discrete=[3]")
    torch.manual_seed(7)
    ref = _dupont_reference(6, 3).eval()
    missing, unexpected = net.load_state_dict(script.from_dupont(ref.state_dict()), strict=False)
    assert missing == ["last_step"] and not unexpected
    net.eval()
    x = data.train.head(16).x
    with torch.no_grad():
        hidden = ref.features_to_hidden(ref.img_to_features(x).flatten(1))
        mu, logvar, logits = net.posterior_parts(x)
        assert torch.allclose(mu, ref.fc_mean(hidden), atol=1e-5)
        assert torch.allclose(logvar, ref.fc_log_var(hidden), atol=1e-5)
        assert torch.allclose(logits[0], ref.fc_alphas[0](hidden), atol=1e-5)
        z = net.encode(x)
        image = ref.features_to_img(ref.latent_to_features(z).view(-1, 64, 4, 4))
        assert torch.allclose(net.likelihood.mean(net.decode(z)), image, atol=1e-5)


@pytest.mark.parametrize("discrete_holds_shape", [True, False])
def test_the_shape_check_reads_which_code_holds_the_shape(compose_cfg, monkeypatch, discrete_holds_shape) -> None:
    """scripts/joint_vae_shape.py's measurement on designed codes: where the 3-way category is the shape it holds all
    of H(shape) and wins; where a continuous dim is the shape and the category is the posX half, it loses, and its
    per-factor MI names posX as what it took instead."""
    import aelab.metrics.disentanglement as metrics

    script = load_script("joint_vae_shape")
    data, model = _build(compose_cfg, "data=dsprites", "data.size=32", "data.subsample=600", "model=joint_vae",
                         "latent_dim=5", "model.discrete=[3]")
    names = list(data.factors.names)
    shape_col, posx_col = names.index("shape"), names.index("posX")

    def designed_codes(encode, source, factors):  # (N, 2 continuous + 3 one-hot)
        rng = np.random.default_rng(1)
        shape, posx = factors[:, shape_col], factors[:, posx_col]
        category = shape if discrete_holds_shape else (posx >= 16).astype(int)
        first = rng.normal(size=len(factors)) if discrete_holds_shape else shape + 0.1 * rng.normal(size=len(factors))
        return np.concatenate([np.stack([first, rng.normal(size=len(factors))], 1), np.eye(3)[category]], 1)

    monkeypatch.setattr(metrics, "encode_factors", designed_codes)
    out = script.score(model, data, label="designed")
    h_shape = math.log(3)
    if discrete_holds_shape:
        assert out["mi_shape_discrete"] == pytest.approx(h_shape, abs=0.01)  # the plug-in MI of a 10,000-point sample
        assert out["discrete_by_factor"]["shape"] == pytest.approx(1.0, abs=0.01)
        assert max(out["mi_shape_continuous"]) < 0.01 and out["discrete_wins"]
    else:
        assert out["mi_shape_discrete"] < 0.01 and out["mi_shape_continuous"][0] == pytest.approx(h_shape, abs=0.01)
        assert out["discrete_by_factor"]["posX"] == pytest.approx(math.log(2) / math.log(32), abs=0.01)
        assert not out["discrete_wins"]
    assert out["category_by_shape"] and math.isfinite(out["recon_nats"])
