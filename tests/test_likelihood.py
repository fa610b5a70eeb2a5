"""The importance-sampled NLL converges to the exact likelihood where that is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.errors import UserError
from aelab.metrics.likelihood import importance_sampled_nll
from aelab.models.ae import AE
from aelab.models.vae import VAE
from aelab.nets.mlp import MLPArch


def test_linear_gaussian_vae_matches_the_exact_marginal() -> None:
    torch.manual_seed(0)
    model = VAE(MLPArch(hidden=[]), (1, 2, 2), latent_dim=2, likelihood="gaussian").eval()
    dec = model.decoder.net[0]  # x = W z + b + unit noise  ->  p(x) = N(b, W W^T + I)
    w, b = dec.weight.detach(), dec.bias.detach()
    x = torch.randn(5, 1, 2, 2)
    exact = -torch.distributions.MultivariateNormal(b, w @ w.T + torch.eye(4)).log_prob(x.view(5, 4))
    # aelab's Gaussian NLL leaves out the constant 0.5 * D * log(2 pi)
    estimate = importance_sampled_nll(model, x, k=20000, samples_per_chunk=5000) + 0.5 * 4 * math.log(2 * math.pi)
    assert torch.allclose(estimate, exact, atol=0.05), (estimate, exact)


def test_more_samples_tighten_the_bound() -> None:
    torch.manual_seed(0)
    model = VAE(MLPArch(hidden=[16]), (1, 4, 4), latent_dim=3).eval()
    x = (torch.rand(20, 1, 4, 4) > 0.5).float()
    torch.manual_seed(1)
    elbo_like = importance_sampled_nll(model, x, k=1).mean()
    torch.manual_seed(1)
    tight = importance_sampled_nll(model, x, k=500).mean()
    assert tight < elbo_like


def test_models_without_a_posterior_are_refused() -> None:
    with pytest.raises(UserError, match="posterior"):
        importance_sampled_nll(AE(MLPArch(hidden=[8]), (1, 2, 2), latent_dim=2), torch.rand(3, 1, 2, 2), k=2)
