"""Autoregressive flows: MADE's masks, the IAF posterior's exact log-determinant and density (vae_iaf), and its
use by eval's ELBO and importance-sampled NLL."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.metrics.likelihood import importance_sampled_nll
from aelab.models.iwae import log_normal
from aelab.models.vae import gaussian_kl
from aelab.nets.made import MADE
from conftest import TINY

CPU = torch.device("cpu")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hidden", [[], [7], [9, 11]])
def test_made_output_i_depends_only_on_the_inputs_before_i(hidden: list[int], reverse: bool) -> None:
    torch.manual_seed(0)
    d = 5
    made = MADE(d, hidden, heads=2, context_dim=3, reverse=reverse).double()
    x, context = torch.randn(d, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    for head in range(2):
        jac = jacobian(lambda v: made(v[None], context[None])[head][0], x)  # (D out, D in)
        order = torch.arange(d).flip(0) if reverse else torch.arange(d)  # order[k]: the k-th coordinate
        permuted = jac[order][:, order]  # rows and columns in the autoregressive order
        assert torch.all(permuted.triu() == 0), permuted  # strictly lower triangular: no output sees itself or later
        if hidden:  # with hidden units every allowed connection exists (the masks are not over-strict)
            assert torch.all(permuted.tril(-1)[torch.ones(d, d).tril(-1).bool()] != 0)
    # the context reaches every output
    jac_c = jacobian(lambda c: made(x[None], c[None])[0][0], context)
    assert torch.all(jac_c.abs().sum(1) > 0)


def test_made_of_one_dimension_reads_only_its_context() -> None:
    made = MADE(1, [4], heads=2, context_dim=2).double()
    x = torch.randn(6, 1, dtype=torch.float64)
    context = torch.randn(6, 2, dtype=torch.float64)
    a = made(x, context)[0]
    b = made(torch.randn(6, 1, dtype=torch.float64), context)[0]
    assert torch.equal(a, b) and a.std() > 0


def _iaf(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, "model=vae_iaf", *overrides])
    data = build_data(cfg.data, CPU)
    torch.manual_seed(0)
    return data, build_model(cfg, data.shape, data.num_classes).double().eval()


@pytest.mark.parametrize("context", [0, 3])
def test_iaf_log_determinant_is_exact(compose_cfg, context: int) -> None:
    """sum log g against log|det J| of the whole flow (autograd's Jacobian), latent 4, 2 flows, float64."""
    data, model = _iaf(compose_cfg, "latent_dim=4", "model.flows=2", f"model.context_dim={context}",
                       "model.made_hidden=[16]")
    for made in model.flows:  # gates far from 0.73 everywhere: a Jacobian that is not near the identity
        for p in made.parameters():
            p.data.normal_(0, 0.7)
    x = data.train.head(3).x.double()
    mu, logvar, h = model.encoded(x)
    z0 = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    for i in range(3):
        hi = None if h is None else h[i]
        _, logdet = model.flow(z0[i], hi)
        jac = jacobian(lambda z: model.flow(z, hi)[0], z0[i])  # (4, 4)
        exact = torch.linalg.slogdet(jac)[1]
        assert abs(float(logdet.detach()) - float(exact)) < 1e-5, (float(logdet.detach()), float(exact))
        assert abs(float(exact)) > 0.1  # the flow really changes the volume
        assert not torch.allclose(jac, jac.tril()) and not torch.allclose(jac, jac.triu())  # two orders compose


def test_iaf_posterior_density_integrates_to_one(compose_cfg) -> None:
    """q(z_T|x) of a 1-D flow is a density: its integral over a fine grid (the flow is monotone in 1-D) is 1."""
    data, model = _iaf(compose_cfg, "latent_dim=1", "model.flows=3", "model.context_dim=2")
    x = data.train.head(1).x.double()
    with torch.no_grad():
        mu, logvar, h = model.encoded(x)
        z0 = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None] * (0.5 * logvar).exp() + mu  # (G, 1)
        z, logdet = model.flow(z0, h)
    density = (log_normal(z0, mu, logvar) - logdet).exp()  # q(z_T) at the grid's images
    mass = torch.trapezoid(density, z[:, 0])
    assert torch.all(z[1:, 0] > z[:-1, 0]) and abs(float(mass) - 1) < 1e-4, float(mass)


def test_without_flows_the_kl_is_the_diagonal_vaes(compose_cfg) -> None:
    """flows=0: the one-draw KL term averages to the analytic KL of N(mu, sigma) to N(0, I) (known answer)."""
    data, model = _iaf(compose_cfg, "model.flows=0", "model.context_dim=0")
    x = data.train.head(8).x.double()
    mu, logvar = model.posterior(x)
    torch.manual_seed(1)
    _, log_ratio = model.draw(x, s=20000)  # (s, B)
    analytic = gaussian_kl(mu, logvar).sum(1)  # (B,)
    assert torch.allclose(-log_ratio.mean(0), analytic, atol=0.05), (-log_ratio.mean(0), analytic)


def test_eval_weighs_the_flow_posterior(compose_cfg) -> None:
    """ELBO <= IS-NLL bound chain on the flow's own density: IS-NLL (k = 500) <= -ELBO, and the ELBO's KL is the
    flow's (not the base Gaussian's analytic KL)."""
    data, model = _iaf(compose_cfg, "model.flows=2")
    model = model.float()
    x = data.val.head(16).x
    torch.manual_seed(0)
    with torch.no_grad():  # as eval calls it (metrics.posterior.neg_elbo)
        recon, kl = model.elbo_terms(x, samples=200)
        mu, logvar = model.posterior(x)
    nll = importance_sampled_nll(model, x, k=500)
    assert float(nll.mean()) < float((recon + kl).mean())
    assert not torch.allclose(kl, gaussian_kl(mu, logvar).sum(1), atol=0.05)
    assert math.isfinite(float(nll.mean()))


# ---- the masked autoregressive flow prior (aelab fit-prior prior=maf) -----------------------------------------
def _maf(dim: int = 3):
    from aelab.models.maf_prior import MAFPrior

    torch.manual_seed(0)
    maf = MAFPrior(dim, layers=3, hidden=[16], shift=torch.tensor([0.5, -1.0, 2.0][:dim]),
                   scale=torch.tensor([2.0, 0.5, 1.0][:dim]))
    for p in maf.mades.parameters():  # conditionals far from the identity
        p.data.normal_(0, 0.3)
    return maf.double().eval()


def test_maf_sampling_inverts_its_density_pass() -> None:
    """sample(n, g) maps base noise u to x; scoring x recovers log N(u) - log|det dx/du| exactly."""
    maf = _maf()
    x = maf.sample(64, torch.Generator().manual_seed(3))
    u = torch.randn(64, 3, generator=torch.Generator().manual_seed(3)).double()
    jac = torch.stack([jacobian(lambda v: _forward(maf, v[None])[0], xi) for xi in x[:4]])  # (4, 3, 3) du/dx
    expected = -0.5 * (u[:4].pow(2).sum(-1) + 3 * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1]
    assert x.std(0).min() > 0.3 and torch.allclose(_forward(maf, x), u, atol=1e-10)  # the inverse is exact
    assert torch.allclose(maf.log_prob(x[:4]), expected, atol=1e-10)  # change of variables with autograd's Jacobian


def _forward(maf, x: torch.Tensor) -> torch.Tensor:  # x (N, D) -> the base noise u (N, D)
    u = (x - maf.shift) / maf.scale
    for made in maf.mades:
        mu, alpha = maf._conditionals(made, u)
        u = (u - mu) * (-alpha).exp()
    return u


def test_maf_density_integrates_to_one() -> None:
    maf = _maf(2)
    side = torch.linspace(-12, 12, 481)
    grid = torch.cartesian_prod(side, side)  # (G^2, 2)
    density = maf.log_prob(grid.double()).exp().view(481, 481)
    mass = torch.trapezoid(torch.trapezoid(density, side.double()), side.double())
    assert abs(float(mass) - 1) < 2e-3, float(mass)


def test_fit_prior_fits_the_codes_the_decoder_saw(compose_cfg) -> None:
    """training_codes of a vae_iaf run are flow draws z_T (the same noise pushed through the flow), not q(z_0|x)'s."""
    from aelab.models.fitted_prior import training_codes

    data, model = _iaf(compose_cfg, "model.flows=2")
    model = model.float()
    codes = training_codes(model, data.train, limit=32, seed=4)
    batch = data.train.head(32)
    with torch.no_grad():
        mu, logvar, h = model.encoded(batch.x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(4))
        z0 = mu + eps * (0.5 * logvar).exp()
        z = model.flow(z0, h)[0]
    assert torch.allclose(codes, z, atol=1e-5) and not torch.allclose(codes, z0, atol=1e-2)
