"""The model-interface contract, for every registered family x arch (conf/model/*.yaml x conf/arch/*.yaml)."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.base import Autoencoder, NoPriorError
from aelab.viz.logger import NullLogger
from conftest import TINY, arch_names, model_names


# family x arch pairs that do not make sense, with the reason (every other pair must pass the contract)
NOT_MEANINGFUL = {("pca", "conv"): "pca is linear and builds no networks: the arch is unused (covered by pca x mlp)"}


# burgess_conv's four stride-2 convs are sized for 64x64 images; on TINY's 16x16 they would end at one pixel
ARCH_ON_TINY = {"burgess_conv": ["arch.channels=[32,64]"]}

# vae_gan's decoder at its default gamma (0.003) mostly plays the game, and on TINY's 16x16 images the default
# Dis_l (the deepest activation: 256x1x1 on conv) keeps little of the pixels, so 40 steps do not move its pixel
# reconstruction (its monitor) far: with the feature term at full weight on the first activation they must.
# scripts/vae_gan_check.py measures the defaults.
ON_A_FIXED_BATCH = {"vae_gan": ["model.gamma=1", "model.feature_layer=0"]}


def _setup(compose_cfg, model: str, arch: str, extra: list[str] | None = None):
    if (model, arch) in NOT_MEANINGFUL:
        pytest.skip(NOT_MEANINGFUL[model, arch])
    cfg = compose_cfg([*TINY, f"model={model}", f"arch={arch}", *ARCH_ON_TINY.get(arch, []), *(extra or [])])
    torch.manual_seed(0)
    data = build_data(cfg.data, torch.device("cpu"))
    return cfg, data, build_model(cfg, data.shape, data.num_classes)


def _total(net: Autoencoder, batch) -> float:
    net.eval()
    with torch.no_grad():
        return sum(v.item() for v in net.losses(batch, 0).values())


def _monitored(net: Autoencoder, batch) -> float:
    """The number the family says marks a better model (its `monitor`): the sum of its terms, one of its terms,
    or one of its diagnostics (a game's players' terms oppose each other, and their sum says nothing)."""
    net.eval()
    with torch.no_grad():
        terms = net.losses(batch, 0)
        if net.monitor == "loss":
            return sum(v.item() for v in terms.values())
        if net.monitor in terms:
            return terms[net.monitor].item()
        return net.diagnostics(batch).scalars[net.monitor]


def _check_contract(cfg, data, net: Autoencoder) -> None:
    assert isinstance(net, Autoencoder)
    batch = data.train.head(16)
    z = net.encode(batch.x, batch.y)
    assert z.shape == (16, cfg.latent_dim)
    logits = net.decode(z, batch.y)
    assert logits.shape == batch.x.shape
    net.train()
    terms = net.losses(batch, step=1)
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    if not net.phases():  # a closed-form family: nothing to optimise, and fitting must help
        assert not trainable, f"a family without phases has trainable parameters: {trainable}"
        before = _total(net, batch)
        net.fit_closed_form(data.train)
        assert _total(net, batch) < before
    else:
        sum(terms.values()).backward()
        no_grad = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert trainable and not no_grad, f"parameters without gradient: {no_grad}"
        phase_params = {id(p) for phase in net.phases() for p in phase.parameters}
        assert phase_params == {id(p) for p in net.parameters() if p.requires_grad}, "a parameter no phase optimises"
    for name, value in net.diagnostics(data.val.head(64)).scalars.items():
        assert math.isfinite(value), name


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("model", model_names())
def test_interface_contract(compose_cfg, model: str, arch: str) -> None:
    cfg, data, net = _setup(compose_cfg, model, arch)
    _check_contract(cfg, data, net)
    if net.has_prior:
        samples = net.sample(5)
        assert samples.shape == (5, *data.shape) and samples.min() >= 0 and samples.max() <= 1
    else:
        with pytest.raises(NoPriorError):
            net.sample(5)


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("model", model_names())
def test_loss_decreases_on_a_fixed_batch(compose_cfg, model: str, arch: str, tmp_path) -> None:
    cfg, data, net = _setup(compose_cfg, model, arch, ["lr=3e-3", *ON_A_FIXED_BATCH.get(model, [])])
    trainer = Trainer(net, data, cfg.trainer, device=torch.device("cpu"), logger=NullLogger(), run_dir=tmp_path, seed=0)
    if not trainer.phases:  # closed form: the fit is the whole of training
        batch = data.train.head(64)
        before = _total(net, batch)
        net.fit_closed_form(data.train)
        assert _total(net, batch) < 0.8 * before
        return
    batch = data.train.head(64)
    before = _monitored(net, batch)
    net.train()
    for _ in range(40):
        trainer.train_step(batch)
    after = _monitored(net, batch)
    assert math.isfinite(after) and after < 0.8 * before, (net.monitor, before, after)


@pytest.mark.parametrize("data_name, shape", [("digits", (1, 8, 8)), ("synthetic", (1, 16, 16)), ("mnist5k", (1, 28, 28))])
def test_conv_arch_fits_every_image_size(compose_cfg, data_name: str, shape) -> None:
    cfg = compose_cfg([*TINY, f"data={data_name}", "model=vae", "arch=conv"])
    data = build_data(cfg.data, torch.device("cpu"))
    net = build_model(cfg, data.shape, data.num_classes)
    assert tuple(data.shape) == shape
    assert net.decode(net.encode(data.train.head(3).x)).shape == (3, *shape)


@pytest.mark.parametrize("side", [16, 28, 33, 64])
def test_burgess_conv_lands_on_every_image_size_and_has_no_batch_statistics(side: int) -> None:
    """arch=burgess_conv (disentanglement_lib's nets): 4x4 stride-2 convs down and back to the exact size, odd sides
    too; no BatchNorm, so an example's code is the same alone or in a batch."""
    from torch import nn

    from aelab.nets.burgess import BurgessConvArch

    arch = BurgessConvArch()
    torch.manual_seed(0)
    enc, dec = arch.encoder((1, side, side), 20), arch.decoder(10, (1, side, side))
    x = torch.rand(5, 1, side, side)
    with torch.no_grad():
        codes = enc(x)
        assert codes.shape == (5, 20) and dec(codes[:, :10]).shape == (5, 1, side, side)
        assert torch.allclose(enc(x[:1]), codes[:1], atol=1e-5)
    assert [m.kernel_size for m in enc.modules() if isinstance(m, nn.Conv2d)] == [(4, 4)] * 4
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in [*enc.modules(), *dec.modules()])


def test_burgess_conv_refuses_images_too_small_for_its_convs(compose_cfg) -> None:
    cfg = compose_cfg([*TINY, "data=digits", "model=vae", "arch=burgess_conv"])
    data = build_data(cfg.data, torch.device("cpu"))
    with pytest.raises(UserError, match=r"arch.channels: 4 stride-2 convs need images of at least 16 pixels"):
        build_model(cfg, data.shape, data.num_classes)


def test_vae_kl_weight_follows_beta(compose_cfg) -> None:
    _, data, net = _setup(compose_cfg, "vae", "mlp", ["beta=0"])
    batch = data.train.head(32)
    torch.manual_seed(1)
    assert net.losses(batch, 1)["kl"].item() == 0.0
    net.beta = 4.0
    torch.manual_seed(1)
    weighted = net.losses(batch, 1)["kl"].item()
    net.beta = 1.0
    torch.manual_seed(1)
    assert weighted == pytest.approx(4.0 * net.losses(batch, 1)["kl"].item(), rel=1e-5)


def test_gaussian_likelihood_is_half_squared_error(compose_cfg) -> None:
    _, data, net = _setup(compose_cfg, "ae", "mlp", ["model.likelihood=gaussian"])
    batch = data.train.head(8)
    net.eval()
    recon = net.decode(net.encode(batch.x))
    expected = 0.5 * (recon - batch.x).pow(2).flatten(1).sum(1).mean()
    assert net.losses(batch, 0)["recon"].item() == pytest.approx(expected.item(), rel=1e-5)
