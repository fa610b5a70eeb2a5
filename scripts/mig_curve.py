#!/usr/bin/env python
"""MIG against wall time: a dSprites run's weights after every epoch, scored as `aelab eval` scores the last.

    python scripts/mig_curve.py train experiment=beta_tcvae_dsprites      # train, keeping each epoch's weights
    python scripts/mig_curve.py score <run dir>                           # MIG (and the rest) of every epoch

`train` runs `aelab train <overrides>` and, beside it, copies the weights of checkpoints/last.pt each time an epoch
writes it into <run dir>-snapshots/epoch_NNN.pt with the wall seconds since launch (the run itself is untouched:
what it computes is what a plain `aelab train` computes). `score` encodes freshly drawn grid points with each
snapshot's model and prints, per epoch, the wall time and MIG (10,000 points, 20 bins: eval's protocol), plus the
FactorVAE score and DCI disentanglement with --all and each factor's gap (MIG is their mean) with --factors; the
table also goes to <run dir>-snapshots/curve.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def snapshot_dir(run: Path) -> Path:
    return run.parent / f"{run.name}-snapshots"


def train(overrides: list[str]) -> Path:
    """aelab train with a run dir of this script's choosing; snapshots of each epoch's weights beside it."""
    import torch

    dirs = [o for o in overrides if o.startswith("hydra.run.dir=")]
    run = Path(dirs[0].split("=", 1)[1]) if dirs else Path("outputs/mig-curve") / time.strftime("%Y-%m-%d_%H-%M-%S")
    snaps = snapshot_dir(run)
    snaps.mkdir(parents=True, exist_ok=True)
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "aelab", "train", *overrides,
                             *([] if dirs else [f"hydra.run.dir={run}"])])
    seen = None
    while True:
        done = proc.poll() is not None
        last = run / "checkpoints" / "last.pt"
        mtime = last.stat().st_mtime if last.exists() else None
        if mtime is not None and mtime != seen:
            time.sleep(1)  # the write is atomic (a rename), the stat may be a little early
            state = torch.load(last, map_location="cpu", weights_only=False)
            seen = mtime
            epoch = int(state["progress"]["epoch"])
            if int(state["progress"].get("batch_in_epoch", 0)) == 0:  # an epoch's end, not a mid-epoch save
                torch.save({"model": state["model"], "epoch": epoch, "step": state["progress"]["step"],
                            "wall_s": mtime - start}, snaps / f"epoch_{epoch:03d}.pt")
                print(f"epoch {epoch}: weights kept ({mtime - start:.0f} s after launch)", flush=True)
        if done:
            break
        time.sleep(3)
    if proc.returncode:
        sys.exit(proc.returncode)
    return run


def score(run: Path, all_scores: bool, points: int, by_factor: bool = False) -> list[dict]:
    import numpy as np
    import torch

    import aelab
    from aelab.metrics.disentanglement import dci_score, factor_vae_score, mig_gaps_score

    loaded = aelab.load_run(run)
    model, source = loaded.model, loaded.data.factors
    if source is None:
        sys.exit(f"{run}: its data has no known factors (data=dsprites has)")

    def encode(images):
        return model.encode(images.to(model.device)).float()

    rows = []
    for path in sorted(snapshot_dir(run).glob("epoch_*.pt")):
        snap = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(snap["model"])
        model.eval()
        row = {"epoch": snap["epoch"], "step": snap["step"], "wall_min": round(snap["wall_s"] / 60, 2)}
        with torch.no_grad():
            gaps = mig_gaps_score(encode, source, num_points=points, seed=0)  # mig_score is their mean
            row["mig"] = round(float(np.mean(list(gaps.values()))), 4)
            if by_factor:
                row.update({f"gap_{source.names[j]}": round(g, 3) for j, g in gaps.items()})
            if all_scores:
                row["factorvae_score"] = round(factor_vae_score(encode, source, seed=0)["eval_accuracy"], 4)
                row["dci_disentanglement"] = round(dci_score(encode, source, seed=0)["disentanglement"], 4)
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    (snapshot_dir(run) / "curve.json").write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="aelab train <overrides>, keeping each epoch's weights")
    t.add_argument("overrides", nargs="*")
    s = sub.add_parser("score", help="MIG of every kept epoch of a run")
    s.add_argument("run", type=Path)
    s.add_argument("--all", action="store_true", help="also the FactorVAE score and DCI disentanglement")
    s.add_argument("--factors", action="store_true", help="also each factor's gap (the MIG is their mean)")
    s.add_argument("--points", type=int, default=10_000, help="grid points MIG is computed on (eval's 10,000)")
    args = parser.parse_args()
    if args.command == "train":
        train(args.overrides)
    else:
        score(args.run, args.all, args.points, args.factors)


if __name__ == "__main__":
    main()
