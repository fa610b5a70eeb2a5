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
from aelab.models.iwae import log_normal
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.nets.precision import full_precision
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


PAIR_BLOCK = 1 << 18  # (rows, M, D) floats the marginal estimate holds at once: a megabyte, which stays in cache


def joint_pair_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """(M, M): log q(z_i | x_j) = sum_d log N(z_id; mu_jd, exp logvar_jd) for every pair, by three (M, D) x (D, M)
    matmuls rather than an (M, M, D) tensor: sum_d (z_id - mu_jd)^2 / var_jd expands to z^2 . (1/var) - 2 z . (mu/var)
    + sum mu^2/var. In fp32 (never under autocast: the terms cancel). The expansion loses digits where the terms are
    large and cancel, which is the diagonal (z_i drawn from q(z|x_i) itself, the term that dominates the estimate):
    that one is computed directly."""
    with full_precision(z, mu, logvar) as (z, mu, logvar):
        inv_var = (-logvar).exp()
        quad = (z * z) @ inv_var.T - 2 * z @ (mu * inv_var).T + (mu * mu * inv_var).sum(1)
        pairs = -0.5 * (quad + logvar.sum(1)) - z.shape[1] * HALF_LOG_2PI
        own = log_normal(z, mu, logvar)  # (M,): the diagonal, exactly
        eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        return torch.where(eye, torch.diag_embed(own), pairs)


class _MarginalLogSumExp(torch.autograd.Function):
    """out[i, d] = logsumexp_j (log N(z_id; mu_jd, exp logvar_jd) + log_w[i, j]): the per-dimension marginal densities,
    computed in blocks of rows so that the (M, M, D) pairs never exist whole (the backward recomputes each block), laid
    out (D, rows, M) so that the sum over j runs along contiguous memory. At a batch of 2,048 on 2 cores the estimator's
    forward and backward took 1.4 s through autograd on the whole tensor (a gigabyte of intermediates) and take 0.38 s
    so (0.13 s of them this function's)."""

    @staticmethod
    def forward(ctx, z: Tensor, mu: Tensor, logvar: Tensor, log_w: Tensor | None) -> Tensor:  # noqa: ANN001
        m, d = z.shape
        rows = max(1, PAIR_BLOCK // max(1, m * d))
        zt, mut, inv_var = z.T.contiguous(), mu.T.contiguous(), (-logvar).T.exp().contiguous()  # (D, M)
        const = -0.5 * logvar.T - HALF_LOG_2PI  # (D, M): log N's terms that depend on j alone
        out = z.new_empty(d, m)
        for start in range(0, m, rows):
            diff = zt[:, start:start + rows, None] - mut[:, None]  # (D, rows, M)
            block = torch.addcmul(const[:, None], diff * diff, inv_var[:, None], value=-0.5)
            if log_w is not None:
                block += log_w[start:start + rows]
            out[:, start:start + rows] = torch.logsumexp(block, -1)
        ctx.save_for_backward(zt, mut, inv_var, const, out, *(() if log_w is None else (log_w,)))
        ctx.rows = rows
        return out.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # noqa: ANN001
        zt, mut, inv_var, const, out, *rest = ctx.saved_tensors
        log_w = rest[0] if rest else None
        grad_t = grad.T
        gz, gmu, glogvar = torch.empty_like(zt), torch.zeros_like(mut), torch.zeros_like(mut)
        for start in range(0, zt.shape[1], ctx.rows):
            part = slice(start, start + ctx.rows)
            diff = zt[:, part, None] - mut[:, None]  # (D, rows, M)
            scaled = diff * inv_var[:, None]
            log_p = torch.addcmul(const[:, None], diff, scaled, value=-0.5)
            if log_w is not None:
                log_p += log_w[part]
            weight = (log_p - out[:, part, None]).exp_().mul_(grad_t[:, part, None])  # softmax over j x incoming grad
            pull = scaled.mul_(weight)
            gz[:, part] = -pull.sum(-1)
            gmu += pull.sum(1)
            glogvar += (0.5 * (pull * diff - weight)).sum(1)
        return gz.T, gmu.T, glogvar.T, None


def marginal_log_density(z: Tensor, mu: Tensor, logvar: Tensor, log_w: Tensor | None = None) -> Tensor:
    """(M, D): logsumexp_j [log q(z_id | x_j) + log_w_ij] (log_w: None for equal weights), in fp32."""
    with full_precision(z, mu, logvar) as (z, mu, logvar):
        return _MarginalLogSumExp.apply(z, mu, logvar, log_w)


def kl_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int,
                     estimator: str = "mws") -> dict[str, Tensor]:
    """Per example (M,): mi, tc and dim_kl of codes z (M, D) drawn from q(z|x) = N(mu, exp logvar), estimated
    with minibatch-weighted (mws) or minibatch-stratified (mss) sampling."""
    m = z.shape[0]
    joint = joint_pair_log_density(z, mu, logvar)  # (M, M): log q(z_i | x_j)
    if estimator == "mss" and m > 2:
        log_w = stratified_log_weights(m, dataset_size).to(joint)  # (M, M)
        log_qz = torch.logsumexp(joint + log_w, 1)  # (M,)
        log_prod_marginals = marginal_log_density(z, mu, logvar, log_w).sum(1)  # (M,)
    else:
        log_norm = math.log(dataset_size * m)
        log_qz = torch.logsumexp(joint, 1) - log_norm  # (M,)
        log_prod_marginals = (marginal_log_density(z, mu, logvar) - log_norm).sum(1)  # (M,)
    log_qz_given_x = joint.diagonal()  # (M,): log q(z_i|x_i)
    with full_precision(z) as (z,):
        log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(1)  # (M,)
    return {"mi": log_qz_given_x - log_qz, "tc": log_qz - log_prod_marginals, "dim_kl": log_prod_marginals - log_pz}


class BetaTCVAE(VAE):
    """Weights: alpha on the index-code mutual information, beta on the total correlation, gamma on the
    dimension-wise KL (the paper: alpha = gamma = 1, beta = 6). dataset_size: N in the estimator; null takes
    the training split's size when training starts (before that, e.g. on a model never trained, the batch's).
    gamma_warmup_steps: the dimension-wise KL's weight rises linearly from 0 to gamma over this many steps, as in
    both reference codes (Chen et al.'s `--lambda-anneal`, 7,000 iterations on dSprites; Dubois et al.'s
    disentangling-vae `reg_anneal`, 10,000 steps). Early on the marginals are then not pulled towards the Gaussian,
    whose rotations all factorise alike: the total correlation can pick the axes while they are not."""
    directions = {"mi": None, "estimate_mi": None, "estimate_tc": "min"}  # index-code information: penalised, yet worth keeping

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 6.0, alpha: Annotated[float, Range(0, None)] = 1.0,
                 gamma: Annotated[float, Range(0, None)] = 1.0,
                 dataset_size: Annotated[int | None, Range(1, None)] = None,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 estimator: Annotated[str, OneOf(ESTIMATORS)] = "mws",
                 gamma_warmup_steps: Annotated[int, Range(0, None)] = 0) -> None:
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes)
        self.alpha, self.gamma, self.estimator = float(alpha), float(gamma), str(estimator)
        self.gamma_warmup_steps = int(gamma_warmup_steps)
        self.register_buffer("dataset_size", torch.tensor(int(dataset_size or 0)))  # 0: not known yet

    def fit_closed_form(self, train: Split, batch_size: int = 1024) -> None:
        """Records the training-set size N the estimator needs (in the checkpoint, with the weights)."""
        if int(self.dataset_size) == 0:
            self.dataset_size.fill_(len(train))

    def decomposition(self, mu: Tensor, logvar: Tensor, z: Tensor) -> dict[str, Tensor]:  # unweighted, (M,) each
        return kl_decomposition(z, mu, logvar, int(self.dataset_size) or z.shape[0], self.estimator)

    def gamma_weight(self, step: int) -> float:
        """The dimension-wise KL's weight at a training step: gamma, ramped up over gamma_warmup_steps."""
        if self.gamma_warmup_steps <= 0:
            return self.gamma
        return self.gamma * min(1.0, step / self.gamma_warmup_steps)

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        parts = self.decomposition(mu, logvar, z)
        weights = {"mi": self.alpha, "tc": self.kl_weight(step), "dim_kl": self.gamma_weight(step)}
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
