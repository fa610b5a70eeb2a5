"""Where a command's samples come from: the model's prior, a density `aelab fit-prior` stored in the run, or a
Gaussian fitted to the training codes (the same fit and the same codes as `aelab fit-prior`'s Gaussian baseline)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aelab.commands.session import RunSession
from aelab.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from aelab.models.base import Autoencoder

GAUSSIAN_CODES = 20000  # training codes the fallback Gaussian is fitted to


@dataclass(frozen=True)
class Sampler:
    """Where samples come from: the model's own prior, or codes drawn from a density fitted to its codes."""

    key: str  # model | pixelcnn | maf | gmm | gaussian
    source: str  # in words, for the table and metrics.json
    draw_codes: Callable[[int], Tensor] | None = None  # n -> codes (n, D); None: the model samples itself

    def images(self, model: Autoencoder, n: int, y: Tensor | None = None) -> Tensor:
        if self.draw_codes is None:
            return model.sample(n, y)
        y = model.default_labels(n) if y is None else y  # conditional families decode with a label
        return model.likelihood.mean(model.decode(self.draw_codes(n).to(model.device).float(), y))


def choose_sampler(session: RunSession, choice: str, key: str, gaussian_fallback: bool) -> Sampler | None:
    """`auto`: a density `aelab fit-prior` stored in the run (pixelcnn, then maf, then gmm), else the model's prior, else
    (with gaussian_fallback) a Gaussian fitted to the training codes; None when there is nothing to draw from."""
    from aelab.models.fitted_prior import load_fitted_prior, prior_path

    model, run_dir = session.model, session.run.run_dir
    fitted = {name: prior_path(run_dir, name) for name in ("pixelcnn", "maf", "gmm")}
    if choice == "auto":
        choice = next((k for k, path in fitted.items() if path.is_file()), "model" if model.has_prior else
                      ("gaussian" if gaussian_fallback else ""))
        if not choice:
            return None
    if choice in fitted and not fitted[choice].is_file():
        raise UserError(key, f"{run_dir} has no fitted {choice} prior", f"aelab fit-prior run={run_dir} prior={choice}")
    if choice == "model":
        if not model.has_prior:
            raise UserError(key, f"{type(model).__name__} has no prior of its own", "gmm, pixelcnn or gaussian")
        return Sampler("model", "the prior")
    if choice == "pixelcnn":
        from aelab.models.pixelcnn_prior import PixelCNNPrior

        pixelcnn = PixelCNNPrior.load(fitted["pixelcnn"], map_location=session.device)
        return Sampler("pixelcnn", "a PixelCNN fitted to the training code grids", pixelcnn.sample)
    if choice == "maf":
        from aelab.models.maf_prior import MAFPrior

        maf = MAFPrior.from_file(fitted["maf"], map_location=session.device)
        return Sampler("maf", f"a {maf.layers}-layer masked autoregressive flow fitted to the training codes", maf.sample)
    if choice == "gmm":
        gmm = load_fitted_prior(run_dir, "gmm")
        return Sampler("gmm", f"a {gmm.components}-component Gaussian mixture fitted to the training codes", gmm.sample)
    from aelab.models.fitted_prior import fit_gaussian, training_codes

    # the codes the decoder saw in training (one draw of q(z|x) where there is a posterior), as fit-prior fits them
    gaussian = fit_gaussian(training_codes(model, session.data.train, limit=GAUSSIAN_CODES))
    return Sampler("gaussian", "a Gaussian fitted to the training codes", gaussian.sample)
