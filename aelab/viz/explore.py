"""TensorBoard views of an evaluated run, written once against the model interface.

The manifold of test codes (2-D as they are; beyond that PCA and t-SNE), the embedding projector with
image sprites, histograms of the posterior's mu and log sigma^2, the family's own pictures (e.g. the
per-class mean activation of sparse AEs), the decoded latent grid, and the run's HParams with the
evaluated metrics. Each command writes to its own folder, so the training event files are never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aelab.data.base import DataModule, Split
from aelab.models.base import Autoencoder
from aelab.viz import views


def writer_for(out_dir: Path):
    """A TensorBoard writer in a command's own output folder (tensorboard --logdir <run> shows it beside training)."""
    from aelab.viz.tensorboard import TensorBoardLogger

    return TensorBoardLogger(out_dir)


def tsne_points(codes: Tensor, seed: int = 0) -> Tensor:  # (N, D) -> (N, 2)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(codes) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes.numpy())
    return torch.from_numpy(points).float()


def manifold_figures(codes: Tensor, labels: Tensor | None, class_names: list[str] | None,
                     tsne: int, seed: int = 0) -> dict[str, Any]:
    """The manifold scatter: the codes for D <= 2, else their PCA and (first `tsne` points) t-SNE projections."""
    figures = {"latent_manifold": views.manifold_figure(codes, labels, class_names)}
    if codes.shape[1] > 2 and tsne > 0 and len(codes) > 5:
        few = slice(0, tsne)
        fig = views.manifold_figure(tsne_points(codes[few], seed), None if labels is None else labels[few], class_names)
        ax = fig.axes[0]
        ax.set_title(f"latent manifold (t-SNE, {codes.shape[1]}-D codes, {len(codes[few])} points)")
        ax.set_xlabel("t-SNE[0]")
        ax.set_ylabel("t-SNE[1]")
        figures["latent_manifold_tsne"] = fig
    return figures


@torch.no_grad()
def log_eval_views(logger, model: Autoencoder, data: DataModule, split: Split, split_name: str,
                   points: int = 2000, tsne: int = 1000, grid_size: int = 15, seed: int = 0) -> list[str]:
    """Every view of an evaluated run under `<split>/...`; returns the tags written."""
    writer, tags = logger.writer, []
    codes, labels = views.latent_codes(model, split, points)
    for name, fig in manifold_figures(codes, labels, data.class_names, tsne, seed).items():
        writer.add_figure(f"{split_name}/{name}", fig, 0)
        tags.append(f"{split_name}/{name}")
    head = split.head(points)
    names = data.class_names
    metadata = None if labels is None else [names[int(c)] if names and int(c) < len(names) else str(int(c))
                                            for c in labels]
    sprites = head.x[: len(codes)].float().clamp(0, 1).cpu() if views.is_image(data.shape) else None
    if sprites is not None and sprites.shape[1] not in (1, 3):
        sprites = None
    writer.add_embedding(codes, metadata=metadata, label_img=sprites, global_step=0, tag=f"{split_name}_codes")
    tags.append(f"{split_name}_codes (projector)")
    if model.has_posterior:  # the posterior's mean and log-variance: collapsed units pile up at mu = 0, logvar = 0
        mu, logvar = model.posterior(head.x, head.y)
        writer.add_histogram(f"{split_name}/posterior_mu", mu.float().cpu(), 0)
        writer.add_histogram(f"{split_name}/posterior_logvar", logvar.float().cpu(), 0)
        tags += [f"{split_name}/posterior_mu", f"{split_name}/posterior_logvar"]
    writer.add_histogram(f"{split_name}/codes", codes, 0)
    found = model.diagnostics(head)  # the family's own pictures (sparse AEs: mean activation per class, ...)
    for name, image in found.images.items():
        writer.add_image(f"{split_name}/{name}", image, 0)
        tags.append(f"{split_name}/{name}")
    if views.is_image(data.shape):
        writer.add_image(f"{split_name}/reconstructions", views.reconstruction_grid(model, head.x[:32],
                         None if head.y is None else head.y[:32]), 0)
        tags.append(f"{split_name}/reconstructions")
        if model.latent_dim == 2:
            for name, image in views.latent_grids(model, codes, grid_size).items():
                writer.add_image(f"{split_name}/{name}", image, 0)
                tags.append(f"{split_name}/{name}")
    writer.flush()
    return tags


def log_hparams(logger, config, metrics: dict[str, Any]) -> None:
    """The run's hyperparameters with the evaluated metrics (numbers only) in the HParams tab."""
    from aelab.commands.train import _hparams

    logger.hparams(_hparams(config), {k: float(v) for k, v in metrics.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" in k})


def log_strips(logger, tag: str, strip: Tensor, frames: list[Tensor]) -> None:
    """An interpolation strip as one image and its frames as steps of a second image (the step slider plays it)."""
    logger.writer.add_image(tag, strip, 0)
    for step, frame in enumerate(frames):
        logger.writer.add_image(f"{tag}_frames", frame, step)
    logger.writer.flush()
