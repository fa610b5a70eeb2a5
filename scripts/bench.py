#!/usr/bin/env python
"""aelab benchmark: textbook PyTorch training loops vs aelab's engine, measured side by side in one process.

    python scripts/bench.py                 # the full table (about 10 minutes on 2 cores)
    python scripts/bench.py --quick         # a smoke run of every row (about a minute)

Rows (all on Fashion-MNIST from Debian's dataset-fashion-mnist, offline):
  MLP VAE 784-400-20: the reference loop (torchvision FashionMNIST + ToTensor + DataLoader(128, shuffle)),
  aelab (model=vae arch=mlp arch.hidden=[400] latent_dim=20 batch_size=128 lr=1e-3), and the compute
  floor (forward+backward matmul FLOPs per image / the matmul throughput measured in this run).
  Conv AE of the course (32-64-128-256, latent 24, batch 64): reference loop vs aelab.
  Start-up: `aelab --help` wall time, launch -> first training step, peak RSS of an MLP VAE run.
  Evaluation: importance-sampled NLL (k samples per image) throughput vs the matmul bound.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


# ---- the textbook reference -------------------------------------------------------------
class TextbookVAE(nn.Module):
    """The PyTorch examples VAE: ReLU MLP, sigmoid output, BCE + KL summed per image."""

    def __init__(self, hidden: int = 400, latent: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def textbook_vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class TextbookConvAE(nn.Module):
    """The course's conv AE, built from aelab's conv blocks so only the training pipeline differs."""

    def __init__(self, latent: int = 24) -> None:
        super().__init__()
        from aelab.nets.conv import ConvArch

        arch = ConvArch((32, 64, 128, 256))
        self.encoder, self.decoder = arch.encoder((1, 28, 28), latent), arch.decoder(latent, (1, 28, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def torchvision_root(tmp: Path) -> Path:
    """torchvision's FashionMNIST layout (uncompressed raw files) made from Debian's gz files."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with gzip.open(DEBIAN_DIR / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def reference_loaders(root: Path, batch_size: int):
    from torchvision import datasets, transforms

    train = datasets.FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(str(root), train=False, download=False, transform=transforms.ToTensor())
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
            torch.utils.data.DataLoader(test, batch_size=1000))


def reference_vae(root: Path, epochs: int) -> dict[str, float]:
    torch.manual_seed(0)
    train, test = reference_loaders(root, 128)
    model = TextbookVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, _ in train:
            opt.zero_grad()
            recon, mu, logvar = model(x)
            loss = textbook_vae_loss(recon, x, mu, logvar)
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, _ in test:
            recon, mu, logvar = model(x)
            total += textbook_vae_loss(recon, x, mu, logvar).item()
            count += len(x)
    return {"seconds": seconds, "images": len(train.dataset), "test_loss": total / count}


def reference_conv(root: Path, epochs: int, max_batches: int | None) -> dict[str, float]:
    torch.manual_seed(0)
    train, _ = reference_loaders(root, 64)
    model = TextbookConvAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds, images = [], 0
    for _ in range(epochs):
        model.train()
        t0, images = time.perf_counter(), 0
        for i, (x, _) in enumerate(train):
            if max_batches and i >= max_batches:
                break
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(x), x, reduction="sum") / len(x)
            loss.backward()
            opt.step()
            images += len(x)
        seconds.append(time.perf_counter() - t0)
    return {"seconds": seconds, "images": images}


# ---- aelab, in-process through its own engine ---------------------------------------------
def aelab_trainer(overrides: list[str], run_dir: Path):
    from hydra import compose, initialize_config_module

    import aelab.commands._common  # noqa: F401  (resolvers)
    from aelab.data import build_data
    from aelab.engine.build import build_model
    from aelab.engine.device import resolve_device
    from aelab.engine.trainer import Trainer
    from aelab.viz.logger import NullLogger

    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(int(cfg.seed))
    device = resolve_device(cfg.device)
    data = build_data(cfg.data, device)
    model = build_model(cfg, data.shape, data.num_classes)
    trainer = Trainer(model, data, cfg.trainer, device=device, logger=NullLogger(), run_dir=run_dir,
                      seed=int(cfg.seed), extra_state={"config": {}, "config_raw": {}, "data": data.describe()})
    return trainer, data


AELAB_DATA = ["data=fashion_mnist", "data.source.download=false",
              "data.val_fraction=0.0002"]  # ~12 validation images: all 60k train images are trained on, as in the reference


def aelab_vae(epochs: int, run_dir: Path) -> dict[str, float]:
    from aelab.engine.evaluate import mean_terms

    trainer, data = aelab_trainer([*AELAB_DATA, "model=vae", "arch=mlp", "arch.hidden=[400]", "latent_dim=20",
                                   "batch_size=128", "lr=1e-3", "beta=1.0", "device=cpu", f"epochs={epochs}",
                                   "logger=none", "seed=0"], run_dir)
    trainer.fit()
    test = mean_terms(trainer.model, data.test, 1000)
    return {"seconds": trainer.epoch_seconds, "images": len(data.train),
            "test_loss": float(sum(test.values())), "model": trainer.model}


def aelab_conv(epochs: int, max_batches: int | None, run_dir: Path) -> dict[str, float]:
    limit = [f"trainer.limit_batches={max_batches}"] if max_batches else []
    trainer, data = aelab_trainer([*AELAB_DATA, "model=ae", "arch=conv", "latent_dim=24", "batch_size=64",
                                   "lr=1e-3", "device=cpu", f"epochs={epochs}", "logger=none", "seed=0", *limit], run_dir)
    trainer.fit()
    images = min(len(data.train), max_batches * 64) if max_batches else len(data.train)
    return {"seconds": trainer.epoch_seconds, "images": images}


# ---- the compute floor ---------------------------------------------------------------------
def matmul_gflops(seconds: float = 2.0) -> float:
    """Sustained fp32 matmul throughput of this machine (large square products)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * 2048**3 * reps / (time.perf_counter() - t0) / 1e9


def vae_flops_per_image(hidden: int = 400, latent: int = 20) -> float:
    """Forward matmul FLOPs x 3 (backward costs two matmuls per forward one)."""
    forward = 2 * (784 * hidden + hidden * 2 * latent + latent * hidden + hidden * 784)
    return 3.0 * forward


# ---- start-up and memory -----------------------------------------------------------------
def help_seconds(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aelab", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_step_and_rss(workdir: Path) -> tuple[float | None, float]:
    """Launch `aelab train` for one epoch: seconds from launch to the first finished step, peak RSS (MB)."""
    args = [sys.executable, "-m", "aelab", "train", "model=vae", "arch.hidden=[400]", "latent_dim=20",
            "data=fashion_mnist", "data.source.download=false", "epochs=1", "logger=none", "device=cpu"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"aelab train failed with status {status}")
    log = next(workdir.glob("outputs/*/*/train.log")).read_text()
    match = re.search(r"first training step finished, ([\d.]+) s after launch", log)
    first = float(match.group(1)) if match else None
    return first, usage.ru_maxrss / 1024


# ---- evaluation: importance-sampled NLL ---------------------------------------------------
def nll_row(model, k: int, images: int, matmul: float) -> dict[str, float]:
    from aelab.data import build_data
    from aelab.metrics.likelihood import importance_sampled_nll
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "data" / "fashion_mnist.yaml")
    cfg.source.download = False
    data = build_data(cfg, torch.device("cpu"))
    x = data.test.head(images).x
    t0 = time.perf_counter()
    nll = importance_sampled_nll(model, x, k=k)
    seconds = time.perf_counter() - t0
    hidden, latent = 400, 20
    # decoder matmuls for every (image, sample) pair; the encoder runs once per image
    flops = images * k * 2 * (latent * hidden + hidden * 784) + images * 2 * (784 * hidden + hidden * 2 * latent)
    bound = flops / (matmul * 1e9)
    return {"seconds": seconds, "bound": bound, "nll": float(nll.mean())}


# ---- the table --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: 2 epochs, few conv batches, k=50")
    parser.add_argument("--epochs", type=int, default=10, help="MLP VAE epochs (first is warm-up; loss after the last)")
    parser.add_argument("--conv-epochs", type=int, default=4, help="conv AE epochs (first is warm-up)")
    parser.add_argument("--conv-batches", type=int, default=200, help="batches per conv epoch (0 = all 938)")
    parser.add_argument("--nll-k", type=int, default=1000)
    parser.add_argument("--nll-images", type=int, default=10000)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.conv_epochs, args.conv_batches, args.nll_k, args.nll_images = 2, 2, 20, 50, 1000
    if not DEBIAN_DIR.is_dir():
        sys.exit("needs Debian's Fashion-MNIST: apt-get install dataset-fashion-mnist")
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    tmp = Path(tempfile.mkdtemp(prefix="aelab-bench-"))
    try:
        root = torchvision_root(tmp / "tv")
        matmul = matmul_gflops()
        console.print(f"matmul throughput: {matmul:.1f} GFLOP/s (fp32, 2048^3)")

        ref = reference_vae(root, args.epochs)
        ours = aelab_vae(args.epochs, tmp / "run-vae")
        floor_s = vae_flops_per_image() * ref["images"] / (matmul * 1e9)
        conv_batches = args.conv_batches or None
        ref_conv = reference_conv(root, args.conv_epochs, conv_batches)
        our_conv = aelab_conv(args.conv_epochs, conv_batches, tmp / "run-conv")
        matmul_after = matmul_gflops()
        helps = help_seconds(5)
        (tmp / "work").mkdir()
        first, rss = first_step_and_rss(tmp / "work")
        nll = nll_row(ours["model"], args.nll_k, args.nll_images, max(matmul, matmul_after))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def per_epoch(row: dict, n_images: int) -> float:
        """Median epoch seconds after the warm-up epoch, scaled to n_images per epoch."""
        timed = row["seconds"][1:] or row["seconds"]
        return statistics.median(timed) * n_images / row["images"]

    table = Table(title=f"aelab benchmark, {os.cpu_count()} CPU cores (MLP: {args.epochs} epochs, conv: "
                        f"{args.conv_epochs} x {args.conv_batches or 'all'} batches)")
    for col in ("row", "s / epoch (60k)", "images / s", "test loss", "ratio"):
        table.add_column(col, justify="right" if col != "row" else "left")
    ref_s, our_s = per_epoch(ref, 60000), per_epoch(ours, 60000)
    table.add_row("MLP VAE reference loop", f"{ref_s:.2f}", f"{60000 / ref_s:,.0f}", f"{ref['test_loss']:.2f}", "1.00")
    table.add_row("MLP VAE aelab", f"{our_s:.2f}", f"{60000 / our_s:,.0f}", f"{ours['test_loss']:.2f}",
                  f"{our_s / ref_s:.2f} x ref ({ref_s / our_s:.1f}x faster)")
    table.add_row("MLP VAE compute floor", f"{floor_s:.2f}", f"{60000 / floor_s:,.0f}", "",
                  f"aelab = {our_s / floor_s:.2f} x floor")
    ref_c, our_c = per_epoch(ref_conv, 60000), per_epoch(our_conv, 60000)
    table.add_row("conv AE reference loop", f"{ref_c:.2f}", f"{60000 / ref_c:,.0f}", "", "1.00")
    table.add_row("conv AE aelab", f"{our_c:.2f}", f"{60000 / our_c:,.0f}", "", f"{ref_c / our_c:.2f}x faster")
    console.print(table)

    checks = Table(title="start-up, memory, evaluation")
    for col in ("measure", "value", "target"):
        checks.add_column(col)
    checks.add_row("aelab --help", f"{helps:.2f} s", "< 1.0 s")
    checks.add_row("launch -> first training step", f"{first:.2f} s" if first is not None else "n/a", "< 4 s")
    checks.add_row("peak RSS, MLP VAE run (1 epoch)", f"{rss:,.0f} MB", "< 1,500 MB")
    checks.add_row(f"IS-NLL k={args.nll_k}, {args.nll_images} images", f"{nll['seconds']:.1f} s "
                   f"(matmul bound {nll['bound']:.1f} s = {100 * nll['bound'] / nll['seconds']:.0f}% of bound)",
                   ">= 70% of bound")
    checks.add_row("IS-NLL value (nats / image)", f"{nll['nll']:.2f}", "")
    checks.add_row("matmul GFLOP/s (start, end)", f"{matmul:.1f}, {matmul_after:.1f}", "")
    console.print(checks)


if __name__ == "__main__":
    main()
