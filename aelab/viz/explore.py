"""Views of an evaluated run beyond an epoch's report, written once against the model interface.

The manifold of test codes beyond 2-D as t-SNE, histograms of the posterior's mu and log sigma^2, and the
embedding projector with image sprites. Each command writes to its own folder, so the training event files
are never touched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import DataModule, Split
from aelab.models.base import Autoencoder
from aelab.viz import views
from aelab.viz.scatter import draw


def tsne_points(codes: Tensor, seed: int = 0) -> Tensor:  # (N, D) -> (N, 2)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(codes) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes.numpy())
    return torch.from_numpy(points).float()


def tsne_manifold_image(codes: Tensor, labels: Tensor | None, class_names: list[str] | None, tsne: int,
                        seed: int = 0) -> Tensor:
    """The manifold of the first `tsne` codes as their t-SNE projection (the report's own is their PCA)."""
    few = slice(0, tsne)
    plot = views.manifold_plot(tsne_points(codes[few], seed), None if labels is None else labels[few], class_names)
    plot.title = f"latent manifold (t-SNE, {codes.shape[1]}-D codes, {len(codes[few])} points)"
    plot.xlabel, plot.ylabel = "t-SNE[0]", "t-SNE[1]"
    return draw(plot)


@torch.no_grad()
def eval_views(report, model: Autoencoder, data: DataModule, split: Split, split_name: str, tsne: int, seed: int,
               writer) -> None:
    """What eval shows beyond an epoch's report: the t-SNE manifold and the posterior's histograms (added to the
    report), and the embedding projector with image sprites (written to the logger's folder)."""
    head = split.head(len(report.histograms["codes"])) if "codes" in report.histograms else split.head(2000)
    codes = report.histograms.get("codes")
    if codes is None:
        codes, _ = views.latent_codes(model, split, len(head))
    labels = None if head.y is None else head.y[: len(codes)].cpu()
    if codes.shape[1] > 2 and tsne > 0 and len(codes) > 5:  # beyond 2-D: t-SNE beside the report's PCA
        report.images["latent_manifold_tsne"] = tsne_manifold_image(codes, labels, data.class_names, tsne, seed)
    if model.has_posterior:  # the posterior's mean and log-variance: collapsed units pile up at mu = 0, logvar = 0
        mu, logvar = model.posterior(head.x, head.y)
        report.histograms["posterior_mu"], report.histograms["posterior_logvar"] = mu.float().cpu(), logvar.float().cpu()
    names = data.class_names
    metadata = None if labels is None else [names[int(c)] if names and int(c) < len(names) else str(int(c))
                                            for c in labels]
    sprites = head.x[: len(codes)].float().clamp(0, 1).cpu() if views.is_image(data.shape) else None
    if sprites is not None and sprites.shape[1] not in (1, 3):
        sprites = None
    writer.add_embedding(codes, metadata=metadata, label_img=sprites, global_step=0, tag=f"{split_name}_codes")
