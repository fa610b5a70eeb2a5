"""`aelab <command> [overrides]`: pick the command, check the overrides, hand argv to Hydra.

Kept light on purpose: `aelab --help` must not import torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "train a model: aelab train model=vae latent_dim=2",
    "eval": "measure a trained run on a split: aelab eval run=outputs/<date>/<time>_vae",
    "sample": "decode draws from the prior: aelab sample run=outputs/<date>/<time>_vae n=64",
    "interpolate": "walk the latent space between two images: aelab interpolate run=<run> from=0 to=1",
    "traverse": "latent traversals, a row per code dimension: aelab traverse run=<run> steps=10",
    "fit-prior": "fit a density to a run's training codes: aelab fit-prior run=<run> prior=gmm components=10",
    "report": "tabulate the runs under a folder, seeds as mean ± std: aelab report multirun/<date>/<time>",
    "encode": "the code of every example as codes.npy/.csv: aelab encode run=<run> data=csv data.path=new.csv",
    "reconstruct": "reconstruct new images under their own names: aelab reconstruct run=<run> data=folder data.source.path=in/ out=out/",
    "score": "per-example anomaly scores and a flag: aelab score run=<run> data=csv data.path=new.csv",
    "export": "encoder and decoder as standalone files: aelab export run=<run> format=torchscript",
    "explore": "the latent space live in the browser (a local server): aelab explore run=<run>",
}

# Hydra flags that print or configure instead of running: hand them over unchecked.
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
               "--version", "--resolve", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun"}

USAGE = """usage: aelab <command> [key=value ...] [-m] [--help] [--cfg job]

aelab trains and explores autoencoders; configs are Hydra YAML (conf/), every
option is an override like latent_dim=2.

commands:
{commands}

examples:
  aelab train model=vae latent_dim=2                 # -> outputs/<date>/<time>_vae/
  aelab train -m model=ae,vae latent_dim=2,8         # a sweep -> multirun/<date>/<time>/
  aelab report multirun/<date>/<time>                # the sweep as one table, report.md/csv, a plot
  aelab eval run=outputs/<date>/<time>_vae
  tensorboard --logdir outputs

`aelab <command> --help` lists that command's config groups and keys.
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()))


def report_dir_override(args: list[str]) -> list[str]:
    """`aelab report <dir>` -> `dir='<dir>'`: the first bare word (or existing folder, whose job names hold
    `=` and `,`) becomes the quoted Hydra key."""
    from pathlib import Path

    for i, arg in enumerate(args):
        if not arg.startswith("-") and ("=" not in arg or Path(arg).is_dir()):
            quoted = arg.replace("\\", "\\\\").replace("'", "\\'")
            return [*args[:i], f"dir='{quoted}'", *args[i + 1 :]]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] == "--version":
        from aelab import __version__

        print(f"aelab {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: command: unknown command {command!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        sys.exit(2)
    if command == "report":
        rest = report_dir_override(rest)
    command = command.replace("-", "_")  # fit-prior -> aelab/commands/fit_prior.py, conf/fit_prior.yaml
    if not HYDRA_FLAGS.intersection(a.split("=", 1)[0] for a in rest):
        from aelab.precheck import precheck

        precheck(command, rest)
    module = importlib.import_module(f"aelab.commands.{command}")
    sys.argv = [f"aelab {command}", *rest]
    module.main()


if __name__ == "__main__":
    main()
