#!/usr/bin/env python
"""aelab against pythae, the peer a careful user would pick instead: the same four models on the same data.

    python scripts/bench.py --peer            # this table (about 12 minutes on 2 cores)
    python scripts/bench.py --peer --quick    # a smoke run of every row (about 3 minutes)
    pip install -e '.[bench]' && pip install --no-deps pythae==0.1.2   # once (why --no-deps: pyproject.toml)

Both sides train the same objective with the same nets on the same images:
  data       aelab's Fashion-MNIST split (55,000 train / 5,000 validation / 10,000 test, Debian's files), exported once
             to an .npz that the pythae script loads (the fastest a pythae user could load it);
  nets       encoder 784-512 ReLU -> (mu, log-variance) of 16, decoder 16-512 ReLU-784 (Bernoulli: aelab's decoder
             gives logits, pythae's a sigmoid, its documented way);
  models     VAE; IWAE k=5; VampPrior, 50 pseudo-inputs; WAE-MMD (IMQ kernel at the same 7 scales, lambda 100,
             deterministic encoder; pythae's WAE is given the Bernoulli term aelab's uses, `BernoulliWAE`);
  training   Adam 1e-3, batch 128, 2 threads, validation after every epoch on both sides.
Each run is a fresh process, timed whole: `aelab train ...` as a user types it (its default TensorBoard logger,
checkpoints) against a pythae script a user would write (BaseTrainer, which saves its best and final models). The
two sides alternate, ABBA, so the machine's drift hits both alike. Reported per model:
  loop       training-loop images/s: the median training epoch of each run (the first epoch included, as a user
             waits through it), 55,000 images over the seconds of the loop alone;
  process    wall seconds of the whole process of the run;
  test loss  each side's own objective (the two are the same) on the 10,000 test images, mean over images,
             computed after the runs by this script with each library's own loss code;
  validation aelab's end-of-epoch validation (loss terms, diagnostics, TensorBoard's pictures) as a share of
             its epochs' time, every epoch counted (the first, which pays for first-time set-up, too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
HIDDEN, LATENT = 512, 16
COMMON = ["data=fashion_mnist", "data.source.download=false", "arch=mlp", f"arch.hidden=[{HIDDEN}]",
          f"latent_dim={LATENT}", "batch_size=128", "lr=1e-3", "device=cpu", f"threads={THREADS}"]


@dataclass(frozen=True)
class PeerModel:
    """One model both libraries have: aelab's overrides and pythae's model (built by `pythae_model`)."""

    name: str
    aelab: list[str]
    pythae: str
    extra: dict = field(default_factory=dict)


MODELS = [
    PeerModel("VAE", ["model=vae"], "vae"),
    PeerModel("IWAE k=5", ["model=iwae", "model.k=5"], "iwae", {"k": 5}),
    PeerModel("VampPrior K=50", ["model=vamp", "model.pseudo_inputs=50"], "vamp", {"components": 50}),
    PeerModel("WAE-MMD", ["model=wae", "model.lambda_mmd=100", "model.kernel=imq", "model.encoder=deterministic"],
              "wae", {"lambda": 100.0}),
]


# ---- the data: aelab's split, exported once ---------------------------------------------------
def export_split(path: Path) -> None:
    """aelab's Fashion-MNIST train/val/test split as uint8 arrays (exact: the pixels are k/255)."""
    from hydra import compose, initialize_config_module

    from aelab.data import build_data

    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=COMMON)
    data = build_data(cfg.data, torch.device("cpu"))
    arrays = {}
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        x = s.head(len(s)).x.reshape(len(s), 1, 28, 28)
        arrays[split] = torch.round(x * 255).to(torch.uint8).numpy()
    np.savez(path, **arrays)


def load_split(path: Path, split: str) -> torch.Tensor:
    return torch.from_numpy(np.load(path)[split]).float().div_(255)


# ---- pythae's side ------------------------------------------------------------------------------
def pythae_model(kind: str, extra: dict):
    """pythae's model of `kind` on the benchmark's nets (a pythae user's custom encoder/decoder)."""
    import torch.nn.functional as F
    from pythae.models import IWAE, VAE, VAMP, IWAEConfig, VAEConfig, VAMPConfig, WAE_MMD, WAE_MMD_Config
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU())
            self.mu, self.log_var = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

        def forward(self, x):
            h = self.hidden(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(z.shape[0], 1, 28, 28))

    class BernoulliWAE(WAE_MMD):
        """pythae's WAE-MMD with the Bernoulli reconstruction term (summed BCE) in place of its squared error."""

        def loss_function(self, recon_x, x, z, z_prior):
            _, _, mmd = super().loss_function(recon_x, x, z, z_prior)
            recon = F.binary_cross_entropy(recon_x.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1),
                                           reduction="none").sum(dim=-1)
            return (recon + self.model_config.reg_weight * mmd).mean(dim=0), recon.mean(dim=0), mmd

    common = dict(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    if kind == "vae":
        return VAE(VAEConfig(**common), encoder=Encoder(), decoder=Decoder())
    if kind == "iwae":
        return IWAE(IWAEConfig(**common, number_samples=extra["k"]), encoder=Encoder(), decoder=Decoder())
    if kind == "vamp":
        return VAMP(VAMPConfig(**common, number_components=extra["components"]), encoder=Encoder(), decoder=Decoder())
    if kind == "wae":
        config = WAE_MMD_Config(input_dim=(1, 28, 28), latent_dim=LATENT, kernel_choice="imq", kernel_bandwidth=1.0,
                                reg_weight=extra["lambda"])
        return BernoulliWAE(config, encoder=Encoder(), decoder=Decoder())
    raise ValueError(kind)


def pythae_run(data: Path, kind: str, extra: dict, epochs: int, out: Path, seed: int) -> None:
    """The pythae user's script (its documented TrainingPipeline, validation each epoch); the loop's seconds per
    epoch, timed around BaseTrainer.train_step, go to out."""
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    train, val = load_split(data, "train"), load_split(data, "val")
    model = pythae_model(kind, extra)
    config = BaseTrainerConfig(output_dir=str(out / "pythae"), num_epochs=epochs, learning_rate=1e-3,
                               per_device_train_batch_size=128, per_device_eval_batch_size=128, optimizer_cls="Adam",
                               no_cuda=True, seed=seed)
    loop: list[float] = []
    train_step = BaseTrainer.train_step

    def timed(self, epoch: int):
        t0 = time.perf_counter()
        loss = train_step(self, epoch)
        loop.append(time.perf_counter() - t0)
        return loss

    BaseTrainer.train_step = timed
    TrainingPipeline(training_config=config, model=model)(train_data=train, eval_data=val)
    torch.save(model.state_dict(), out / "pythae_final.pt")
    (out / "pythae_loop.json").write_text(json.dumps(loop))


@torch.no_grad()
def pythae_test_loss(data: Path, kind: str, extra: dict, weights: Path) -> float:
    model = pythae_model(kind, extra)
    model.load_state_dict(torch.load(weights))
    model.eval()
    x, total = load_split(data, "test"), 0.0
    torch.manual_seed(0)
    for i in range(0, len(x), 1000):
        batch = x[i:i + 1000]
        if kind == "iwae":
            total += float(-iw_bound(model, batch, extra["k"]).sum())
        else:
            total += float(model({"data": batch}, epoch=1, dataset_size=len(x), uses_ddp=False).loss) * len(batch)
    return total / len(x)


def iw_bound(model, x: torch.Tensor, k: int) -> torch.Tensor:  # (B,)
    """The k-sample importance-weighted bound of a pythae IWAE, log (1/k) sum_i w_i. pythae's IWAE reports
    -(sum_i w~_i log w_i) as its loss: the same gradient as the bound, but a value lower by log k - H(w~) (up to
    1.6 nats at k = 5), so its own loss is not the number aelab's iw_nll is compared with."""
    import math

    import torch.nn.functional as F

    enc = model.encoder(x)
    mu, log_var = enc.embedding, enc.log_covariance  # (B, D)
    z = mu + torch.randn(k, *mu.shape) * (0.5 * log_var).exp()  # (k, B, D)
    probs = model.decoder(z.reshape(-1, z.shape[-1])).reconstruction.reshape(k, x.shape[0], -1)
    log_px = -F.binary_cross_entropy(probs, x.reshape(1, x.shape[0], -1).expand_as(probs), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_qz = (-0.5 * ((z - mu).pow(2) / log_var.exp() + log_var) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)


# ---- aelab's side ---------------------------------------------------------------------------------
def aelab_command(model: PeerModel, epochs: int, run_dir: Path, seed: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "aelab", "train", *COMMON, *model.aelab, f"epochs={epochs}", f"seed={seed}",
            f"hydra.run.dir={run_dir}", *extra]


def aelab_results(run_dir: Path) -> tuple[list[float], float, float]:
    """The run's loop seconds per epoch (from its checkpoint), its test loss (its own objective, mean) and the
    share of its epochs' time spent in end-of-epoch validation (loss terms, diagnostics, pictures), all epochs
    summed: the first one, which pays for first-time set-up, included."""
    import aelab
    from aelab.engine.measure import mean_terms

    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    loop, val = list(state["progress"]["epoch_seconds"]), list(state["progress"]["val_seconds"])
    run = aelab.load_run(run_dir)
    torch.manual_seed(0)
    terms = mean_terms(run.model, run.data.test, 1000)
    return loop, float(sum(terms.values())), sum(val) / (sum(loop) + sum(val))


# ---- the table --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch, one round, for a smoke run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="runs per side and model, in ABBA order")
    parser.add_argument("--models", default=",".join(m.pythae for m in MODELS), help="vae,iwae,vamp,wae")
    parser.add_argument("--aelab-args", default="", help="extra aelab overrides for every aelab run (A/B of a setting)")
    parser.add_argument("--pythae-worker", nargs=5, metavar=("DATA", "KIND", "EXTRA", "EPOCHS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pythae_worker:
        data, kind, extra, epochs, out = args.pythae_worker
        pythae_run(Path(data), kind, json.loads(extra), int(epochs), Path(out), seed=0)
        return
    try:
        import pythae  # noqa: F401
    except ImportError:
        sys.exit("the peer table needs pythae: pip install -e '.[bench]' && pip install --no-deps pythae==0.1.2")
    if args.quick:
        args.epochs, args.rounds = 1, 1
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    chosen = [m for m in MODELS if m.pythae in args.models.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="aelab-peer-"))
    env = {**os.environ, "AELAB_DATA_DIR": str(tmp / "data-dir"), "OMP_NUM_THREADS": str(THREADS)}
    os.environ["AELAB_DATA_DIR"] = env["AELAB_DATA_DIR"]
    data = tmp / "split.npz"
    export_split(data)
    # warm the aelab data cache and the fast-path choices once, as any second run on a machine finds them
    subprocess.run(aelab_command(MODELS[0], 1, tmp / "warm", 0, ["trainer.limit_batches=5", "logger=none"]),
                   cwd=tmp, env=env, check=True, capture_output=True)
    extra = args.aelab_args.split() if args.aelab_args else []
    results: dict[str, dict[str, list]] = {}
    for model in chosen:
        res = results[model.name] = {"aelab_loop": [], "pythae_loop": [], "aelab_s": [], "pythae_s": [],
                                     "aelab_loss": [], "pythae_loss": [], "aelab_val_share": []}
        for r in range(args.rounds):
            order = ["aelab", "pythae"] if r % 2 == 0 else ["pythae", "aelab"]
            for side in order:
                out = tmp / f"{model.pythae}-{side}-{r}"
                out.mkdir()
                if side == "aelab":
                    cmd = aelab_command(model, args.epochs, out / "run", r, extra)
                else:
                    cmd = [sys.executable, __file__, "--pythae-worker", str(data), model.pythae,
                           json.dumps(model.extra), str(args.epochs), str(out)]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - t0
                if proc.returncode:
                    sys.exit(f"{side} {model.name} failed:\n{proc.stderr[-3000:]}")
                if side == "aelab":
                    loop, loss, val_share = aelab_results(out / "run")
                    res["aelab_val_share"].append(val_share)
                else:
                    loop = json.loads((out / "pythae_loop.json").read_text())
                    loss = pythae_test_loss(data, model.pythae, model.extra, out / "pythae_final.pt")
                res[f"{side}_loop"].append(statistics.median(loop))
                res[f"{side}_s"].append(seconds)
                res[f"{side}_loss"].append(loss)
                console.print(f"  {model.name:<15} {side:<6} round {r}: loop {statistics.median(loop):.2f} s/epoch, "
                              f"process {seconds:.1f} s, test loss {loss:.2f}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    from importlib.metadata import version

    table = Table(title=f"aelab {version('aelab')} vs pythae {version('pythae')}, torch {torch.__version__}, {THREADS} threads, {args.epochs} epochs x {args.rounds} runs per side (ABBA), "
                        f"Fashion-MNIST 55,000 train images, MLP 784-{HIDDEN}-{LATENT}, batch 128"
                        + (f"; aelab {' '.join(extra)}" if extra else ""))
    for col in ("model", "loop images/s aelab", "pythae", "loop ratio", f"{args.epochs}-epoch process aelab",
                "pythae", "process ratio", "test loss aelab", "pythae", "gap",
                "aelab validation share"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, res in results.items():
        a_ips, p_ips = 55000 / med(res["aelab_loop"]), 55000 / med(res["pythae_loop"])
        a_s, p_s = med(res["aelab_s"]), med(res["pythae_s"])
        a_l, p_l = statistics.mean(res["aelab_loss"]), statistics.mean(res["pythae_loss"])
        table.add_row(name, f"{a_ips:,.0f}", f"{p_ips:,.0f}", f"{a_ips / p_ips:.2f}x", f"{a_s:.1f} s", f"{p_s:.1f} s",
                      f"{p_s / a_s:.2f}x", f"{a_l:.2f}", f"{p_l:.2f}", f"{100 * (a_l - p_l) / p_l:+.2f}%",
                      f"{100 * med(res['aelab_val_share']):.0f}%")
    console.print(table)


if __name__ == "__main__":
    main()
