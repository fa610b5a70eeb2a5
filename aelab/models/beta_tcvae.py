"""beta-TCVAE (Chen et al. 2018): the KL term split into index-code mutual information, total correlation and
dimension-wise KL, each with its own weight, estimated by minibatch-weighted sampling (MWS).

For codes z_i ~ q(z|x_i) of a batch of M examples from a training set of N:
    log q(z_i)       ~= logsumexp_j log q(z_i|x_j)          - log(N M)
    log prod q(z_id) ~= sum_d [logsumexp_j log q(z_id|x_j) - log(N M)]
    mi = log q(z_i|x_i) - log q(z_i),  tc = log q(z_i) - log prod q(z_id),  dim_kl = log prod q(z_id) - log p(z_i)
The three add up to log q(z|x) - log p(z), the one-draw estimate of the KL. alpha = beta = gamma = 1 is the VAE.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch, Split
from aelab.models.base import Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.schema import OneOf, Range

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
DIAGNOSTIC_BLOCK = 500  # validation codes per block of the diagnostic estimate (see BetaTCVAE.diagnostics)


ESTIMATORS = ("mws", "mss")  # minibatch-weighted | minibatch-stratified sampling (Chen et al. 2018, appendix)


def stratified_log_weights(m: int, dataset_size: int) -> Tensor:  # (M, M): log w_ij, each row summing to 1
    """MSS's importance weights of a batch of M: 1/N on the example itself, (N - M') / (N M') on one other
    (the next, cyclically), 1/M' on the rest, M' = M - 1. Chen et al.'s code puts the last row's stratum weight
    in row M - 2 (`W[M-1, 0]` with their M = batch - 1), leaving that row summing above 1 and the last below;
    here every row sums to 1."""
    n, k = float(dataset_size), m - 1
    strat = (n - k) / (n * k)
    w = torch.full((m, m), 1.0 / k)
    idx = torch.arange(m)
    w[idx, idx] = 1.0 / n
    w[idx, (idx + 1) % m] = strat
    return w.log()


def kl_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int,
                     estimator: str = "mws") -> dict[str, Tensor]:
    """Per example (M,): mi, tc and dim_kl of codes z (M, D) drawn from q(z|x) = N(mu, exp logvar), estimated
    with minibatch-weighted (mws) or minibatch-stratified (mss) sampling."""
    m = z.shape[0]
    # log q(z_id | x_j) for every pair (i, j) and dimension d: (M, M, D)
    pairs = -0.5 * ((z[:, None] - mu[None]).pow(2) * (-logvar[None]).exp() + logvar[None]) - HALF_LOG_2PI
    if estimator == "mss" and m > 2:
        log_w = stratified_log_weights(m, dataset_size).to(pairs)  # (M, M)
        log_qz = torch.logsumexp(pairs.sum(2) + log_w, 1)  # (M,)
        log_prod_marginals = torch.logsumexp(pairs + log_w[:, :, None], 1).sum(1)  # (M,)
    else:
        log_norm = math.log(dataset_size * m)
        log_qz = torch.logsumexp(pairs.sum(2), 1) - log_norm  # (M,)
        log_prod_marginals = (torch.logsumexp(pairs, 1) - log_norm).sum(1)  # (M,)
    log_qz_given_x = pairs.diagonal(dim1=0, dim2=1).sum(0)  # (M,): log q(z_i|x_i)
    log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(1)  # (M,)
    return {"mi": log_qz_given_x - log_qz, "tc": log_qz - log_prod_marginals, "dim_kl": log_prod_marginals - log_pz}


class BetaTCVAE(VAE):
    """Weights: alpha on the index-code mutual information, beta on the total correlation, gamma on the
    dimension-wise KL (the paper: alpha = gamma = 1, beta = 6). dataset_size: N in the estimator; null takes
    the training split's size when training starts (before that, e.g. on a model never trained, the batch's)."""
    directions = {"mi": None, "estimate_mi": None, "estimate_tc": "min"}  # index-code information: penalised, yet worth keeping

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 6.0, alpha: Annotated[float, Range(0, None)] = 1.0,
                 gamma: Annotated[float, Range(0, None)] = 1.0,
                 dataset_size: Annotated[int | None, Range(1, None)] = None,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 estimator: Annotated[str, OneOf(ESTIMATORS)] = "mws") -> None:
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes)
        self.alpha, self.gamma, self.estimator = float(alpha), float(gamma), str(estimator)
        self.register_buffer("dataset_size", torch.tensor(int(dataset_size or 0)))  # 0: not known yet

    def fit_closed_form(self, train: Split, batch_size: int = 1024) -> None:
        """Records the training-set size N the estimator needs (in the checkpoint, with the weights)."""
        if int(self.dataset_size) == 0:
            self.dataset_size.fill_(len(train))

    def decomposition(self, mu: Tensor, logvar: Tensor, z: Tensor) -> dict[str, Tensor]:  # unweighted, (M,) each
        return kl_decomposition(z, mu, logvar, int(self.dataset_size) or z.shape[0], self.estimator)

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        parts = self.decomposition(mu, logvar, z)
        weights = {"mi": self.alpha, "tc": self.kl_weight(step), "dim_kl": self.gamma}
        return {name: weights[name] * value.mean() for name, value in parts.items()}

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the unweighted estimates of the three terms (nats per example) on the validation batch, in blocks of
        DIAGNOSTIC_BLOCK codes: the estimator compares every pair of a block, (M, M, D) floats, which for 5,000
        validation codes was a gigabyte and seconds per epoch; a block of 500 is a large training batch's view."""
        out = super().diagnostics(batch)
        mu, logvar = self.posterior(batch.x, batch.y)
        z = reparameterize(mu, logvar)
        sums: dict[str, float] = {}
        for start in range(0, z.shape[0], DIAGNOSTIC_BLOCK):
            part = slice(start, start + DIAGNOSTIC_BLOCK)
            for k, v in self.decomposition(mu[part], logvar[part], z[part]).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        out.scalars.update({f"estimate_{k}": v / z.shape[0] for k, v in sums.items()})
        return out
