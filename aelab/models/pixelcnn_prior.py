"""The second stage of a VQ-VAE: a PixelCNN (van den Oord et al. 2016) over the grid of code indices.

A gated PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN decoders"): an
embedding of each cell's code index, a first gated layer of `kernel` that sees only the cells before each
cell in raster order, `blocks` gated 3x3 layers, and a 1x1 head with one logit per code. The vertical and
horizontal stacks avoid the blind spot of plain masked convolutions (cells up and to the right that a
plain stack never sees).

API (what `aelab fit-prior prior=pixelcnn` and `aelab sample` use):
    prior = fit_pixelcnn(model, data.train, epochs, out_dir=..., val=data.val)  # -> PixelCNNPrior, saved
    codes = prior.sample(n)                      # (n, latent_dim): decode with model.decode(codes)
    prior = PixelCNNPrior.load(out_dir / PRIOR_FILE)
Bits per code (the mean NLL of one cell's index, in bits) is the figure of merit; the uniform prior the
VQ-VAE trained with costs log2(K), the code frequencies (unigram) less, the PixelCNN less again.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.data.base import Split
from aelab.errors import UserError
from aelab.files import save_torch

log = logging.getLogger(__name__)

FORMAT = "aelab-pixelcnn/1"
PRIOR_FILE = "pixelcnn.pt"  # the fitted prior: the best epoch on the held-out codes (else the last)
LAST_FILE = "pixelcnn_last.pt"  # the latest epoch


def _gate(h: Tensor) -> Tensor:  # (B, 2C, h, w) -> (B, C, h, w): tanh(a) * sigmoid(b)
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer: a vertical stack that sees the rows above (`half` of them, `half` columns
    either side) and a horizontal stack that sees the cells to the left in the row plus what the vertical stack
    saw. Together they reach every earlier cell in raster order: no blind spot. The first layer may not see
    the cell itself ('A' masks); later ones may ('B'), since their inputs at a cell hold only earlier cells."""

    def __init__(self, width: int, kernel: int, first: bool) -> None:
        super().__init__()
        half = kernel // 2
        self.first = first
        # cropped to the input's height / width below: output row r sees rows r-half..r, column c columns c-half..c
        self.vertical = nn.Conv2d(width, 2 * width, (half + 1, kernel), padding=(half, half))
        self.horizontal = nn.Conv2d(width, 2 * width, (1, half + 1), padding=(0, half))
        self.vertical_to_horizontal = nn.Conv2d(2 * width, 2 * width, 1)
        self.out = nn.Conv2d(width, width, 1)
        v_mask, h_mask = torch.ones(half + 1, kernel), torch.ones(1, half + 1)
        if first:  # 'A': not the cell's own row (vertical), not the cell itself (horizontal)
            v_mask[-1], h_mask[0, -1] = 0, 0
        self.register_buffer("v_mask", v_mask)
        self.register_buffer("h_mask", h_mask)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:  # (B, width, H, W) each
        rows, cols = v.shape[-2:]
        v_pre = F.conv2d(v, self.vertical.weight * self.v_mask, self.vertical.bias,
                         padding=self.vertical.padding)[:, :, :rows]  # (B, 2 width, H, W)
        h_pre = F.conv2d(h, self.horizontal.weight * self.h_mask, self.horizontal.bias,
                         padding=self.horizontal.padding)[:, :, :, :cols]
        h_out = self.out(_gate(h_pre + self.vertical_to_horizontal(v_pre)))
        return _gate(v_pre), (h_out if self.first else h + h_out)  # the first layer's input holds the cell itself


class PixelCNNPrior(nn.Module):
    """p(indices) = prod over cells in raster order of p(index | the cells before); holds the codebook so its
    samples are ready for the VQ-VAE's decode."""

    def __init__(self, grid: tuple[int, int], codebook: Tensor, width: int = 64, blocks: int = 4,
                 kernel: int = 7) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.options = {"width": int(width), "blocks": int(blocks), "kernel": int(kernel)}
        self.register_buffer("codebook", codebook.detach().float().clone())  # (K, D)
        k = codebook.shape[0]
        self.embed = nn.Embedding(k, width)
        self.layers = nn.ModuleList([GatedLayer(width, kernel, first=True),
                                     *[GatedLayer(width, 3, first=False) for _ in range(blocks)]])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, k, 1))
        self.metrics: dict[str, float] = {}  # bits per code of the fit and its baselines (fit_pixelcnn fills it)

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    def forward(self, index: Tensor) -> Tensor:  # (B, h, w) int64 -> (B, K, h, w) logits
        v = h = self.embed(index).permute(0, 3, 1, 2)  # (B, width, h, w)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def nll(self, index: Tensor) -> Tensor:  # (B, h, w) -> (B,) nats, summed over the cells
        return F.cross_entropy(self(index), index, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def bits_per_code(self, index: Tensor, batch_size: int = 512) -> float:
        """Mean NLL of one cell's code index in bits, over index (N, h, w)."""
        was = self.training
        self.eval()
        total = sum(float(self.nll(chunk).sum()) for chunk in index.split(batch_size))
        self.train(was)
        return total / (index.numel() * math.log(2))

    @torch.no_grad()
    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, h, w) int64
        """Ancestral sampling in raster order: one pass per cell."""
        was = self.training
        self.eval()
        device = self.codebook.device
        index = torch.zeros(n, *self.grid, dtype=torch.long, device=device)
        for r in range(self.grid[0]):
            for c in range(self.grid[1]):
                probs = self(index)[:, :, r, c].float().softmax(1)  # (n, K)
                index[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        self.train(was)
        return index

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, h * w * D)
        """n code grids, flattened cell by cell as VQVAE.encode returns them: ready for VQVAE.decode."""
        return self.codebook[self.sample_indices(n, generator)].reshape(n, -1)

    # ---- files ------------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Written atomically (temp file, then rename): an interrupted save leaves the previous file."""
        save_torch({"format": FORMAT, "grid": list(self.grid), "options": self.options, "metrics": self.metrics,
                    "state": self.state_dict()}, path, "fitted prior")

    @classmethod
    def load(cls, path: Path | str, map_location: str | torch.device = "cpu") -> PixelCNNPrior:
        path = Path(path)
        try:
            saved: Any = torch.load(path, map_location=map_location, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            raise UserError("prior", f"cannot read {path}: {str(exc).strip().splitlines()[0]}",
                            "a file written by fit_pixelcnn") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise UserError("prior", f"{path} is not a PixelCNN prior", f"expected format {FORMAT}")
        prior = cls(tuple(saved["grid"]), saved["state"]["codebook"], **saved["options"])
        prior.load_state_dict(saved["state"])
        prior.metrics = dict(saved.get("metrics", {}))
        return prior


# ---- fitting ----------------------------------------------------------------------------------
@torch.no_grad()
def code_grids(model: Any, split: Split, batch_size: int = 512, limit: int | None = None) -> Tensor:
    """The code index grid of every example of a split (N, h, w) int64, on the model's device; of its first
    `limit` examples where given."""
    was = model.training
    model.eval()
    grids, seen = [], 0
    for batch in split.batches(batch_size):
        grids.append(model.code_indices(batch.x, batch.y))
        seen += len(grids[-1])
        if limit is not None and seen >= limit:
            break
    model.train(was)
    return torch.cat(grids)[:limit]


def baseline_bits(train: Tensor, heldout: Tensor, size: int) -> dict[str, float]:
    """Bits per code of held-out index grids under the uniform prior (what the VQ-VAE trained with) and
    under the training codes' frequencies (unigram, add-one smoothed)."""
    counts = torch.bincount(train.flatten(), minlength=size).double() + 1.0
    log_p = (counts / counts.sum()).log2()
    return {"uniform_bits": math.log2(size), "unigram_bits": float(-log_p[heldout.flatten()].mean())}


def fit_pixelcnn(model: Any, train: Split, epochs: int, out_dir: Path | str, val: Split | None = None,
                 batch_size: int = 128, lr: float = 1e-3, width: int = 64, blocks: int = 4, kernel: int = 7,
                 seed: int = 0, report: Callable[[str], None] | None = None,
                 max_codes: int | None = None) -> PixelCNNPrior:
    """Fit a PixelCNN to the code grids of a trained VQ-VAE's training split (its first max_codes examples,
    and as many held-out ones, where given: fit-prior's max_codes, as the GMM takes it).

    Each epoch writes out_dir/pixelcnn_last.pt; out_dir/pixelcnn.pt holds the epoch with the lowest held-out
    bits per code (val given; else the last) and is the prior returned. `report` gets one line per epoch
    (default: this module's logger). The prior's `metrics` hold its bits per code and the baselines'.
    """
    if not hasattr(model, "code_indices"):
        raise UserError("prior", f"a PixelCNN prior models a grid of code indices; {type(model).__name__} has none",
                        "a vq_vae run")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UserError("prior", f"epochs={epochs}, batch_size={batch_size}, lr={lr}",
                        "epochs >= 1, batch_size >= 1, lr > 0")
    say = report or log.info
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    train_codes = code_grids(model, train, limit=max_codes)  # (N, h, w)
    val_codes = code_grids(model, val, limit=max_codes) if val is not None and len(val) else None
    device = train_codes.device
    prior = PixelCNNPrior(model.grid, model.codebook.vectors, width, blocks, kernel).to(device)
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    heldout = val_codes if val_codes is not None else train_codes
    baselines = baseline_bits(train_codes, heldout, prior.codebook_size)
    say(f"pixelcnn prior: {len(train_codes)} code grids of {model.grid[0]}x{model.grid[1]}, "
        f"K={prior.codebook_size}; {'held-out' if val_codes is not None else 'training'} codes: "
        f"uniform {baselines['uniform_bits']:.3f}, unigram {baselines['unigram_bits']:.3f} bits/code")
    best = math.inf
    for epoch in range(1, epochs + 1):
        t0, prior = time.perf_counter(), prior.train()
        total, seen = 0.0, 0
        for chunk in torch.randperm(len(train_codes), generator=order_rng).to(device).split(batch_size):
            index = train_codes[chunk]
            loss = F.cross_entropy(prior(index), index)  # nats per code
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(chunk), seen + len(chunk)
        train_bits = total / seen / math.log(2)
        held_bits = prior.bits_per_code(heldout)
        prior.metrics = {**baselines, "train_bits": train_bits,
                         ("val_bits" if val_codes is not None else "train_eval_bits"): held_bits, "epoch": epoch}
        prior.save(out_dir / LAST_FILE)
        improved = held_bits < best
        if improved:
            best = held_bits
            prior.save(out_dir / PRIOR_FILE)
        say(f"epoch {epoch}/{epochs}  train {train_bits:.4f}  {'val' if val_codes is not None else 'train'} "
            f"{held_bits:.4f} bits/code{' *' if improved else ''}  {time.perf_counter() - t0:.1f}s")
    return PixelCNNPrior.load(out_dir / PRIOR_FILE, map_location=device)
