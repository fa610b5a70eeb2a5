#!/usr/bin/env python
"""Image folders: streamed from disk every epoch vs decoded once into aelab's cache, side by side in one process.

    python scripts/bench_folder.py            # 5,000 CelebA-sized JPEGs (a few minutes on 2 cores)
    python scripts/bench_folder.py --quick    # 300 JPEGs, a smoke run (well under a minute)

The folder is written first: RGB JPEGs at CelebA's size (178x218) of upsampled noise plus grain, so decoding costs
what a real photo's does. Rows:
  data path: images per second the training split alone delivers (batches of 128, shuffled, as floats on the
    device), streamed (`data.cache=false`, the DataLoader path) vs from the cache; and the one-time cache build.
  epochs: wall time per epoch (training, validation and the epoch checkpoint) of `model=ae arch=mlp
    arch.hidden=[64]` at 32x32 greyscale and `model=ae arch=conv` at 64x64 RGB, streamed vs cached. The first
    epoch includes the setup (listing the files and, for the cache, building it); later epochs are the median.
Everything runs against a temporary $AELAB_DATA_DIR whose folder cache is emptied before each measured build, so
the first cached epoch really builds it. Before the epochs of a model, one short throwaway run times aelab's fast
paths for its shapes (a once-per-machine cost, cached in the data dir), which would otherwise land on whichever
side ran first. Streamed and cached epochs then run in alternating blocks (S C C S ...) so a drift in machine speed
hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

CELEBA_SIZE = (178, 218)  # (width, height) of CelebA's aligned crops
BATCH = 128
MLP = ["model=ae", "arch=mlp", "arch.hidden=[64]", "data.source.size=32", "data.source.channels=1"]
CONV = ["model=ae", "arch=conv", "data.source.size=64", "data.source.channels=3"]


def write_jpeg_folder(root: Path, n: int = 5000, size: tuple[int, int] = CELEBA_SIZE, classes: int = 4,
                      seed: int = 0) -> Path:
    """n RGB JPEGs of `size` (width, height) in `classes` subfolders: smooth upsampled noise plus a little grain."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-8, 9, smooth.shape, dtype=np.int16)  # fine detail: JPEG entropy like a photo's
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{i % classes}" / f"{i:06d}.jpg", quality=90)
    return root


@contextlib.contextmanager
def data_dir_at(path: Path) -> Iterator[Path]:
    """aelab's data dir pointed at `path` for the block: the user's own cache is neither read nor written."""
    old = os.environ.get("AELAB_DATA_DIR")
    os.environ["AELAB_DATA_DIR"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("AELAB_DATA_DIR", None)
        else:
            os.environ["AELAB_DATA_DIR"] = old


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import aelab.sweep.rundirs  # noqa: F401  (registers the resolvers the configs use)

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def folder_trainer(folder: Path, overrides: list[str], run_dir: Path):
    """(trainer, data, setup seconds) of `aelab train data=folder ...`, in-process and with no logger.

    The same construction as scripts/bench.py's aelab_trainer; the setup time is the data's (and the model's) build,
    which for a cached folder without a cache is the cache build.
    """
    from aelab.engine.build import build_trainer
    from aelab.viz.logger import NullLogger

    cfg = compose(["data=folder", f"data.source.path={folder}", "device=cpu", "logger=none", "seed=0",
                   f"batch_size={BATCH}", "epochs=0", *overrides])
    torch.manual_seed(int(cfg.seed))
    start = time.perf_counter()
    trainer, data = build_trainer(cfg, torch.device("cpu"), run_dir)
    trainer.logger = NullLogger()
    return trainer, data, time.perf_counter() - start


def epoch_wall(trainer) -> float:
    """Wall seconds of one more epoch through the engine's fit(): training, validation, checkpoint."""
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the per-epoch progress lines would break up the table
        trainer.fit(epochs=trainer.epoch + 1)
    return time.perf_counter() - start


def without_folder_cache() -> None:
    """Empty the folder cache of the current data dir: the next cached run builds it from nothing."""
    from aelab.data import image_cache

    shutil.rmtree(image_cache.cache_dir(), ignore_errors=True)


def epochs_side_by_side(folder: Path, overrides: list[str], tmp: Path, rounds: int,
                        later: int) -> dict[str, list[float]]:
    """Per side: the first epoch (setup included) of `rounds` fresh trainers, and `later` further epochs of each.

    Sides alternate within and across rounds (S C, C S, ...); each cached trainer starts without a cache.
    """
    warm, _, _ = folder_trainer(folder, [*overrides, "data.cache=false", "trainer.limit_batches=2"], tmp / "warm-up")
    epoch_wall(warm)  # fast-path timing for these shapes: paid here, not by the first side measured
    sides = {"streamed": [*overrides, "data.cache=false"], "cached": overrides}
    out: dict[str, list[float]] = {f"{side} {when}": [] for side in sides for when in ("first", "later")}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        trainers = {}
        for side in order:
            without_folder_cache()
            trainers[side], _, setup = folder_trainer(folder, sides[side], tmp / f"run-{side}-{r}")
            out[f"{side} first"].append(setup + epoch_wall(trainers[side]))
        for k in range(later):
            for side in order if k % 2 else order[::-1]:
                out[f"{side} later"].append(epoch_wall(trainers[side]))
    return out


def data_path_rate(split, epochs: int) -> float:
    """Images per second of one shuffled pass over the split's batches (the floats are touched, as a model would)."""
    rates = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        start, seen = time.perf_counter(), 0
        for batch in split.batches(BATCH, shuffle=True, generator=g):
            seen += len(batch)
            batch.x.sum()
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def build_seconds(folder: Path, overrides: list[str]) -> tuple[float, int, int]:
    """(seconds, images, worker processes) of building the cache from nothing."""
    from aelab.data import build_data, image_cache

    cfg = compose(["data=folder", f"data.source.path={folder}", *overrides])
    without_folder_cache()
    start = time.perf_counter()
    data = build_data(cfg.data, torch.device("cpu"))
    seconds = time.perf_counter() - start
    n = len(data.train) + len(data.val) + len(data.test)
    return seconds, n, image_cache.worker_count(n)


def folder_rows(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """The table's rows (name, value, target): data path, cache build, and epochs at 32 px MLP and 64 px RGB conv."""
    from aelab.data import build_data

    n = 300 if quick else 5000
    rounds, later = (1, 1) if quick else (3, 2)  # medians over rounds x epochs: a shared machine's stalls
    conv_batches = 2 if quick else 12  # conv epochs are compute-bound: a slice of the split shows the loader's share
    folder = write_jpeg_folder(tmp / "jpegs", n)
    rows: list[tuple[str, str, str]] = []

    with data_dir_at(tmp / "data"):
        cpu = torch.device("cpu")
        source = ["data=folder", f"data.source.path={folder}", *MLP]
        streamed = build_data(compose([*source, "data.cache=false"]).data, cpu)
        cached = build_data(compose(source).data, cpu)
        s_rate = data_path_rate(streamed.train, 1 if quick else 2)
        c_rate = data_path_rate(cached.train, 5 if quick else 20)
        images = f"{len(cached.train):,} train images, 32x32"
        rows.append((f"data path, streamed ({images})", f"{s_rate:,.0f} images/s", ""))
        rows.append((f"data path, cached ({images})", f"{c_rate:,.0f} images/s", ""))
        rows.append(("data path, cached / streamed", f"{c_rate / s_rate:,.0f}x", ">= 10x"))
        for label, overrides in (("32x32 grey", MLP), ("64x64 RGB", CONV)):
            seconds, count, workers = build_seconds(folder, overrides)
            processes = f"{workers} process{'es' if workers > 1 else ''}"
            rows.append((f"cache build, {count:,} JPEGs {CELEBA_SIZE[0]}x{CELEBA_SIZE[1]} -> {label} ({processes})",
                         f"{seconds:.2f} s ({count / seconds:,.0f} images/s)", "once per folder and setting"))

        conv = f"conv, 64x64 RGB, {conv_batches} batches of {BATCH}"
        # a partial epoch streams only its own files while the build decodes all: no target for its first epoch
        read = min(conv_batches * BATCH, len(cached.train))
        partial = f"streaming reads {read:,} of {len(cached.train):,} train files, the build all {n:,}"
        models = (("MLP [64], 32x32 grey", MLP, "cached <= streamed"),
                  (conv, [*CONV, f"trainer.limit_batches={conv_batches}"], partial))
        for key, (label, overrides, first_target) in enumerate(models):
            t = {k: statistics.median(v) for k, v in
                 epochs_side_by_side(folder, overrides, tmp / f"runs-{key}", rounds, later).items()}
            rows.append((f"{label}: first epoch (setup, cache build), streamed / cached",
                         f"{t['streamed first']:.2f} s / {t['cached first']:.2f} s", first_target))
            ratio = t["streamed later"] / t["cached later"]
            rows.append((f"{label}: later epochs, streamed / cached",
                         f"{t['streamed later']:.2f} s / {t['cached later']:.2f} s = {ratio:.1f}x", "cached faster"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 images, one later epoch: a smoke run")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="aelab-bench-folder-"))
    try:
        start = time.perf_counter()
        rows = folder_rows(tmp, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"image folders: streamed vs cached, {os.cpu_count()} CPU cores, "
                        f"{torch.get_num_threads()} torch threads ({time.perf_counter() - start:.0f} s)")
    for col in ("measure", "value", "target"):
        table.add_column(col, justify="left" if col != "value" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
