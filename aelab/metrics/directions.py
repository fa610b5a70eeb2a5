"""Whether a metric is better low or high, read from its name as metrics.json writes it (`val/loss`, `test/psnr`).

Torch-free: `aelab report` and the trainer's checkpoint monitor (`trainer.monitor_mode=auto`) both ask it.

A name is split into words at `/` and `_`; the words are read from the right and the first one that names a
kind of measurement decides, so the last word wins: `anomaly_recon_auroc` is an AUROC (higher), `elbo_recon`
the ELBO's reconstruction NLL (lower), `frechet_reference` a Fréchet distance (lower). Numbers (`kl_dim/03`,
`denoise_psnr_0.3`) and words that name nothing (`val`, `test`, `probe`, `knn`, `pca`) are skipped. A `neg` or
`negative` just before the deciding word turns it round: `neg_elbo` is lower-is-better, `elbo` higher.

Decisions worth knowing:
  - a family's own names (its loss terms and diagnostics) are the family's to say: `Autoencoder.directions`
    (a loss term is lower-is-better unless the family says otherwise, e.g. the adversarial players' `adv_*`, which
    have no better side), written into metrics.json's `directions` by train and eval and read first by
    `aelab report` (`resolve(..., recorded=)`) and the checkpoint monitor. The rules below read the names every
    run shares, and the names of runs written before families said so;
  - `perplexity` alone has no direction (a language model's perplexity is better low, a VQ codebook's usage
    perplexity better high);
  - disentanglement scores (`mig`, `sap`, `dci_*`, `disentanglement`, `completeness`, `informativeness`,
    `*_score`) are higher-is-better; informativeness follows disentanglement_lib, where it is a prediction accuracy;
  - bits (the PixelCNN prior's `uniform_bits`, bits per dimension) are lower-is-better;
  - rates (`images_per_s`) are higher-is-better, durations (`time/epoch_s`, `seconds`) lower-is-better;
  - counters (`epochs`, `steps`) have none.
"""

from __future__ import annotations

import re
from typing import Literal

Direction = Literal["min", "max"]
MODES = ("auto", "min", "max")  # the values of `mode=` (report) and `trainer.monitor_mode`: auto asks direction()
DESCRIBED = {"min": "lower is better", "max": "higher is better"}

_LOWER = (
    "loss", "recon", "kl", "nll", "bce", "mse", "mae", "rmse", "error", "err", "frechet", "fid", "kid", "distance",
    "bpd", "bits", "seconds", "s", "time",
)
_HIGHER = (
    "accuracy", "acc", "auroc", "auprc", "auc", "psnr", "ssim", "precision", "recall", "f1", "elbo", "likelihood",
    "score", "mig", "sap", "dci", "disentanglement", "completeness", "informativeness", "modularity", "explicitness",
    "r2",
)
_NONE = ("perplexity", "epoch", "epochs", "step", "steps")
_WORDS: dict[str, Direction | None] = {**{w: "min" for w in _LOWER}, **{w: "max" for w in _HIGHER},
                                       **{w: None for w in _NONE}}
_NEGATIONS = ("neg", "negative")
_FLIP: dict[Direction, Direction] = {"min": "max", "max": "min"}
_RATE = re.compile(r"_per_(s|sec|second)$")  # throughput: images_per_s, samples_per_second
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?(e-?[0-9]+)?")  # a dimension (kl_dim/03) or a noise level (psnr_0.3, 1e-3)


def direction(name: str) -> Direction | None:
    """'min' (lower is better), 'max' (higher is better) or None (unknown, or no better side) for a metric name."""
    last = name.rsplit("/", 1)[-1].lower()
    if _RATE.search(last):
        return "max"
    words = [w for w in re.split(r"[/_]", name.lower()) if w and not _NUMBER.fullmatch(w)]
    for i in range(len(words) - 1, -1, -1):
        if words[i] not in _WORDS:
            continue
        found = _WORDS[words[i]]
        if found is not None and i > 0 and words[i - 1] in _NEGATIONS:
            return _FLIP[found]
        return found
    return None


def resolve(name: str, mode: str = "auto", recorded: dict[str, str | None] | None = None) -> Direction | None:
    """The direction to rank `name` by: `mode` when it is min or max; with auto, what the run's family recorded
    for it (metrics.json's `directions`), else what its name says."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode  # type: ignore[return-value]
    if recorded and name in recorded:
        return recorded[name]  # type: ignore[return-value]
    return direction(name)
