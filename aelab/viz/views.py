"""Pictures of a model written once against the model interface: reconstructions, manifolds, grids, samples.

Which picture is drawn follows the data's shape: image grids for (C, H, W) examples, scatter plots
for (D,) vectors (D > 2 projected on the inputs' first two principal components).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.data.base import Split
from aelab.models.base import Autoencoder, Picture
from aelab.viz.images import grid
from aelab.viz.scatter import BLUE, Layer, Plot, class_color, class_colors, draw


@torch.no_grad()
def reconstruction_grid(model: Autoencoder, x: Tensor, y: Tensor | None = None, per_row: int = 8) -> Tensor:
    """Rows alternate inputs and their reconstructions."""
    recon = model.reconstruct(x, y)
    rows = []
    for start in range(0, x.shape[0], per_row):
        rows += [x[start : start + per_row], recon[start : start + per_row]]
    return grid(torch.cat(rows), nrow=per_row)


@torch.no_grad()
def latent_codes(model: Autoencoder, split: Split, limit: int = 2000, batch_size: int = 1000) -> tuple[Tensor, Tensor | None]:
    """Deterministic codes (N, D) and labels (N,) of the first `limit` examples of a split."""
    codes, labels = [], []
    for batch in split.batches(batch_size):
        codes.append(model.encode(batch.x, batch.y).float().cpu())
        if batch.y is not None:
            labels.append(batch.y.cpu())
        if sum(len(c) for c in codes) >= limit:
            break
    z = torch.cat(codes)[:limit]
    return z, (torch.cat(labels)[:limit] if labels else None)


def project_2d(codes: Tensor) -> tuple[Tensor, str]:
    """Codes as 2-D points: as they are for D <= 2, else their first two principal components."""
    plane = _plane(codes, "z")
    return _to_plane(codes, plane), plane[2]


PRIOR_GREY = (166, 166, 166)  # prior samples behind the codes: visible, yet never mistaken for a class colour


def manifold_plot(codes: Tensor, labels: Tensor | None, class_names: list[str] | None = None,
                  prior: Tensor | None = None) -> Plot:
    """The codes coloured by label over samples of the prior (M, D) in grey when given, both projected on the
    codes' plane, so the picture shows how well the codes fill the prior (what `manifold_image` draws)."""
    plane = _plane(codes, "z")
    points, how = _to_plane(codes, plane), plane[2]
    layers, legend = [], []
    if prior is not None:
        layers.append(Layer("prior", _to_plane(prior, plane), PRIOR_GREY, alpha=0.45))
        legend.append(("prior samples", PRIOR_GREY))
    if labels is None:
        layers.append(Layer("codes", points, BLUE, alpha=0.6))
    else:
        layers.append(Layer("codes", points, class_colors(labels), alpha=0.7))
        legend += [(class_names[c] if class_names and c < len(class_names) else str(c), class_color(c))
                   for c in sorted(set(labels.tolist()))]
    return Plot(layers, f"latent manifold ({how}, {codes.shape[1]}-D codes)", f"{how}[0]", f"{how}[1]", legend)


def manifold_image(codes: Tensor, labels: Tensor | None, class_names: list[str] | None = None,
                   prior: Tensor | None = None) -> Tensor:
    """The latent manifold as a (3, H, W) picture (aelab/viz/scatter.py: drawn with Pillow, not matplotlib,
    because every epoch draws one)."""
    return draw(manifold_plot(codes, labels, class_names, prior))


def is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def prior_codes(model: Autoencoder, n: int) -> Tensor | None:
    """n codes (n, D) drawn from the model's prior, for families that can draw them (the AAE: every class's
    region when supervised); None otherwise."""
    draw = getattr(model, "prior_codes", None)
    return draw(n).float().cpu() if model.has_prior and callable(draw) else None


def prior_quantiles(model: Autoencoder, p: Tensor) -> Tensor:  # (P,) -> (P, D)
    """The prior's quantiles p of every code coordinate: a family gives one coordinate's (P,), shared by all
    (a symmetric prior), or each coordinate's own (P, D) (an AAE grid's row below the lattice widens only y)."""
    q = model.prior_quantile(p).float().cpu()
    return q[:, None].expand(-1, model.latent_dim) if q.dim() == 1 else q


def latent_axes(model: Autoencoder, codes: Tensor | None, n: int,
                span: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
    """Grid coordinates for a 2-D latent plane: `span` (low, high) on both axes if given, else each axis's prior
    quantiles (5%..95%) if the model has a prior, else the codes' range."""
    if span is not None:
        axis = torch.linspace(float(span[0]), float(span[1]), n)
        return axis, axis
    if model.has_prior or codes is None:
        q = prior_quantiles(model, torch.linspace(0.05, 0.95, n))
        return q[:, 0].contiguous(), q[:, 1].contiguous()
    lo, hi = torch.quantile(codes, 0.01, dim=0), torch.quantile(codes, 0.99, dim=0)
    return torch.linspace(float(lo[0]), float(hi[0]), n), torch.linspace(float(lo[1]), float(hi[1]), n)


@torch.no_grad()
def latent_grid(model: Autoencoder, codes: Tensor | None = None, n: int = 15, label: int | None = None,
                span: tuple[float, float] | None = None) -> Tensor:
    """Decode an n x n grid of the 2-D latent plane (rows: z[1] from high to low, columns: z[0]), with one label."""
    xs, ys = latent_axes(model, codes, n, span)
    zz = torch.stack(torch.meshgrid(ys.flip(0), xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2).to(model.device)
    y = None if label is None else torch.full((len(zz),), int(label), device=model.device)
    images = model.likelihood.mean(model.decode(zz, y))
    return grid(images, nrow=n, pad=1)


def latent_grids(model: Autoencoder, codes: Tensor | None = None, n: int = 15,
                 label: int | None = None, span: tuple[float, float] | None = None) -> dict[str, Tensor]:
    """The decoded 2-D latent plane; conditional models get one plane per class (or the given label's)."""
    if not model.conditional:
        return {"latent_grid": latent_grid(model, codes, n, span=span)}
    if label is not None:
        return {"latent_grid": latent_grid(model, codes, n, label, span)}
    classes = model.condition.num_classes  # type: ignore[union-attr]
    return {f"latent_grid/class_{c}": latent_grid(model, codes, n, c, span) for c in range(classes)}


@torch.no_grad()
def prior_samples(model: Autoencoder, n: int = 64) -> Tensor:
    return grid(model.sample(n), nrow=math.ceil(math.sqrt(n)))


# ---- vectors (2-D toy data, tables): scatter plots ---------------------------------------------------
def _plane(x: Tensor, name: str = "x") -> tuple[Tensor, Tensor, str]:
    """A 2-D view of (N, D) vectors: the coordinates for D <= 2, else the first two principal components
    (mean, basis (D, 2), how the axes are called); other points go on the same plane with _to_plane."""
    x = x.float().cpu()
    if x.shape[1] == 1:
        return torch.zeros(1), torch.tensor([[1.0, 0.0]]), name
    if x.shape[1] == 2:
        return torch.zeros(2), torch.eye(2), name
    mean = x.mean(0)
    _, _, v = torch.pca_lowrank(x - mean, q=2, center=False)
    return mean, v[:, :2], f"PCA of {name}"


def _to_plane(points: Tensor, plane: tuple[Tensor, Tensor, str]) -> Tensor:  # (N, D) -> (N, 2)
    mean, basis, _ = plane
    return (points.float().cpu() - mean) @ basis


def _scatter(ax, points: Tensor, labels: Tensor | None, title: str, **style) -> None:
    if labels is not None:
        style.update(c=labels.cpu(), cmap="tab10", vmin=-0.5, vmax=9.5)
    ax.scatter(points[:, 0], points[:, 1], **{"s": 3, "alpha": 0.6, **style})
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="box")


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4.2), dpi=100, sharex=True, sharey=True, squeeze=False)
    return fig, list(axes[0])


@torch.no_grad()
def reconstruction_figure(model: Autoencoder, x: Tensor, y: Tensor | None = None):
    """Scatter of the data next to the scatter of its reconstructions (same axes, coloured by label)."""
    plane = _plane(x)
    fig, (left, right) = _figure(2)
    _scatter(left, _to_plane(x, plane), y, f"data ({plane[2]})")
    _scatter(right, _to_plane(model.reconstruct(x, y), plane), y, "reconstructions")
    fig.tight_layout()
    return fig


@torch.no_grad()
def decoded_curve_figure(model: Autoencoder, x: Tensor, y: Tensor | None = None, steps: int = 400):
    """For 1-D codes: the decoded line z -> decode(z) over the codes' range, on the data (one line per class
    for conditional models, each over its own class's codes)."""
    plane = _plane(x)
    fig, (ax,) = _figure(1)
    _scatter(ax, _to_plane(x, plane), y, "decoded curve over the data", alpha=0.25)
    codes = model.encode(x, y)[:, 0]  # (N,)
    labels = range(model.condition.num_classes) if model.conditional else [None]  # type: ignore[union-attr]
    for label in labels:
        own = codes if label is None or y is None else codes[y == label]
        if not len(own):
            continue
        lo, hi = float(own.min()), float(own.max())
        z = torch.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), steps, device=model.device)[:, None]  # (T, 1)
        yy = None if label is None else torch.full((steps,), label, device=model.device)
        curve = _to_plane(model.likelihood.mean(model.decode(z, yy)), plane)
        ax.plot(curve[:, 0], curve[:, 1], lw=2, color="black" if label is None else f"C{label}",
                label="decode(z)" if label is None else f"decode(z, {label})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def samples_figure(samples: Tensor, background: Tensor | None = None):
    """Prior samples (black) scattered over the data (grey), in the data's plane."""
    plane = _plane(background if background is not None else samples)
    fig, (ax,) = _figure(1)
    if background is not None:
        _scatter(ax, _to_plane(background, plane), None, "", alpha=0.15, color="grey")
    _scatter(ax, _to_plane(samples, plane), None, f"prior samples ({plane[2]})", color="black")
    fig.tight_layout()
    return fig


def path_figure(ends: Tensor, path: Tensor):
    """A decoded latent path (T, D) as connected points between the two inputs (2, D)."""
    plane = _plane(torch.cat([ends, path]))
    fig, (ax,) = _figure(1)
    points = _to_plane(path, plane)
    ax.plot(points[:, 0], points[:, 1], "-o", ms=3, color="black", label="decoded path")
    _scatter(ax, _to_plane(ends, plane), None, f"interpolation ({plane[2]})", s=40, alpha=1.0, color="red",
             label="inputs")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def release(figures) -> None:
    """Free matplotlib figures (pyplot keeps every open one alive)."""
    import matplotlib.pyplot as plt

    for fig in list(figures):
        plt.close(fig)




# ---- an epoch's pictures (the engine's report asks for them; sinks show them) -----------------------
def render(picture: Picture) -> Tensor:
    """A family's Picture as a (3, H, W) grid image."""
    return grid(picture.images, nrow=picture.per_row)


@torch.no_grad()
def split_pictures(report, model: Autoencoder, split: Split, options, class_names: list[str] | None) -> None:
    """Add the shared views of a split to a report: reconstructions, the latent manifold and the codes' histogram,
    the decoded latent grid (2-D codes) and prior samples; scatter plots instead of grids for vector data."""
    codes, labels = latent_codes(model, split, options.manifold_points)
    many = split.head(options.manifold_points)
    if model.images:
        head = split.head(options.num_images)
        report.images["reconstructions"] = reconstruction_grid(model, head.x, head.y)
        if model.latent_dim == 2:
            report.images.update(latent_grids(model, codes, options.grid_size))
        if model.has_prior:
            report.images["prior_samples"] = prior_samples(model, options.num_samples)
    else:
        report.figures["reconstructions"] = reconstruction_figure(model, many.x, many.y)
        if model.latent_dim == 1:
            report.figures["decoded_curve"] = decoded_curve_figure(model, many.x, many.y)
        if model.has_prior:
            report.figures["prior_samples"] = samples_figure(model.sample(1000), many.x)
    report.images["latent_manifold"] = manifold_image(codes, labels, class_names, prior_codes(model, len(codes)))
    report.histograms["codes"] = codes
    if options.traversal and model.images:  # data with known factors: which dimension moves which factor
        first = split.head(1)
        dims, _ = traversal_order(model, many.x, many.y)
        low, high = traversal_range(model, codes)
        rows = traversal(model, first.x, first.y, dims[: options.traversal_dims], low, high, options.traversal_steps)
        report.images["traversal"] = traversal_grid(rows)


# ---- latent traversals ------------------------------------------------------------------------------
@torch.no_grad()
def traversal_order(model: Autoencoder, x: Tensor, y: Tensor | None = None) -> tuple[list[int], Tensor | None]:
    """Code dimensions by decreasing KL (families with a Gaussian posterior, KL per dimension on x), else in order;
    and the KLs (D,) or None."""
    if not model.has_posterior:
        return list(range(model.latent_dim)), None
    from aelab.models.vae import gaussian_kl

    mu, logvar = model.posterior(x, y)
    kl = gaussian_kl(mu.float(), logvar.float()).mean(0).cpu()  # (D,)
    return [int(d) for d in kl.argsort(descending=True)], kl


@torch.no_grad()
def traversal_range(model: Autoencoder, codes: Tensor | None, span: tuple[float, float] | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Low and high (D,) of each dimension's sweep: `span` if given, else the prior's 2%..98% quantiles, else
    (no prior) those of the codes."""
    d = model.latent_dim
    if span is not None:
        return torch.full((d,), float(span[0])), torch.full((d,), float(span[1]))
    if model.has_prior or codes is None:
        lo, hi = prior_quantiles(model, torch.tensor([0.02, 0.98])).clone()
        return lo, hi
    return torch.quantile(codes.float(), 0.02, dim=0), torch.quantile(codes.float(), 0.98, dim=0)


@torch.no_grad()
def traversal(model: Autoencoder, x: Tensor, y: Tensor | None, dims: list[int], low: Tensor, high: Tensor,
              steps: int) -> Tensor:  # (len(dims), steps, C, H, W)
    """One example's code (x: (1, ...)) with each listed dimension swept from low[d] to high[d], decoded."""
    z = model.encode(x, y).float()  # (1, D)
    t = torch.linspace(0, 1, steps, device=z.device)
    codes = z.repeat(len(dims) * steps, 1)  # (len(dims) * steps, D)
    for row, d in enumerate(dims):
        codes[row * steps : (row + 1) * steps, d] = float(low[d]) + t * float(high[d] - low[d])
    labels = None if y is None else y.expand(len(codes))
    images = model.likelihood.mean(model.decode(codes.to(z.dtype), labels)).float()
    return images.view(len(dims), steps, *images.shape[1:])


def traversal_grid(rows: Tensor) -> Tensor:
    """(R, S, C, H, W) -> one image: a row per dimension, a column per step."""
    return grid(rows.flatten(0, 1), nrow=rows.shape[1], pad=1)


def traversal_gif_frames(rows: Tensor) -> list[Tensor]:
    """One frame per step, each showing every dimension's image at that step (the animation cycles the sweeps)."""
    cells = rows.shape[0]
    per_row = min(cells, max(1, math.ceil(math.sqrt(cells))))
    scale = max(1, 64 // rows.shape[-1])  # tiny images are enlarged so the GIF is watchable
    frames = []
    for s in range(rows.shape[1]):
        frame = rows[:, s].repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        frames.append(grid(frame, nrow=per_row, pad=2))
    return frames
