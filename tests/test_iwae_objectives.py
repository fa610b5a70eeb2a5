"""Rainforth et al.'s (2018) objectives on the IWAE family: MIWAE, CIWAE and PIWAE reduce to the ELBO at one draw,
order as Jensen says, give PIWAE's two networks their own bounds' gradients, and PIWAE's encoder gradient keeps
the signal-to-noise ratio that IWAE's loses at k = 64 (the paper's figure 1)."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.errors import UserError
from aelab.schema import check_target
from aelab.models.iwae import OBJECTIVES, ciwae_bound, iwae_bound, log_normal, miwae_bound
from conftest import TINY, build_tiny

CPU = torch.device("cpu")
PROVIDED = ("arch", "input_shape", "num_classes")


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(compose_cfg, *overrides: str, seed: int = 0):
    _, data, model = build_tiny(compose_cfg, *overrides, seed=seed)
    return data, model


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_at_one_draw_is_the_vae_elbo(compose_cfg, objective: str) -> None:
    data, vae = _build(compose_cfg, "model=vae")
    _, net = _build(compose_cfg, "model=iwae", "model.k=1", f"model.objective={objective}")
    net.load_state_dict(vae.state_dict())
    batch = data.train.head(32)
    torch.manual_seed(3)
    expected = {k: v.item() for k, v in vae.losses(batch, 1).items()}
    torch.manual_seed(3)
    assert {k: v.item() for k, v in net.losses(batch, 1).items()} == expected  # k = m = 1: the VAE's own loss

    # the bounds themselves on one draw: the one-draw ELBO (KL estimated on that draw), from the same noise
    x = batch.x
    mu, logvar = vae.posterior(x)
    torch.manual_seed(4)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    elbo = -(vae.likelihood.nll(vae.decode(z), x) + log_normal(z, mu, logvar) - log_normal(z, 0 * z, 0 * z))
    torch.manual_seed(4)
    if objective == "piwae":
        terms = net.piwae_terms(x, x, None)
        assert torch.allclose(-terms["iw_nll"], elbo.mean(), atol=1e-4)
        assert torch.allclose(-terms["miwae_nll"], elbo.mean(), atol=1e-4)
        return
    log_w = net.log_weights(x, x, None, 1)  # (1, B)
    bound = {"iwae": iwae_bound(log_w), "miwae": miwae_bound(log_w, 1), "ciwae": ciwae_bound(log_w, 0.3)}[objective]
    assert torch.allclose(bound, elbo, atol=1e-4)


def test_the_bounds_on_known_weights_and_their_order() -> None:
    w = torch.tensor([[1.0], [3.0], [2.0], [6.0]])  # four draws of one example, weights w_i = p(x, z_i) / q(z_i|x)
    log_w = w.log()
    assert iwae_bound(log_w).item() == pytest.approx(math.log(3.0))  # log mean w
    assert miwae_bound(log_w, 2).item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2)  # groups (1,3), (2,6)
    assert ciwae_bound(log_w, 0.25).item() == pytest.approx(0.25 * math.log(36.0) / 4 + 0.75 * math.log(3.0))
    # Jensen on the same draws: ELBO <= MIWAE(m, k) <= IWAE(m * k), for any weights
    log_w = torch.randn(64, 100, generator=torch.Generator().manual_seed(0)) * 3
    elbo, miwae, iwae = log_w.mean(0), miwae_bound(log_w, 8), iwae_bound(log_w)
    assert (elbo <= miwae + 1e-6).all() and (miwae <= iwae + 1e-6).all() and (iwae - elbo).min() > 0.5
    assert torch.allclose(ciwae_bound(log_w, 1.0), elbo) and torch.allclose(ciwae_bound(log_w, 0.0), iwae)


def _grads(net, batch, seed: int) -> tuple[torch.Tensor, torch.Tensor]:  # the encoder's and the decoder's, flat
    net.zero_grad()
    torch.manual_seed(seed)
    sum(net.losses(batch, 0).values()).backward()
    flat = [torch.cat([p.grad.flatten() for p in part.parameters()]) for part in (net.encoder, net.decoder)]
    return flat[0], flat[1]


def test_piwae_gives_each_network_its_own_bound(compose_cfg) -> None:
    """One backward of PIWAE's terms: the decoder's gradient is IWAE(64)'s, the encoder's MIWAE(8, 8)'s (same draws)."""
    data, net = _build(compose_cfg, "model=iwae", "model.objective=piwae", "model.m=8", "model.k=8")
    batch = data.train.head(16)
    terms = net.losses(batch, 0)
    assert set(terms) == {"iw_nll", "miwae_nll"} and terms["iw_nll"] < terms["miwae_nll"]  # the tighter bound
    assert net.monitor == "iw_nll"  # best.pt by the decoder's bound, not the sum of two bounds
    enc, dec = _grads(net, batch, seed=5)
    net.objective, net.k, net.m = "iwae", 64, 1
    iwae_enc, iwae_dec = _grads(net, batch, seed=5)
    net.objective, net.k, net.m = "miwae", 8, 8
    miwae_enc, miwae_dec = _grads(net, batch, seed=5)
    assert torch.allclose(dec, iwae_dec, rtol=1e-4, atol=1e-6) and torch.allclose(enc, miwae_enc, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(enc, iwae_enc, rtol=1e-2) and not torch.allclose(dec, miwae_dec, rtol=1e-2)


def encoder_snr(net, batch, draws: int, seed: int = 1) -> float:
    """Rainforth et al.'s SNR, |E g| / std g of each encoder gradient coordinate over draws, averaged over the
    coordinates that move (dead ReLU units have none)."""
    torch.manual_seed(seed)
    grads = torch.stack([_grads(net, batch, seed + i)[0] for i in range(draws)])  # (draws, P)
    mean, std = grads.mean(0), grads.std(0)
    live = std > 0
    return float((mean[live].abs() / std[live]).mean())


def test_piwae_encoder_snr_beats_iwae_at_64_draws(compose_cfg) -> None:
    """A tiny IWAE trained 150 steps, 16 fixed examples, 60 gradient draws each. Measured (1 thread), mean encoder
    SNR IWAE(64) against PIWAE(8, 8): 0.47 / 1.34 (initial seed 0), 0.23 / 0.65 (seed 1), 0.18 / 0.60 (seed 2)."""
    data, net = _build(compose_cfg, "model=iwae", "arch.hidden=[32]")
    train = data.train.head(64)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for step in range(150):
        optimizer.zero_grad()
        sum(net.losses(train, step).values()).backward()
        optimizer.step()
    batch = data.train.head(16)
    snr = {}
    for name, objective, k, m in [("iwae64", "iwae", 64, 1), ("piwae8x8", "piwae", 8, 8)]:
        net.objective, net.k, net.m = objective, k, m
        snr[name] = encoder_snr(net, batch, draws=60)
    assert snr["piwae8x8"] > 2 * snr["iwae64"], snr


def test_m_and_objective_mistakes_are_one_line(compose_cfg) -> None:
    def check(*overrides: str) -> None:
        check_target(compose_cfg([*TINY, "model=iwae", *overrides]).model, "model", provided=PROVIDED)

    for objective in ("iwae", "ciwae"):
        with pytest.raises(UserError, match="model.m: objective=.* draws one group"):
            check(f"model.objective={objective}", "model.m=4")
    with pytest.raises(UserError, match="model.objective: .*one of: iwae, miwae, ciwae, piwae"):
        check("model.objective=tiwae")
    with pytest.raises(UserError, match="model.ciwae_beta"):
        check("model.objective=ciwae", "model.ciwae_beta=1.5")
    check("model.objective=miwae", "model.m=4")  # read there: accepted
