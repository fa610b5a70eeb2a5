#!/usr/bin/env python
"""Does the IAF posterior buy likelihood? vae_iaf against the diagonal VAE on the same nets, data, budget and seed.

    python scripts/flow_check.py                       # mnist5k, 10 epochs, seed 0
    python scripts/flow_check.py --epochs 5 --seeds 0 1 --data fashion_mnist

Both runs are experiment=vae_iaf_mnist (MLP 512-256, 32-D code, batches of 100, Adam 1e-3); the baseline sets
model.flows=0 model.context_dim=0, which is exactly the diagonal Gaussian VAE (same encoder and decoder sizes but
the context's outputs). Each is scored as `aelab eval` scores it: the test split's -ELBO and importance-sampled NLL
(k = --iw-samples) under the model's own posterior. Prints a table and writes it to <out>/flow_check.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("outputs/flow_check"))
    args = parser.parse_args()

    from aelab.commands import eval as eval_command
    from aelab.commands import train
    from aelab.precheck import compose_checked  # the config as the CLI composes and checks it (one run each)

    variants = {"vae (flows=0)": ["model.flows=0", "model.context_dim=0"], "vae_iaf (flows=2)": []}
    rows = []
    for seed in args.seeds:
        for label, extra in variants.items():
            run = args.out / f"{label.split()[0]}_seed{seed}"
            overrides = ["experiment=vae_iaf_mnist", f"data={args.data}", f"epochs={args.epochs}", f"seed={seed}",
                         "logger=none", "device=cpu", *extra]
            start = time.time()
            trained = train.run(compose_checked("train", overrides)[0], run, overrides)
            train_s = time.time() - start
            scoring = [f"run={run}", "device=cpu", f"iw_samples={args.iw_samples}", "probe.max_train=0", "noise=[]",
                       "tensorboard=false", "num_images=0", "generation.samples=0"]
            scored = eval_command.run(compose_checked("eval", scoring)[0])
            rows.append({"model": label, "seed": seed, "val/loss": trained["val/loss"],
                         "test/neg_elbo": scored["test/neg_elbo"], "test/nll_iw": scored["test/nll_iw"],
                         "train_s": round(train_s, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'model':<20}{'seed':>5}{'-ELBO':>10}{'IS-NLL':>10}{'train s':>9}")
    for r in rows:
        print(f"{r['model']:<20}{r['seed']:>5}{r['test/neg_elbo']:>10.2f}{r['test/nll_iw']:>10.2f}{r['train_s']:>9}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flow_check.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
