"""VAE-GAN (aelab/models/vae_gan.py): Dis_l is the activation feature_layer picks, the paper's feature-matching
term on it, each phase's parameters, and what a few steps of the game do."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.vae_gan import feature_matching
from aelab.viz.logger import NullLogger
from conftest import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
CONV = ["model=vae_gan", "arch=conv", "arch.channels=[8,16]"]


@pytest.mark.parametrize("layer, blocks", [(-1, 2), (0, 1), (1, 2), (-2, 1)])
def test_dis_l_is_the_output_of_the_chosen_activation(compose_cfg, layer: int, blocks: int) -> None:
    """On arch=conv the activations are the conv blocks' LeakyReLUs: layer 0 (= -2) is the first block's feature
    map, -1 (= 1) the last's, computed here by running the discriminator's blocks by hand."""
    _, data, net = build_tiny(compose_cfg, *CONV, f"model.feature_layer={layer}")
    x = data.train.head(8).x
    with torch.no_grad():
        features, logits = net.discriminator(x)
        by_hand = x
        for block in list(net.discriminator.net.features)[:blocks]:
            by_hand = block(by_hand)
    assert torch.equal(features, by_hand.flatten(1)) and logits.shape == (8,)
    assert features.shape[1] == (8 * 8 * 8 if blocks == 1 else 16 * 4 * 4)


def test_feature_recon_is_the_gaussian_nll_of_dis_l_features(compose_cfg) -> None:
    """L_llike = -log N(Dis_l(x) | Dis_l(x~), I) up to its constant, on the features the judge returns."""
    _, data, net = build_tiny(compose_cfg, *CONV)
    x = data.train.head(8).x
    with torch.no_grad():
        (real, fake), _ = net.judge(x, torch.rand_like(x))
        nll = -torch.distributions.Normal(fake, 1.0).log_prob(real).sum(1).mean()
        constant = 0.5 * real.shape[1] * math.log(2 * math.pi)
    assert torch.allclose(feature_matching(real, fake), nll - constant, rtol=1e-4)


@pytest.mark.parametrize("layer", [2, -3, 7])
def test_a_feature_layer_the_discriminator_lacks_is_refused_in_one_line(compose_cfg, layer: int) -> None:
    with pytest.raises(UserError, match=r"model.feature_layer.*2 hidden activations") as caught:
        build_tiny(compose_cfg, *CONV, f"model.feature_layer={layer}")
    assert "\n" not in str(caught.value)


def test_each_phase_moves_only_its_own_parameters(compose_cfg) -> None:
    """The three phases own disjoint parameters covering the model, and the encoder's and decoder's losses reach
    all of theirs; what the paper detaches stays detached: the decoder's loss takes the codes as inputs (no
    gradient to the encoder), the discriminator's the fakes (gradients to nothing but the discriminator)."""
    _, data, net = build_tiny(compose_cfg, *CONV)
    batch = data.train.head(32)
    phases = {p.name: p for p in net.phases()}
    owned = {name: {id(q) for q in p.parameters} for name, p in phases.items()}
    assert sum(map(len, owned.values())) == len({id(q) for q in net.parameters()}) == len(set().union(*owned.values()))
    reached = {}
    for name, phase in phases.items():
        net.zero_grad(set_to_none=True)
        sum(phase.loss(batch, 1).values()).backward()
        reached[name] = {id(q) for q in net.parameters() if q.grad is not None and q.grad.abs().sum() > 0}
    assert owned["encoder"] <= reached["encoder"] and owned["decoder"] <= reached["decoder"]
    assert not reached["decoder"] & owned["encoder"]
    assert reached["discriminator"] == owned["discriminator"]


def test_the_game_teaches_the_judge_and_the_decoder(compose_cfg, tmp_path) -> None:
    """Sixty steps on a batch of the synthetic shapes, the feature term at full weight (gamma = 1): the
    discriminator comes to tell real images from decoded prior draws (its mean belief that they are real: real
    above fake), and matching Dis_l features alone (no pixel term) brings the reconstructions closer in pixels.
    Over seeds 0-4: beliefs 0.65-0.79 against 0.24-0.42; pixel NLL down 20-35%."""
    cfg, data, net = build_tiny(compose_cfg, *CONV, "lr=3e-3", "model.gamma=1")
    trainer = Trainer(net, data, cfg.trainer, device=torch.device("cpu"), logger=NullLogger(), run_dir=tmp_path, seed=0)
    val = data.val.head(64)
    net.eval()
    before = net.diagnostics(val).scalars
    net.train()
    batch = data.train.head(64)
    for _ in range(60):
        trainer.train_step(batch)
    net.eval()
    after = net.diagnostics(val).scalars
    assert after["disc_real"] > after["disc_fake"] + 0.1, after
    assert after["pixel_recon"] < 0.85 * before["pixel_recon"], (before["pixel_recon"], after["pixel_recon"])
