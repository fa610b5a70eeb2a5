"""The commands, each declared once: its name as typed and its one line of help. Everything else follows from the
name: its module `aelab/commands/<name>.py` (a `run(cfg)` and the `main` Hydra calls), its config
`conf/<name>.yaml` (its keys and defaults: the one place they are declared), its check
`aelab.config_check.check_<name>` (run once by the pre-check before any work: each key typed by its YAML default,
plus the ranges, choices and rules across keys the defaults cannot say), and its place in `aelab --help`. A new
command is one line here plus those three.

Torch- and Hydra-free: `aelab --help` reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str  # as typed: `aelab fit-prior`
    help: str  # one line for `aelab --help`

    @property
    def config(self) -> str:
        """Its config (conf/<config>.yaml), module (aelab/commands/<config>.py) and check (check_<config>)."""
        return self.name.replace("-", "_")

    @property
    def module(self) -> str:
        return f"aelab.commands.{self.config}"


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("train", "train a model: aelab train model=vae latent_dim=2"),
    Command("eval", "measure a trained run on a split: aelab eval run=outputs/<date>/<time>_vae"),
    Command("sample", "decode draws from the prior: aelab sample run=outputs/<date>/<time>_vae n=64"),
    Command("interpolate", "walk the latent space between two images: aelab interpolate run=<run> from=0 to=1"),
    Command("traverse", "latent traversals, a row per code dimension: aelab traverse run=<run> steps=10"),
    Command("fit-prior", "fit a density to a run's training codes: aelab fit-prior run=<run> prior=gmm components=10"),
    Command("report", "tabulate the runs under a folder, seeds as mean ± std: aelab report multirun/<date>/<time>"),
    Command("encode", "the code of every example as codes.npy/.csv: aelab encode run=<run> data=csv data.path=new.csv"),
    Command("reconstruct", "reconstruct new images under their own names: aelab reconstruct run=<run> data=folder "
            "data.source.path=in/ out=out/"),
    Command("score", "per-example anomaly scores and a flag: aelab score run=<run> data=csv data.path=new.csv"),
    Command("export", "encoder and decoder as standalone files: aelab export run=<run> format=torchscript"),
    Command("explore", "the latent space live in the browser (a local server): aelab explore run=<run>"),
)}
