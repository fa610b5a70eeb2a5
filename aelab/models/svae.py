"""Hyperspherical VAE (Davidson et al. 2018): codes on the unit sphere S^{d-1} in R^d (d = latent_dim), the
posterior a von Mises-Fisher vMF(mu(x), kappa(x)), the prior uniform on the sphere.

The uniform prior has no mean to collapse onto, and for small d it suits data with a circular or spherical
structure better than N(0, I). The KL to the prior has a closed form (aelab/models/vmf.py); sampling is Wood's
rejection sampler with a Householder reflection. eval's ELBO and IS-NLL use the family's own densities
(elbo_terms, importance_sampler): log q is the vMF's, log p = -log |S^{d-1}|.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE
from aelab.models.vmf import kl_to_uniform, log_sphere_area, mean_resultant_length, sample_vmf, vmf_log_density
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.schema import Annotated, OneOf, Range


class SVAE(VAE):
    """beta weighs the KL to the uniform prior. encode gives the mean direction mu (a point on the sphere, the
    posterior's mode); posterior gives the vMF's mean A_d(kappa) mu and per-coordinate log-variance, the moments
    that views and active-unit counts read (not a Gaussian density: the ELBO and IS-NLL use the vMF's own)."""

    directions = {"kappa_mean": None}
    prior_is_standard_normal = False  # the per-dimension KL to N(0, 1) is not this model's term

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 1.0, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 recon_weight: Annotated[float, Range(0, None)] = 1.0) -> None:
        self.check_options({"latent_dim": latent_dim}, "model")
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes, recon_weight)
        # the VAE's encoder gives [mu, logvar] (2d); this one gives [direction (d), concentration (1)]
        self.encoder = build_encoder(arch, self.input_shape, self.latent_dim + 1, 0, family=type(self).__name__)

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        d = options.get("latent_dim")
        if isinstance(d, int) and d < 2:
            raise UserError("latent_dim", f"svae's codes lie on the unit sphere in R^latent_dim, and in R^{d} that "
                            "sphere is two points", "latent_dim >= 2 (2: the circle; 3 or more: a sphere)")

    def vmf_params(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, d) unit, (B,) > 1
        h = self.encoder(x, self.encoder_condition(y)).float()
        mu = F.normalize(h[:, : self.latent_dim], dim=1)
        return mu, F.softplus(h[:, self.latent_dim]) + 1.0  # kappa >= 1, as Davidson et al.'s code

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.vmf_params(x, y)[0]  # the mode: decodes like the codes the decoder was trained on

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, d), (B, d)
        """The vMF's mean A mu and per-coordinate log-variance: E[z z'] = (A / kappa) I + (1 - d A / kappa) mu mu'."""
        mu, kappa = self.vmf_params(x, y)
        a = mean_resultant_length(kappa.double(), self.latent_dim).float()[:, None]  # (B, 1)
        k = kappa[:, None]
        variance = a / k + (1 - self.latent_dim * a / k - a * a) * mu * mu
        return a * mu, variance.clamp_min(1e-12).log()

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        mu, kappa = self.vmf_params(self.corrupt(batch.x), batch.y)
        z = sample_vmf(mu, kappa)
        recon = self.recon_weight * self.likelihood.batch_nll(self.decode(z, batch.y), batch.x)
        kl = kl_to_uniform(kappa.double(), self.latent_dim).float().mean()
        return {"recon": recon, "kl": self.kl_weight(step) * kl}

    # ---- what eval measures through ------------------------------------------------------------------
    def elbo_terms(self, x: Tensor, y: Tensor | None = None, samples: int = 1) -> tuple[Tensor, Tensor]:
        mu, kappa = self.vmf_params(x, y)
        recon = torch.zeros(x.shape[0], device=x.device)
        for _ in range(samples):
            recon += self.likelihood.nll(self.decode(sample_vmf(mu, kappa), y).float(), x)
        return recon / samples, kl_to_uniform(kappa.double(), self.latent_dim).float()

    def importance_sampler(self, x: Tensor, y: Tensor | None = None) -> Callable[[int], tuple[Tensor, Tensor]]:
        mu, kappa = self.vmf_params(x, y)  # (B, d), (B,)
        log_prior = -log_sphere_area(self.latent_dim)

        def draw(s: int) -> tuple[Tensor, Tensor]:
            mu_s, kappa_s = mu.repeat(s, 1), kappa.repeat(s)  # (s*B, d), (s*B,) in (s, B) order
            z = sample_vmf(mu_s, kappa_s)
            labels = None if y is None else y.repeat(s)
            logits = self.decode(z, labels)
            log_q = vmf_log_density(z.double(), mu_s.double(), kappa_s.double()).float()
            return logits.view(s, x.shape[0], *logits.shape[1:]), (log_prior - log_q).view(s, x.shape[0])

        return draw

    def prior(self, n: int) -> Tensor:  # (n, d): uniform on the sphere, a normalised Gaussian
        return F.normalize(torch.randn(n, self.latent_dim, device=self.device), dim=1)

    def prior_quantile(self, p: Tensor) -> Tensor:
        """One coordinate of a uniform point on S^{d-1}: (t + 1) / 2 ~ Beta((d-1)/2, (d-1)/2)."""
        from scipy.special import betaincinv  # scipy comes with scikit-learn; off the CLI's start path

        half = (self.latent_dim - 1) / 2
        return torch.as_tensor(2 * betaincinv(half, half, p.double().cpu().numpy()) - 1, dtype=p.dtype)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the concentrations kappa (their mean and histogram): how sure the encoder is of each direction."""
        out = super().diagnostics(batch)
        _, kappa = self.vmf_params(batch.x, batch.y)
        out.scalars["kappa_mean"] = float(kappa.mean())
        out.histograms["kappa"] = kappa.float().cpu()
        return out
