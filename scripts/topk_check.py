#!/usr/bin/env python
"""The k-sparse (TopK) autoencoder against the L1 sparse AE at equal code size, and AuxK's effect on dead latents.

    python scripts/topk_check.py                       # Fashion-MNIST, latent 512, 2 epochs each (~10 min on 2 cores)
    python scripts/topk_check.py --epochs 5 --out outputs/topk-check

Trains four runs with `aelab train` (the same arch, data, code size, epochs and seed): `sparse_ae` with the L1
penalty (beta 0.01, the sparse_ae_l1 preset's weight), TopK k=32 without AuxK, TopK k=32 with AuxK (k_aux 256,
alpha 1/32: experiment=topk_sae), and the same with model.standardize=false (the pre-activations ranked as the
encoder gives them: most latents never fire). Then `aelab eval` on each test split, and prints one table: the linear-probe
and 5-NN accuracy of the codes, the reconstruction (recon_bce, psnr), the fraction of code entries that are
nonzero (active_fraction) and the dead-latent fractions (topk: units that fired on none of the 5,000 diagnostic
test examples, and over the last model.dead_after training examples). The table also goes to <out>/table.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

KEYS = ("probe_accuracy", "knn_accuracy", "recon_bce", "psnr", "active_fraction", "dead_fraction",
        "dead_fraction_train")


def arms(latent: int, k: int) -> dict[str, list[str]]:
    common = [f"latent_dim={latent}", "model=sparse_ae"]
    return {"l1": [*common, "model.penalty=l1", "beta=0.01"],
            "topk": [*common, "model.penalty=topk", f"model.k={k}", "model.auxk=0"],
            "topk_auxk": ["experiment=topk_sae", f"latent_dim={latent}", f"model.k={k}"],
            "topk_auxk_unstandardized": ["experiment=topk_sae", f"latent_dim={latent}", f"model.k={k}",
                                         "model.standardize=false"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--probe-train", type=int, default=5000, help="training codes the probes are fitted on")
    parser.add_argument("--out", type=Path, default=Path("outputs/topk-check"))
    args = parser.parse_args()
    table = {}
    for name, overrides in arms(args.latent, args.k).items():
        run = args.out / name
        if not (run / "checkpoints" / "last.pt").exists():  # a rerun reuses the trained arms
            subprocess.run([sys.executable, "-m", "aelab", "train", *overrides, f"data={args.data}",
                            f"epochs={args.epochs}", "logger=none", f"hydra.run.dir={run}"], check=True,
                           stdout=subprocess.DEVNULL)
        train_s = json.loads((run / "metrics.json").read_text()).get("time/train_s")
        subprocess.run([sys.executable, "-m", "aelab", "eval", f"run={run}", "iw_samples=0", "noise=[]",
                        "tensorboard=false", "generation.samples=0", f"probe.max_train={args.probe_train}"],
                       check=True, stdout=subprocess.DEVNULL)
        evals = sorted((run / "eval").glob("*/metrics.json"))
        metrics = json.loads(evals[-1].read_text())
        flat = metrics.get("metrics", metrics)
        table[name] = {k: flat.get(f"test/{k}") for k in KEYS} | {"train_s": train_s}
        print(name, table[name], flush=True)
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    print(f"\n| arm | {' | '.join(KEYS)} | train_s |\n|---|{'---|' * (len(KEYS) + 1)}")
    for name, row in table.items():
        cells = ["" if row[k] is None else f"{row[k]:.4g}" for k in (*KEYS, "train_s")]  # train_s: under load too
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
