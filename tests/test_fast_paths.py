"""The performance paths compute exactly what the plain PyTorch forms compute.

Fast CPU paths: oneDNN linear layers, the log-free Bernoulli loss, in-place importance-sampling
terms, fused Adam, channels-last convolutions. Each is checked against the textbook form, values and
gradients, on shapes that exercise its edge cases.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelab.engine.trainer import fused_if_available
from aelab.models.likelihoods import Bernoulli, Gaussian, _BernoulliNLL, sum_softplus
from aelab.nets import linear as linear_mod
from aelab.nets import conv as conv_mod
from aelab.nets.conv import ConvArch
from aelab.nets.linear import Linear


# ---- Bernoulli loss without a log per pixel ----------------------------------------------
@pytest.mark.parametrize("shape", [(7, 1, 28, 28), (5, 3, 5, 7), (4, 16), (3, 1)])
def test_sum_softplus_matches_softplus(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    logits = torch.randn(*shape) * 6
    logits.view(-1)[:3] = torch.tensor([80.0, -80.0, 0.0])[: logits.numel()]  # far tails: no overflow, no underflow
    expected = F.softplus(logits.flatten(1)).sum(1)
    assert torch.allclose(sum_softplus(logits.flatten(1)), expected, rtol=1e-5, atol=1e-3)
    consumed = logits.flatten(1).clone()
    assert torch.allclose(sum_softplus(consumed, consume=True), expected, rtol=1e-5, atol=1e-3)


def test_bernoulli_loss_and_gradient_match_bce_with_logits() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    logits = (torch.randn(16, 1, 28, 28) * 5).requires_grad_()
    ours = Bernoulli().batch_nll(logits, x)
    (grad,) = torch.autograd.grad(ours, logits)
    reference = logits.detach().clone().requires_grad_()
    theirs = F.binary_cross_entropy_with_logits(reference, x, reduction="sum") / 16
    theirs.backward()
    assert torch.allclose(ours, theirs, rtol=1e-6)
    assert torch.allclose(grad, reference.grad, atol=1e-7)
    per_image = Bernoulli().nll(logits.detach(), x)
    assert per_image.shape == (16,)
    assert torch.allclose(per_image, F.binary_cross_entropy_with_logits(logits.detach(), x, reduction="none").sum((1, 2, 3)),
                          rtol=1e-6)


def test_bernoulli_loss_gradcheck() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(3, 2, 5, dtype=torch.double) * 4).requires_grad_()
    x = torch.rand(3, 2, 5, dtype=torch.double).requires_grad_()
    assert torch.autograd.gradcheck(_BernoulliNLL.apply, (logits, x))


@pytest.mark.parametrize("likelihood", [Bernoulli(), Gaussian()], ids=["bernoulli", "gaussian"])
def test_nll_of_draws_consume_matches_per_draw_nll(likelihood) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 5)
    draws = torch.randn(3, 6, 1, 4, 5) * 3
    expected = torch.stack([likelihood.nll(d, x) for d in draws])  # (S, B)
    assert torch.allclose(likelihood.nll_of_draws(draws, x), expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(likelihood.nll_of_draws(draws.clone(), x, consume=True), expected, rtol=1e-5, atol=1e-4)


# ---- oneDNN linear layers --------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_nn_linear_values_and_gradients(bias: bool) -> None:
    torch.manual_seed(0)
    ours, plain = Linear(37, 23, bias=bias), nn.Linear(37, 23, bias=bias)
    plain.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())  # checkpoints do not depend on the path
    x = torch.randn(2, 9, 37)  # leading dims are flattened and restored
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), plain(x2)
    assert y1.shape == (2, 9, 23)
    assert torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    for a, b in zip(ours.parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


def test_linear_handles_broadcast_gradients_and_empty_batches() -> None:
    torch.manual_seed(0)
    ours, plain = Linear(4, 3), nn.Linear(4, 3)
    plain.load_state_dict(ours.state_dict())
    x1 = torch.randn(5, 4, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    ours(x1).sum().backward()  # the incoming gradient is an expanded (stride-0) tensor
    plain(x2).sum().backward()
    assert torch.allclose(x1.grad, x2.grad) and torch.allclose(ours.weight.grad, plain.weight.grad)
    assert ours(torch.randn(0, 4)).shape == (0, 3)


@pytest.mark.skipif(linear_mod._ONEDNN is None, reason="this torch has no oneDNN linear")
def test_linear_takes_onednn_on_cpu_fp32_and_falls_back_elsewhere() -> None:
    layer, x = Linear(8, 4), torch.randn(3, 8)
    assert linear_mod.onednn_applies(x, layer.weight)
    assert not linear_mod.onednn_applies(x.double(), layer.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear_mod.onednn_applies(x, layer.weight)
        assert layer(x).dtype == torch.bfloat16  # autocast's own linear ran


def test_onednn_linear_can_be_switched_off() -> None:
    code = "import aelab.nets.linear as m; print(m._ONEDNN is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "AELAB_ONEDNN_LINEAR": "0"})
    assert out.stdout.strip() == "True"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_compiled_training_step_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.compile=true: inductor must not lower the oneDNN linear (it needs constant weights)."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the same noise as eager
    from aelab.models.vae import VAE
    from aelab.nets.mlp import MLPArch
    from aelab.data.base import Batch

    torch.manual_seed(0)
    model = VAE(MLPArch(hidden=[32]), (1, 6, 6), latent_dim=3)
    batch = Batch(torch.rand(16, 1, 6, 6))
    torch.manual_seed(1)
    eager = model.losses(batch, 1)
    torch.manual_seed(1)
    compiled = torch.compile(model.losses)(batch, 1)
    for name in eager:
        assert torch.allclose(eager[name], compiled[name], rtol=1e-4), name
    sum(compiled.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- fused optimisers ------------------------------------------------------------------------
def test_fused_is_requested_where_the_optimizer_has_it() -> None:
    params = [nn.Parameter(torch.randn(3))]
    adam = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3), torch.device("cpu"))
    assert adam(params).defaults["fused"] is True
    chosen = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3, foreach=True, fused=False),
                                torch.device("cpu"))
    assert chosen(params).defaults["fused"] is False  # the user's choice wins
    lbfgs = fused_if_available(functools.partial(torch.optim.LBFGS, lr=1.0), torch.device("cpu"))
    assert "fused" not in lbfgs.keywords  # no fused implementation: left alone
    mps = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3), torch.device("mps"))
    assert "fused" not in mps.keywords


# ---- channels-last convolutions --------------------------------------------------------------
def test_conv_nets_keep_the_ordinary_layout_at_their_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    arch = ConvArch([8, 16])
    enc, dec = arch.encoder((1, 28, 28), 6), arch.decoder(6, (1, 28, 28))
    assert enc.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 28, 28)
    out = dec(enc(x))
    assert out.shape == (4, 1, 28, 28) and out.is_contiguous()
    # the same function as the network built in the ordinary (NCHW) layout, with the same weights
    monkeypatch.setattr(conv_mod, "CHANNELS_LAST", torch.contiguous_format)
    plain_enc, plain_dec = arch.encoder((1, 28, 28), 6), arch.decoder(6, (1, 28, 28))
    assert not plain_enc.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    plain_enc.load_state_dict(enc.state_dict())
    plain_dec.load_state_dict(dec.state_dict())
    assert torch.allclose(out, plain_dec(plain_enc(x)), atol=1e-5)
