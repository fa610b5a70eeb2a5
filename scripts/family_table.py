#!/usr/bin/env python
"""Every family on Fashion-MNIST at one budget: the table of docs/families.md, measured again.

    python scripts/family_table.py                         # every family of conf/model/, ~1 minute each on 2 cores
    python scripts/family_table.py --families vae,swae,fsq --epochs 5
    python scripts/family_table.py --print-only             # the table of the runs already made (--out)

Each family trains with `aelab train model=<family> data=fashion_mnist` (the same MLP 784-512-... nets,
latent_dim 16, batch 128, Adam 1e-3, seed 0, `--epochs` epochs; the families that quantise a feature map take
arch=conv, as does vae_gan, whose discriminator's features must keep space) and is then measured by `aelab eval`
on the test split: the importance-sampled NLL on its first 1,000 images (k = 1,000), the linear probe of the codes,
and the Fréchet distance of 10,000 prior draws in the small classifier's feature space (not Inception-FID; see docs/commands.md). The table prints the validation
reconstruction term of the test split in nats per image (the family's own likelihood), those three, and the median seconds per
training epoch. Run it on a quiet machine: s/epoch is a timing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what a family needs beyond the shared setting to be trained on Fashion-MNIST at all (and why)
FAMILY_OVERRIDES: dict[str, list[str]] = {
    "vq_vae": ["arch=conv", "arch.channels=[32,64]", "latent_dim=3136"],  # a 7x7 grid of 64-d codes (the preset's)
    "cat_vae": ["latent_dim=300", "model.categories=10"],  # 30 ten-way variables (cat_vae_mnist)
    "fsq": ["arch=conv", "arch.channels=[32,64]", "latent_dim=3136"],  # the same grid, lattice codes (fsq_mnist)
    "vae_gan": ["arch=conv", "arch.channels=[32,64]"],  # Dis_l needs spatial features: on the MLP the game collapses
}

# rows that are an option of a family rather than a family: name -> the family and its overrides
OPTION_ROWS: dict[str, list[str]] = {
    "iwae:piwae": ["model=iwae", "model.objective=piwae", "model.m=8", "model.k=8"],
    "sparse_ae:topk": ["model=sparse_ae", "model.penalty=topk", "latent_dim=512", "model.k=32", "model.auxk=256"],
}

COLUMNS = [  # (header, metrics key, format)
    ("test recon (nats)", "test/recon|test/elbo_recon", "{:.1f}"),  # iwae's loss has no recon term: its ELBO's
    ("test IS-NLL (k=1000)", "test/nll_iw", "{:.1f}"),
    ("probe acc", "test/probe_accuracy", "{:.3f}"),
    ("Fréchet", "test/frechet_distance", "{:.2f}"),
    ("s/epoch", "time/epoch_s", "{:.1f}"),
]


def families() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


def row_overrides(name: str) -> list[str]:
    """A row's training overrides: `model=<family>` (+ what it needs), or an option row's own."""
    if name in OPTION_ROWS:
        return list(OPTION_ROWS[name])
    return [f"model={name}", *FAMILY_OVERRIDES.get(name, [])]


def run(cmd: list[str], log: Path) -> bool:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode == 0


def measure(family: str, out: Path, epochs: int, threads: str) -> Path:
    run_dir = out / family
    log = out / f"{family}.log"
    if not (run_dir / "metrics.json").is_file():
        ok = run([sys.executable, "-m", "aelab", "train", "data=fashion_mnist", "latent_dim=16", f"epochs={epochs}",
                  "batch_size=128", "lr=1e-3", "seed=0", f"threads={threads}", *row_overrides(family),
                  f"hydra.run.dir={run_dir}"], log)
        if not ok:
            print(f"{family}: training failed (see {log})", file=sys.stderr)
            return run_dir
    if not list(run_dir.glob("eval/*/metrics.json")):
        run([sys.executable, "-m", "aelab", "eval", f"run={run_dir}", "iw_examples=1000", "noise=[]", "num_images=0",
             "tensorboard=false", f"threads={threads}"], log)
    return run_dir


def metrics(run_dir: Path) -> dict[str, float]:
    from aelab.sweep.runs import read_run

    return read_run(run_dir, run_dir.parent).metrics if run_dir.is_dir() else {}


def table(out: Path, names: list[str]) -> str:
    lines = ["| family | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    rows = {}
    for name in names:
        values = metrics(out / name)
        found = {key: next((values[k] for k in key.split("|") if k in values), None) for _, key, _ in COLUMNS}
        rows[name] = found
        cells = ["—" if found[key] is None else fmt.format(found[key]) for _, key, fmt in COLUMNS]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=None,
                        help="comma-separated rows (default: every conf/model/*.yaml and the option rows)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", default="auto", help="torch threads of each run (auto: all cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "family-table")
    parser.add_argument("--print-only", action="store_true", help="print the table of --out, train nothing")
    args = parser.parse_args()
    names = args.families.split(",") if args.families else [*families(), *OPTION_ROWS]
    known = [*families(), *OPTION_ROWS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        sys.exit(f"error: --families: unknown {', '.join(unknown)} (rows: {', '.join(known)})")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.print_only:
        for name in names:
            print(f"{name} ...", flush=True)
            measure(name, args.out, args.epochs, args.threads)
    print(table(args.out, names))


if __name__ == "__main__":
    main()
