#!/usr/bin/env python
"""GPU benchmark: aelab's training step against the textbook loop on the same device, with bf16 autocast and
torch.compile each on and off, images per second, peak device memory and the compute floor.

    python scripts/bench.py --device cuda           # the whole table (under 8 minutes on one GPU)
    python scripts/bench_gpu.py --device cuda       # the same table alone
    python scripts/bench_gpu.py --device cpu --quick   # every code path on the CPU, a few steps each (the tests)

Models (batch 128): the MLP VAE 784-400-20 and the course's conv VAE (32-64-128-256, latent 24) on Fashion-MNIST
at 28x28, and the conv VAE at 64x64 RGB on a folder of written JPEGs (through aelab's folder cache, in memory on
the device). For each: the textbook loop (torchvision dataset + DataLoader, batches moved to the device, fp32
eager: the PyTorch examples' loop), then aelab's `Trainer.train_step` on the same batches with
trainer.precision=fp32|bf16 and trainer.compile=false|true. The compute floor is a training step's FLOPs
(counted by torch.utils.flop_counter on aelab's step) over the device's measured matmul throughput at that
precision: images/s no implementation of this model can beat on this device.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

BATCH = 128
PRECISIONS = ("fp32", "bf16")


# ---- the textbook conv VAE, for any image size ----------------------------------------------
class TextbookConvVAE(nn.Module):
    """The course's conv stack written the textbook way (NCHW, plain nn): stride-2 conv + BatchNorm + LeakyReLU
    blocks, a Gaussian code, transposed convs landing on the input size; BCE with logits + KL, summed per image."""

    def __init__(self, channels: int, size: int, latent: int = 24, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        blocks, c, sizes = [], channels, [size]
        for w in widths:
            blocks += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c, sizes = w, [*sizes, (sizes[-1] - 1) // 2 + 1]
        self.start = (widths[-1], sizes[-1], sizes[-1])
        self.encoder = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(math.prod(self.start), 2 * latent))
        self.project = nn.Sequential(nn.Linear(latent, math.prod(self.start)), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        outs = [*widths[::-1][1:], channels]
        for i, (c_in, c_out) in enumerate(zip(widths[::-1], outs)):
            pad = sizes[-2 - i] - (2 * sizes[-1 - i] - 1)
            last = i == len(widths) - 1
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.decoder = nn.Sequential(*layers)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder(self.project(z).view(-1, *self.start))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        return (bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


class TextbookMLPVAE(bench.TextbookVAE):
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return bench.vae_loss(self, x) / len(x)


# ---- what is measured -------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    overrides: list[str]  # aelab's model (the data comes from `data`)
    textbook: Callable[[], nn.Module]
    data: str  # "fashion" | "folder64"
    rows: list[tuple[str, float, float]] = field(default_factory=list)  # (variant, images/s, peak MB)
    flops: float = 0.0  # per image, one training step


def cases(quick: bool) -> list[Case]:
    conv = ["model=vae", "arch=conv", "latent_dim=24"] + (["arch.channels=[8,16]"] if quick else [])
    widths = (8, 16) if quick else (32, 64, 128, 256)
    return [
        Case("MLP VAE 28x28", ["model=vae", "arch=mlp", "arch.hidden=[400]", "latent_dim=20"], TextbookMLPVAE,
             "fashion"),
        Case("conv VAE 28x28", conv, lambda: TextbookConvVAE(1, 28, widths=widths), "fashion"),
        Case("conv VAE 64x64 RGB", conv, lambda: TextbookConvVAE(3, 64, widths=widths), "folder64"),
    ]


def sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """Sustained throughput of n x n x n products at dtype on the device (TF32 left at torch's default: off)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = sync_for(device)
    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        reps += 10
        sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def loader_of(case: Case, tv_root: Path, folder: Path):
    """The textbook data pipeline: a torchvision dataset of PIL images with ToTensor, shuffled batches of 128."""
    from torchvision import datasets, transforms

    if case.data == "fashion":
        dataset = datasets.FashionMNIST(str(tv_root), train=True, download=False, transform=transforms.ToTensor())
    else:
        dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose(
            [transforms.Resize((64, 64)), transforms.ToTensor()]))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                                       persistent_workers=True)


def textbook_rate(case: Case, device: torch.device, loader, warm: int, steps: int) -> tuple[float, float]:
    """images/s of the textbook loop (data loading included, as the loop runs it) and its peak memory."""
    torch.manual_seed(0)
    model = case.textbook().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync, done, t0 = sync_for(device), 0, 0.0
    reset_peak(device)
    batches = iter(loader)
    for i in range(warm + steps):
        try:
            x, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, _ = next(batches)
        if i == warm:
            sync()
            t0 = time.perf_counter()
        x = x.to(device, non_blocking=True)
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
        done += len(x) if i >= warm else 0
    sync()
    return done / (time.perf_counter() - t0), peak_mb(device)


def aelab_rate(case: Case, device: torch.device, data_overrides: list[str], precision: str, compiled: bool,
               run_dir: Path, warm: int, steps: int) -> tuple[float, float]:
    """images/s of aelab's training step (data already in device memory, as aelab keeps it) and peak memory."""
    reset_peak(device)
    trainer, data = bench.aelab_trainer(
        [*data_overrides, *case.overrides, f"batch_size={BATCH}", "lr=1e-3", f"device={device.type}", "logger=none",
         "seed=0", "epochs=1", f"trainer.precision={precision}", f"trainer.compile={str(compiled).lower()}"], run_dir)
    generator = torch.Generator().manual_seed(0)
    batches: list = []
    while len(batches) < warm + steps:
        batches += [b for b in data.train.batches(BATCH, shuffle=True, generator=generator) if len(b) == BATCH]
    sync = sync_for(device)
    for batch in batches[:warm]:  # compilation, kernel selection, fast-path timing
        trainer.train_step(batch)
    sync()
    t0 = time.perf_counter()
    for batch in batches[warm:warm + steps]:
        trainer.train_step(batch)
    sync()
    return steps * BATCH / (time.perf_counter() - t0), peak_mb(device)


def step_flops(case: Case, device: torch.device, data_overrides: list[str], run_dir: Path) -> float:
    """FLOPs of one fp32 training step per image, counted on aelab's model (forward, backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer, data = bench.aelab_trainer([*data_overrides, *case.overrides, f"batch_size={BATCH}",
                                         f"device={device.type}", "logger=none", "epochs=1",
                                         "trainer.precision=fp32", "trainer.fast_paths=off"], run_dir)
    batch = next(iter(data.train.batches(BATCH, shuffle=False)))
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return counter.get_total_flops() / len(batch)


@contextlib.contextmanager
def workspace():
    tmp = Path(tempfile.mkdtemp(prefix="aelab-gpu-bench-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fashion_for_torchvision(tmp: Path, quick: bool) -> Path:
    """torchvision's FashionMNIST layout; --quick keeps 2,048 training images (the loaders' start is then quick)."""
    root = bench.torchvision_root(tmp / "tv")
    if quick:
        raw = root / "FashionMNIST" / "raw"
        for name, header, item in (("train-images-idx3-ubyte", 16, 784), ("train-labels-idx1-ubyte", 8, 1)):
            data = (raw / name).read_bytes()
            count = (2048).to_bytes(4, "big")
            (raw / name).write_bytes(data[:4] + count + data[8:header] + data[header:header + 2048 * item])
    return root


def run(device_name: str, quick: bool) -> tuple[list[Case], dict[str, float]]:
    """Every case and variant, measured in this order: the textbook loop, then aelab eager, then compiled."""
    from bench_folder import write_jpeg_folder

    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    warm, steps = (2, 3) if quick else (15, 60)
    throughput = {p: matmul_tflops(device, torch.float32 if p == "fp32" else torch.bfloat16,
                                   512 if quick else 8192, 0.2 if quick else 2.0) for p in PRECISIONS}
    measured = cases(quick)
    with workspace() as tmp:
        tv_root = fashion_for_torchvision(tmp, quick)
        folder = write_jpeg_folder(tmp / "jpegs", n=300 if quick else 2000, size=(96, 96) if quick else (178, 218))
        data_for = {
            "fashion": ["data=fashion_mnist", "data.source.download=false",
                        f"data.val_fraction={0.01 if quick else 0.0002}"]  # ~12 validation images of 60k
                       + ([f"data.source.root={tv_root}"] if quick else []),
            "folder64": ["data=folder", f"data.source.path={folder}", "data.source.size=64", "data.source.channels=3",
                         "data.val_fraction=0.01", "data.test_fraction=0.01"],
        }
        for i, case in enumerate(measured):
            overrides = data_for[case.data]
            case.flops = step_flops(case, device, overrides, tmp / f"flops-{i}")
            loader = loader_of(case, tv_root, folder)
            rate, mem = textbook_rate(case, device, loader, warm, steps)
            case.rows.append(("textbook loop, fp32", rate, mem))
            del loader
            for compiled in (False, True):
                for precision in PRECISIONS:
                    if quick and compiled and (i > 0 or precision != "fp32"):
                        continue  # --quick compiles one model once: compiling on 2 CPU cores takes half a minute
                    rate, mem = aelab_rate(case, device, overrides, precision, compiled,
                                           tmp / f"run-{i}-{precision}-{compiled}", warm + (3 if compiled else 0), steps)
                    case.rows.append((f"aelab, {precision}{', compiled' if compiled else ''}", rate, mem))
    return measured, throughput


def table(measured: list[Case], throughput: dict[str, float], device_label: str):
    from rich.table import Table

    out = Table(title=f"aelab on {device_label}: training images/s, batch {BATCH} (matmul: "
                      + ", ".join(f"{p} {t:.3g} TFLOP/s" for p, t in throughput.items()) + ")")
    for col in ("model", "variant", "images / s", "vs textbook", "peak memory", "floor images / s", "% of floor"):
        out.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for case in measured:
        textbook = case.rows[0][1]
        for variant, rate, mem in case.rows:
            precision = "bf16" if "bf16" in variant else "fp32"
            floor = throughput[precision] * 1e12 / case.flops
            out.add_row(case.name, variant, f"{rate:,.0f}", f"{rate / textbook:.2f}x",
                        "n/a" if math.isnan(mem) else f"{mem:,.0f} MB", f"{floor:,.0f}", f"{100 * rate / floor:.1f}%")
        out.add_row(case.name, "FLOPs per image (train step)", f"{case.flops / 1e6:.1f} M", "", "", "", "")
    return out


def device_label(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the GPU table) or cpu (every path, for the tests)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each, small models: a smoke run")
    args = parser.parse_args(argv)
    if not bench.DEBIAN_DIR.is_dir():
        sys.exit("needs Debian's Fashion-MNIST: apt-get install dataset-fashion-mnist")
    from rich.console import Console

    measured, throughput = run(args.device, args.quick)
    Console(width=160).print(table(measured, throughput, device_label(args.device)))


if __name__ == "__main__":
    main()
