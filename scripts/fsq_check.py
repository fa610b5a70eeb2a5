#!/usr/bin/env python
"""FSQ against VQ-VAE at the same number of codes, on the same nets and budget (mnist5k, 2 CPU cores).

    python scripts/fsq_check.py                 # three runs of `epochs` epochs each, then the table
    python scripts/fsq_check.py --epochs 10
    python scripts/fsq_check.py --epochs 3 --runs vq_vae,fsq

Runs (all arch=conv arch.channels=[32,64]: a 7x7 grid, Adam 1e-3, batches of 128, seed 0):
  vq_vae   latent_dim=3136 (64-vectors), codebook_size=1000, EMA, restarts: vq_vae_mnist with K = 1000
  fsq      latent_dim=3136 (64-vectors -> 4 lattice channels -> 64), levels [8,5,5,5] = 1000 codes: fsq_mnist
  fsq_196  latent_dim=196: the encoder's 1x1 conv gives the 4 lattice channels itself (the paper's form)
On the test split: reconstruction nats per image (Bernoulli NLL of the decoded code), PSNR of the mean
reconstruction, and over all its 7x7 cells the fraction of the 1000 codes used and the code perplexity. Prints a
table and writes outputs/fsq-check/<time>/fsq_check.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

COMMON = ["data=mnist5k", "arch=conv", "arch.channels=[32,64]", "batch_size=128", "lr=1e-3", "seed=0",
          "logger=none", "device=cpu"]
RUNS = {"vq_vae": ["model=vq_vae", "latent_dim=3136", "model.codebook_size=1000"],
        "fsq": ["model=fsq", "latent_dim=3136", "model.levels=[8,5,5,5]"],
        "fsq_196": ["model=fsq", "latent_dim=196", "model.levels=[8,5,5,5]"]}


@torch.no_grad()
def measure(run: Path) -> dict[str, float]:
    import aelab
    from aelab.models.vq_vae import usage_stats

    loaded = aelab.load_run(run)
    model, test = loaded.model.eval(), loaded.data.test
    nats, sq, n, indices = 0.0, 0.0, 0, []
    for batch in test.batches(500, shuffle=False):
        x = batch.x
        logits = model.decode(model.encode(x))
        nats += float(model.likelihood.nll(logits, x).sum())
        sq += float((model.likelihood.mean(logits) - x).pow(2).flatten(1).mean(1).sum())
        n += len(x)
        indices.append(model.code_indices(x))
    mse = sq / n
    usage = usage_stats(torch.cat(indices), model.codebook_size)
    return {"recon_nats": nats / n, "psnr": 10 * float(torch.log10(torch.tensor(1.0 / mse))),
            "codes_used": usage["codes_used"], "code_perplexity": usage["codebook_perplexity"],
            "codes": model.codebook_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"a comma-separated subset of {', '.join(RUNS)}")
    args = parser.parse_args()
    import aelab

    root = Path("outputs/fsq-check") / time.strftime("%Y-%m-%d_%H-%M-%S")
    results = {}
    for name in args.runs.split(","):
        overrides = RUNS[name]
        start = time.time()
        run = aelab.train([*COMMON, *overrides, f"epochs={args.epochs}", f"hydra.run.dir={root / name}"]).run_dir
        results[name] = {**measure(Path(run)), "train_s": time.time() - start}
        print(name, results[name], flush=True)
    (root / "fsq_check.json").write_text(json.dumps({"epochs": args.epochs, "runs": results}, indent=2) + "\n")
    print(f"\n{'run':<8} {'recon nats':>10} {'PSNR dB':>8} {'codes used':>10} {'perplexity':>10} {'train s':>8}")
    for name, r in results.items():
        print(f"{name:<8} {r['recon_nats']:>10.2f} {r['psnr']:>8.2f} {r['codes_used']:>10.3f} "
              f"{r['code_perplexity']:>10.1f} {r['train_s']:>8.0f}")


if __name__ == "__main__":
    main()
