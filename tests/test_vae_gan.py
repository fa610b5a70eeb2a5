"""VAE-GAN (aelab/models/vae_gan.py): the paper's feature-matching term, the authors' equilibrium gating, each phase's
parameters, and the trainer's rule that a phase whose loss returns no terms takes no step."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.models.vae_gan import equilibrium_gate, feature_matching
from aelab.viz.logger import NullLogger


def _build(compose_cfg, *extra: str):
    cfg = compose_cfg([*TINY, "model=vae_gan", "arch=mlp", *extra])
    torch.manual_seed(0)
    data = build_data(cfg.data, torch.device("cpu"))
    return cfg, data, build_model(cfg, data.shape, data.num_classes)


def test_feature_recon_is_the_gaussian_nll_of_dis_l_features_by_hand(compose_cfg) -> None:
    """L_llike = -log N(Dis_l(x) | Dis_l(x~), I) up to its constant, on a fixed discriminator, computed by hand:
    the feature net's outputs standardised per feature over the judged batch (real and fakes together)."""
    _, data, net = _build(compose_cfg)
    net.eval()
    x = data.train.head(8).x
    x_tilde = torch.rand_like(x)
    with torch.no_grad():
        (real, fake), _ = net.judge(x, x_tilde)
        raw = net.discriminator.features(torch.cat([x, x_tilde]))
        h = (raw - raw.mean(0)) / torch.sqrt(raw.var(0, unbiased=False) + 1e-5)
        nll = -torch.distributions.Normal(h[8:], 1.0).log_prob(h[:8]).sum(1).mean()
        constant = 0.5 * h.shape[1] * torch.log(torch.tensor(2 * torch.pi))
        assert torch.allclose(feature_matching(real, fake), nll - constant, rtol=1e-4)
        assert torch.allclose(feature_matching(real, fake), 0.5 * ((h[:8] - h[8:]) ** 2).sum() / 8, rtol=1e-4)


@pytest.mark.parametrize("real, fake, expected", [
    (0.69, 0.69, (True, True)),    # even: both play
    (0.20, 0.69, (True, False)),   # D far ahead on real examples: it rests
    (0.69, 0.20, (True, False)),   # ... or on fakes
    (1.20, 0.69, (False, True)),   # D far behind: the decoder rests
    (0.20, 1.20, (True, True)),    # both would rest: both play (the authors' rule)
])
def test_equilibrium_gate_is_the_authors_rule(real: float, fake: float, expected) -> None:
    assert equilibrium_gate(real, fake, equilibrium=0.68, margin=0.35) == expected
    assert equilibrium_gate(real, fake, equilibrium=0.68, margin=None) == (True, True)


def test_each_phase_moves_only_its_own_parameters(compose_cfg) -> None:
    """The three phases own disjoint parameters covering the model; the encoder's and decoder's losses reach all of
    theirs; what the paper detaches stays detached: the decoder's loss takes the codes as inputs (no gradient to
    the encoder), the discriminator's takes the fakes as inputs (gradients to nothing but the discriminator)."""
    _, data, net = _build(compose_cfg)
    batch = data.train.head(32)
    phases = {p.name: p for p in net.phases()}
    owned = {name: {id(q) for q in p.parameters} for name, p in phases.items()}
    assert sum(len(o) for o in owned.values()) == len({id(q) for q in net.parameters()}) == len(set().union(*owned.values()))
    reached = {}
    for name, phase in phases.items():
        net.zero_grad(set_to_none=True)
        sum(phase.loss(batch, 1).values()).backward()
        reached[name] = {id(q) for q in net.parameters() if q.grad is not None and q.grad.abs().sum() > 0}
    assert owned["encoder"] <= reached["encoder"] and owned["decoder"] <= reached["decoder"]
    assert not reached["decoder"] & owned["encoder"]
    assert reached["discriminator"] <= owned["discriminator"] and reached["discriminator"]
    head = {id(q) for q in net.discriminator.head.parameters()}
    assert head <= reached["discriminator"] and not head & reached["encoder"]  # L_llike never trains the judge's head


def test_a_phase_whose_loss_returns_no_terms_takes_no_step(compose_cfg, tmp_path) -> None:
    """The trainer skips a phase whose loss returns {} (no backward, no optimiser step); here the gating rests the
    discriminator (its cross-entropies are all below equilibrium - margin), so it alone stays put."""
    cfg, data, net = _build(compose_cfg, "model.equilibrium=100", "model.margin=0")
    trainer = Trainer(net, data, cfg.trainer, device=torch.device("cpu"), logger=NullLogger(), run_dir=tmp_path, seed=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    logged = trainer.train_step(data.train.head(32))
    assert "adv_disc" not in logged and {"kl", "feature_recon", "adv_gen"} <= set(logged)
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("discriminator."), n
    assert not trainer.optimizers[2].state  # no step was ever taken: Adam holds no moments
