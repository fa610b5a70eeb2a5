#!/usr/bin/env python
"""The gallery: every experiment preset trained with its own settings, its pictures drawn by aelab's commands.

    python scripts/gallery.py                        # every preset -> docs/gallery/ (~40 minutes on 2 shared cores,
                                                     # + ~58, ~47, ~46 and ~43 for beta_tcvae_dsprites,
                                                     # beta_vae_dsprites, factor_vae_dsprites and dip_vae_dsprites,
                                                     # not shortened, and ~25 for joint_vae_dsprites's shape recipe)
    python scripts/gallery.py --only beta_tcvae_dsprites --from-run beta_tcvae_dsprites=<run>  # from its own run
    python scripts/gallery.py --quick --out /tmp/g   # a smoke run of every preset (about 2 minutes)
    python scripts/gallery.py --only vae_2d          # redo one preset (repeatable); the page keeps the others
    python scripts/gallery.py --page                 # only the page again, e.g. after editing a caption

Each preset of conf/experiment/ has one entry in scripts/gallery.yaml: the commands that draw its pictures (`aelab eval` with
views.files=true, `aelab sample`, `aelab interpolate`, `aelab traverse`, `aelab fit-prior`, `aelab report`),
which of their files go to docs/gallery/<preset>/, and one line on what the course teaches with each. The list
of presets comes from the folder, so a new preset without an entry stops the script instead of being skipped.
Every command runs as `python -m aelab ...` in a work folder (a temporary one unless --work) and a nonzero exit
stops the gallery with the command and the end of its output. --quick shrinks every run (1 epoch of 3 batches,
small data, one thread) and runs the commands in this process through aelab's own CLI entry point, which spares
the ~3 s of imports each of the ~100 commands would otherwise pay. The page (docs/gallery/README.md) is written
from the entries and docs/gallery/gallery.json (what each preset's last run took and which commands made what),
so --only redraws one preset and keeps the rest of the page.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS_DIR = REPO / "conf" / "experiment"
DEFAULT_OUT = REPO / "docs" / "gallery"
MAX_BYTES = 300_000  # a committed picture stays below this (PNG or GIF)
UPSCALE_BELOW = 400  # a PNG whose longer side is shorter is enlarged by a whole factor (nearest neighbour: no blur)
EXPLORE_SHOT = "explore.png"  # aelab explore's page (scripts/explore_screenshot.py), shown at the end of the page
GIF_MAX_SIDE = 360  # a GIF larger than MAX_BYTES is scaled down to this side, then loses frames and pixels


class GalleryError(Exception):
    """A mistake in the command line, an entry that does not fit the presets, or a command that failed."""


# ---- the table: one entry per preset --------------------------------------------------------------------
@dataclass(frozen=True)
class Shot:
    """One picture (or table) of the gallery: a file a command writes and what the course teaches with it."""

    file: str  # the file in the command's output folder, e.g. latent_manifold.png
    name: str  # its name in the gallery: <out>/<preset>/<name><suffix of file>
    title: str
    caption: str  # one line: what the course shows with it


@dataclass(frozen=True)
class Step:
    """One aelab command after training. `{run}` in args is the trained run's folder; `{best_run}` the study's job
    with the best mean of its report's y (seed 0)."""

    command: str  # eval | sample | interpolate | traverse | fit-prior | report
    args: tuple[str, ...] = ()
    shots: tuple[Shot, ...] = ()
    quick: tuple[str, ...] = ()  # added under --quick (later keys win)


@dataclass(frozen=True)
class Entry:
    preset: str
    steps: tuple[Step, ...]
    gallery: tuple[str, ...] = ()  # the full run's changes to the preset, where its own size would not fit ~40 min
    why: str = ""  # what those changes are and why, for the page
    quick: tuple[str, ...] = ()  # training overrides of this preset under --quick, after the data's (QUICK_DATA)
    study: bool = False  # a multirun (-m) study: trained into a sweep folder, its report and one traversal shown


# Pictures only: the metrics eval can add (IS-NLL, probes, Fréchet distance, disentanglement) are docs/commands.md's.
EVAL = ("iw_samples=0", "probe.max_train=0", "noise=[]", "generation.samples=0", "disentanglement.enabled=false",
        "tensorboard=false", "views.files=true")
QUICK_TRAIN = ("epochs=1", "trainer.limit_batches=3", "batch_size=32", "trainer.fast_paths=on")
QUICK_DATA = {  # by the preset's dataset: small data of the same kind, so every command (classes, factors) still works
    "mnist": ("data=mnist5k",),  # offline the full MNIST falls back to these 5,000 digits anyway
    "mnist5k": (),
    "dsprites": ("data.subsample=256",),
    "fashion_mnist": (), "toy2d": (),
}
QUICK_STEP = ("threads=1",)  # CI's cores belong to the test workers
STUDY_QUICK = ("hydra.sweeper.params.seed=0", "hydra.sweeper.params.study_arm='beta_vae_4,aae_disentangle'",
               "data.subsample=400", "epochs=1", "threads=1",
               ("sweep_eval.overrides=['iw_samples=0','probe.max_train=0','noise=[]','generation.samples=0',"
                "'num_images=0','tensorboard=false','threads=1','disentanglement.num_train=200',"
                "'disentanglement.num_eval=100','disentanglement.variance_points=200','disentanglement.batch_size=16']"))


TABLE = Path(__file__).with_name("gallery.yaml")  # the entries as data: commands, shots, captions


def load_entries(path: Path = TABLE) -> tuple[Entry, ...]:
    """The entries of gallery.yaml, in its order; "@eval" in a step's args stands for EVAL."""
    import yaml

    def args(values: list[str]) -> tuple[str, ...]:
        return tuple(a for v in values for a in (EVAL if v == "@eval" else (v,)))

    return tuple(
        Entry(preset, tuple(Step(step["command"], args(step.get("args", [])),
                                 tuple(Shot(**shot) for shot in step.get("shots", [])), tuple(step.get("quick", [])))
                            for step in entry["steps"]),
              tuple(entry.get("gallery", [])), entry.get("why", ""), tuple(entry.get("quick", [])),
              bool(entry.get("study", False)))
        for preset, entry in yaml.safe_load(path.read_text()).items())


ENTRIES: tuple[Entry, ...] = load_entries()


# ---- presets and the command line -----------------------------------------------------------------------
def preset_names(folder: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_coverage(entries: tuple[Entry, ...], presets: list[str]) -> None:
    """Every preset has exactly one entry and every entry a preset, else one error naming them."""
    names = [e.preset for e in entries]
    missing = [p for p in presets if p not in names]
    unknown = [n for n in names if n not in presets]
    twice = sorted({n for n in names if names.count(n) > 1})
    problems = ([f"no gallery entry for preset(s) {', '.join(missing)} (add one to ENTRIES in scripts/gallery.py)"]
                if missing else [])
    problems += [f"entries for unknown preset(s) {', '.join(unknown)}"] if unknown else []
    problems += [f"more than one entry for {', '.join(twice)}"] if twice else []
    if problems:
        raise GalleryError("; ".join(problems))


def select(entries: tuple[Entry, ...], only: list[str] | None) -> list[Entry]:
    if not only:
        return list(entries)
    known = {e.preset: e for e in entries}
    wrong = [name for name in only if name not in known]
    if wrong:
        raise GalleryError(f"--only: unknown preset {wrong[0]!r} (one of: {', '.join(sorted(known))})")
    return [known[name] for name in dict.fromkeys(only)]


def preset_data(preset: str) -> str:
    """The dataset a preset trains on (its `override /data:` default; train.yaml's mnist otherwise)."""
    from omegaconf import OmegaConf

    for item in OmegaConf.load(PRESETS_DIR / f"{preset}.yaml").get("defaults", []):
        if isinstance(item, dict) or OmegaConf.is_dict(item):
            for key, value in dict(item).items():
                if key.strip() == "override /data":
                    return str(value)
    return "mnist"


def preset_summary(preset: str) -> str:
    """The preset's header comment (what it is), without the command lines that follow it."""
    lines = []
    for line in (PRESETS_DIR / f"{preset}.yaml").read_text().splitlines():
        if line.startswith("# @package") or not line.startswith("#"):
            if lines:
                break
            continue
        text = line[1:].strip()
        if text.startswith(("aelab ", "\"", "sweep_eval")) or line.startswith("#   "):
            break
        lines.append(text)
    return " ".join(lines).rstrip(":") + ("." if lines and lines[-1].endswith(":") else "")


# ---- running aelab ---------------------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs `aelab <args>` in `cwd`: as a child process, or (in_process) through aelab's CLI entry point here."""

    cwd: Path
    log: Path
    in_process: bool = False
    commands: list[str] = field(default_factory=list)

    def __call__(self, args: list[str]) -> None:
        line = "aelab " + " ".join(shell_quote(a) for a in args)
        self.commands.append(line)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(f"\n$ {line}\n")
            log.flush()
            code = self._in_process(args, log) if self.in_process else subprocess.run(
                [sys.executable, "-m", "aelab", *args], cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False).returncode
        if code != 0:
            tail = "\n".join(self.log.read_text().splitlines()[-25:])
            raise GalleryError(f"`{line}` failed (exit status {code}); the end of its output ({self.log}):\n{tail}")

    def _in_process(self, args: list[str], log) -> int:
        from aelab.cli import main

        argv, cwd = list(sys.argv), os.getcwd()
        try:
            os.chdir(self.cwd)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                main(list(args))
            return 0
        except SystemExit as stop:  # aelab's one-line errors exit 2, Hydra's 1
            return stop.code if isinstance(stop.code, int) else 1
        except Exception as error:  # noqa: BLE001 - whatever broke, the gallery stops and says where
            log.write(f"{type(error).__name__}: {error}\n")
            return 1
        finally:
            os.chdir(cwd)
            sys.argv = argv


def shell_quote(arg: str) -> str:
    """An argument as a shell needs it, kept readable: 'x' unless x holds a single quote, then "x"."""
    if "'" not in arg:
        return shlex.quote(arg)
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def new_dirs(root: Path, before: set[Path]) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_dir() and p not in before)


# ---- one preset ---------------------------------------------------------------------------------------
@dataclass
class Result:
    preset: str
    mode: str
    date: str
    data: str
    train_s: float
    pictures_s: float
    commands: list[str]
    shots: dict[str, str]  # shot name + suffix -> the command line that made it
    settings: str  # the gallery's changes to the preset, in words
    from_run: bool = False  # drawn from the preset's own run, trained outside the gallery (--from-run)

    @property
    def total_s(self) -> float:
        return self.train_s + self.pictures_s


def train_args(entry: Entry, run: Path, quick: bool) -> list[str]:
    args = [f"experiment={entry.preset}", "logger=none"]  # training's TensorBoard views are not the gallery's
    if entry.study:
        args.append(f"hydra.sweep.dir={run}")  # the preset itself is a multirun
        args += list(STUDY_QUICK) if quick else list(entry.gallery)
        return args
    args.append(f"hydra.run.dir={run}")
    if quick:
        args += [*QUICK_TRAIN, *QUICK_DATA[preset_data(entry.preset)], *entry.quick, *QUICK_STEP]
    else:
        args += list(entry.gallery)
    return args


def best_job(sweep: Path, report_dir: Path, y: str) -> Path:
    """The study's job of the arm with the best mean of y (report.csv's bold row), seed 0."""
    rows = list(csv.DictReader((report_dir / "report.csv").open()))
    scored = [(float(r[y].split("±")[0]), r) for r in rows if r.get(y) not in (None, "", "nan")]
    if not scored:
        raise GalleryError(f"{report_dir / 'report.csv'}: no row has a value of {y}")
    arm = max(scored, key=lambda s: s[0])[1]["study_arm"]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and f"study_arm={arm}" in p.name and "seed=0" in p.name)
    if not jobs:
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and f"study_arm={arm}" in p.name)
    if not jobs:
        raise GalleryError(f"{sweep}: no job folder of study_arm={arm}")
    return jobs[0]


def trained_run(entry: Entry, run: Path) -> tuple[float, str]:
    """A run trained outside the gallery (--from-run): its training seconds and its overrides in words. It must be a
    finished run of the preset itself (`aelab train experiment=<preset> ...`), not a study."""
    overrides_file, metrics_file = run / ".hydra" / "overrides.yaml", run / "metrics.json"
    if entry.study:
        raise GalleryError(f"--from-run {entry.preset}: a study preset is drawn from its own sweep, not a given run")
    if not overrides_file.is_file() or not metrics_file.is_file():
        raise GalleryError(f"--from-run {entry.preset}={run}: not a finished aelab run (no .hydra/overrides.yaml "
                           "or metrics.json)")
    overrides = [line[2:].strip() for line in overrides_file.read_text().splitlines() if line.startswith("- ")]
    if f"experiment={entry.preset}" not in overrides:
        raise GalleryError(f"--from-run {entry.preset}={run}: trained with {overrides}, not experiment={entry.preset}")
    metrics = json.loads(metrics_file.read_text())
    extra = [o for o in overrides if o != f"experiment={entry.preset}" and not o.startswith(("hydra.", "logger="))]
    last = {o.split("=", 1)[0]: i for i, o in enumerate(extra)}  # a key given twice: Hydra applies the later value
    extra = [o for i, o in enumerate(extra) if last[o.split("=", 1)[0]] == i]
    command = f"aelab train experiment={entry.preset}{''.join(' ' + o for o in extra)}"
    return float(metrics.get("time/wall_s", metrics.get("time/train_s", 0.0))), command


def make_preset(entry: Entry, work: Path, out: Path, quick: bool, in_process: bool, from_run: Path | None = None) -> Result:
    runner = Runner(work, work / "logs" / f"{entry.preset}.log", in_process)
    started = time.perf_counter()
    if from_run is not None:  # the preset's own run, trained (and timed) outside the gallery
        run = from_run.resolve()
        train_s, trained = trained_run(entry, run)
    else:
        run = work / entry.preset
        shutil.rmtree(run, ignore_errors=True)
        runner(["train", *train_args(entry, run, quick)])
        train_s, trained = time.perf_counter() - started, None
    pictures_started = time.perf_counter()
    target = out / entry.preset
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shots: dict[str, str] = {}
    best: Path | None = None
    for step in entry.steps:
        args = [a.replace("{run}", str(run)) for a in step.args]
        if any("{best_run}" in a for a in args):
            best = best or best_job(run, run / "gallery_report", study_report_args(entry.preset)[0][2:])
            args = [a.replace("{best_run}", hydra_quote(best)) for a in args]
        elif step.command == "report":
            args = [str(run), f"out={run / 'gallery_report'}", *study_report_args(entry.preset), *args]
        else:
            args = [f"run={run}", *args]
        if quick and step.command != "report":
            args += [*step.quick, *QUICK_STEP]
        source_root = best or run
        before = {p for p in source_root.glob("*/*") if p.is_dir()}
        runner([step.command, *args])
        if step.command == "report":
            folder = run / "gallery_report"
        else:
            made = new_dirs(source_root, before)
            folder = made[-1] if made else None
        for shot in step.shots:
            source = None if folder is None else folder / shot.file
            if source is None or not source.is_file():
                raise GalleryError(f"{entry.preset}: `{runner.commands[-1]}` wrote no {shot.file} "
                                   f"(in {folder}); the entry or the command has changed")
            name = shot.name + source.suffix
            copy_small(source, target / name)
            shots[name] = display(runner.commands[-1], work)
    pictures_s = time.perf_counter() - pictures_started
    data = read_data_used(run, entry.study)
    settings = "quick smoke run" if quick else ("" if trained else (entry.why or ""))
    commands = [*([trained] if trained else []), *(display(c, work) for c in runner.commands)]
    return Result(entry.preset, "quick" if quick else "full", dt.datetime.now().strftime("%Y-%m-%d %H:%M"), data,
                  round(train_s, 1), round(pictures_s, 1), commands, shots, settings, from_run=trained is not None)


def hydra_quote(path: Path) -> str:
    """A path as a Hydra value: quoted, since a sweep's job folders are named with `=` and `,`."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def study_report_args(preset: str) -> list[str]:
    """The study's own ranking and columns (its sweep_eval.y and .metrics), for `aelab report`."""
    from omegaconf import OmegaConf

    sweep_eval = OmegaConf.load(PRESETS_DIR / f"{preset}.yaml").get("sweep_eval") or {}
    y = str(sweep_eval.get("y") or "val/recon")
    metrics = list(sweep_eval.get("metrics") or [])
    return [f"y={y}", *([f"metrics=[{','.join(metrics)}]"] if metrics else [])]


def read_data_used(run: Path, study: bool) -> str:
    """What the run really trained on (metrics.json's `data`: e.g. mnist5k when MNIST could not be downloaded)."""
    files = sorted(run.glob("*/metrics.json")) if study else [run / "metrics.json"]
    names = sorted({json.loads(f.read_text()).get("data", "?") for f in files if f.is_file()})
    return ", ".join(names) or "?"


def display(command: str, work: Path) -> str:
    """A command line as the page shows it: the work folder written <work>."""
    return command.replace(str(work), "<work>")


# ---- small pictures -------------------------------------------------------------------------------------
def copy_small(source: Path, target: Path) -> None:
    """Copy a PNG / GIF / table, re-encoded to stay under MAX_BYTES; a picture that cannot is an error."""
    if source.suffix == ".png":
        shrink_png(source, target)
    elif source.suffix == ".gif":
        shrink_gif(source, target)
    else:
        shutil.copyfile(source, target)
    size = target.stat().st_size
    if size >= MAX_BYTES:
        raise GalleryError(f"{target}: {size:,} bytes, the gallery's limit is {MAX_BYTES:,}")


def shrink_png(source: Path, target: Path) -> None:
    from PIL import Image, ImageChops

    image = Image.open(source).convert("RGB")
    factor = -(-UPSCALE_BELOW // max(image.size)) if max(image.size) < UPSCALE_BELOW else 1
    if factor > 1:  # a strip of 28-pixel digits is unreadable on the page at its own size
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    r, g, b = image.split()
    if not ImageChops.difference(r, g).getbbox() and not ImageChops.difference(r, b).getbbox():
        image = r  # grey images (every digit grid) as one channel
    image.save(target, optimize=True)
    for colours, scale in ((256, 1), (64, 1), (64, 2), (32, 3)):  # busy pictures: a palette, then fewer pixels
        if target.stat().st_size < MAX_BYTES:
            return
        smaller = image.resize((image.width // scale, image.height // scale)) if scale > 1 else image
        smaller.convert("RGB").quantize(colours).save(target, optimize=True)


def shrink_gif(source: Path, target: Path) -> None:
    from PIL import Image, ImageSequence

    shutil.copyfile(source, target)
    with Image.open(source) as gif:
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(gif)]
        duration = int(gif.info.get("duration", 80))
    for step, side in ((1, GIF_MAX_SIDE), (2, GIF_MAX_SIDE), (3, 300), (4, 240), (6, 180), (8, 120)):
        if target.stat().st_size < MAX_BYTES:
            return
        kept = frames[::step]
        scale = min(1.0, side / max(kept[0].size))
        kept = [f.resize((max(1, int(f.width * scale)), max(1, int(f.height * scale)))) for f in kept]
        kept = [f.quantize(64) for f in kept]
        kept[0].save(target, save_all=True, append_images=kept[1:], duration=duration * step, loop=0, optimize=True)


# ---- the page ---------------------------------------------------------------------------------------------
def load_manifest(out: Path) -> dict:
    path = out / "gallery.json"
    return json.loads(path.read_text()) if path.is_file() else {"presets": {}}


def save_manifest(out: Path, manifest: dict) -> None:
    (out / "gallery.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown_table(path: Path) -> str:
    """A report.md's first table (a row per setting), after its line saying which row is best."""
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    best = [ln for ln in lines[:start] if ln.startswith(("Highest", "Lowest"))]
    return "\n".join([*best, "", *lines[start:end]]).strip()


def write_page(out: Path, manifest: dict, entries: tuple[Entry, ...]) -> Path:
    runs = manifest.get("runs", {})
    full = runs.get("full")
    lines = ["# Gallery", "",
             ("What every experiment preset of aelab (`conf/experiment/`) produces, drawn by aelab's own commands from "
              "a run trained with the preset's settings. Written by `python scripts/gallery.py` from its table, "
              "`scripts/gallery.yaml`: do not edit by hand; `--only <preset>` redraws one preset. Each picture says "
              "which command made "
              "it (`<work>` is the script's work folder; training ran as `aelab train experiment=<preset> logger=none "
              "hydra.run.dir=<work>/<preset>`)."), ""]
    if full:
        lines += [(f"Last full run: {full['date']}, {minutes(full['seconds'])} wall time for "
                   f"{full['presets']} presets on {full['machine']}."), ""]
    quick = runs.get("quick")
    if quick and (not full or quick["date"] > full["date"]):
        lines += [(f"Last `--quick` smoke run: {quick['date']}, {minutes(quick['seconds'])} for {quick['presets']} "
                   "presets (1 epoch of 3 batches each: the pictures of a quick run show the commands work, not what "
                   "the models learn)."), ""]
    lines += ["| preset | pictures | data used | train | pictures | changed for the gallery |", "|---|---|---|---|---|---|"]
    for entry in entries:
        done = manifest["presets"].get(entry.preset)
        if done is None:
            lines.append(f"| [{entry.preset}](#{entry.preset}) | not drawn yet | | | | |")
            continue
        lines.append(f"| [{entry.preset}](#{entry.preset}) | {len(done['shots'])} | {done['data']} | "
                     f"{minutes(done['train_s'])} | {minutes(done['pictures_s'])} | {done['settings'] or '—'} |")
    lines.append("")
    for entry in entries:
        done = manifest["presets"].get(entry.preset)
        lines += [f"## {entry.preset}", "", preset_summary(entry.preset), ""]
        if done is None:
            lines += [f"Not drawn yet: `python scripts/gallery.py --only {entry.preset}`.", ""]
            continue
        lines.append(f"Trained: `{done['commands'][0]}` ({minutes(done['train_s'])}, {done['mode']} run of "
                     f"{done['date']}; data used: {done['data']}).")
        if done.get("from_run"):
            lines.append("Drawn from the preset's own timed run, trained outside the gallery (`--from-run`): its "
                         "wall time, start-up included, is the figure above.")
        if done["settings"] and done["mode"] == "full":
            lines.append(f"For the gallery: {done['settings']} (the preset's own size would not fit the ~40 minutes "
                         "of a full gallery run on 2 CPU cores).")
        lines.append("")
        for step in entry.steps:
            for shot in step.shots:
                name = next((n for n in done["shots"] if Path(n).stem == shot.name and n.endswith(Path(shot.file).suffix)),
                            None)
                if name is None:
                    continue
                lines += [f"**{shot.title}.** {shot.caption}", ""]
                if name.endswith(".md"):
                    lines += [markdown_table(out / entry.preset / name), ""]
                else:
                    lines += [f"![{shot.title}]({entry.preset}/{name})", ""]
                lines += [f"`{done['shots'][name]}`", ""]
    if (out / EXPLORE_SHOT).is_file():  # not a preset: the live explorer on a trained run, drawn by its own script
        lines += ["## aelab explore", "",
                  ("A trained run's latent space live in the browser (`aelab explore run=<run>`): the test codes by "
                   "class over draws of the prior, the decode under the pointer, a slider per code dimension ordered by "
                   "KL, and the interpolation between two clicked examples (here a 7 becoming a 1). "
                   "See [docs/explore.md](../explore.md)."), "",
                  f"![aelab explore on a 2-D VAE]({EXPLORE_SHOT})", "",
                  "`python scripts/explore_screenshot.py <run>` (headless Chromium)", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


# ---- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the pictures and the page go")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every preset (a few minutes)")
    parser.add_argument("--only", action="append", metavar="PRESET", help="redo this preset only (repeatable)")
    parser.add_argument("--work", type=Path, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--page", action="store_true",
                        help="only write the page again from gallery.json and the entries (after editing a caption)")
    parser.add_argument("--from-run", action="append", metavar="PRESET=RUN", default=[],
                        help="draw PRESET's pictures from RUN, already trained with `aelab train experiment=PRESET` "
                             "(a long preset's own timed run), instead of training it again")
    parser.add_argument("--runner", choices=("auto", "subprocess", "in-process"), default="auto",
                        help="auto: in-process with --quick, else a process per command")
    return parser.parse_args(argv)


def parse_from_runs(given: list[str], chosen: set[str]) -> dict[str, Path]:
    """--from-run PRESET=RUN arguments -> {preset: run}; each preset one the gallery draws this time."""
    runs: dict[str, Path] = {}
    for item in given:
        preset, sep, path = item.partition("=")
        if not sep or not path:
            raise GalleryError(f"--from-run: got {item!r}, expected PRESET=RUN (e.g. beta_tcvae_dsprites=outputs/...)")
        if preset not in chosen:
            raise GalleryError(f"--from-run: {preset!r} is not among the presets drawn now (--only it, or a preset)")
        runs[preset] = Path(path)
    return runs


@contextlib.contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="aelab-gallery-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_coverage(ENTRIES, preset_names())
        chosen = select(ENTRIES, args.only)
        from_runs = parse_from_runs(args.from_run, {e.preset for e in chosen})
    except GalleryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    in_process = args.runner == "in-process" or (args.runner == "auto" and args.quick)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    if args.page:
        print(f"gallery: {write_page(out, manifest, ENTRIES)}")
        return 0
    started = time.perf_counter()
    try:
        with work_folder(args.work) as work:
            for number, entry in enumerate(chosen, 1):
                print(f"[{number}/{len(chosen)}] {entry.preset} ...", flush=True)
                result = make_preset(entry, work, out, args.quick, in_process, from_runs.get(entry.preset))
                manifest["presets"][entry.preset] = result.__dict__
                save_manifest(out, manifest)
                write_page(out, manifest, ENTRIES)
                print(f"    {len(result.shots)} pictures, train {minutes(result.train_s)}, "
                      f"pictures {minutes(result.pictures_s)}", flush=True)
    except GalleryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    if not args.only:  # the page's total is that of a run of every preset
        manifest.setdefault("runs", {})["quick" if args.quick else "full"] = {
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "seconds": round(seconds, 1),
            "presets": len(chosen), "machine": machine()}
        save_manifest(out, manifest)
    page = write_page(out, manifest, ENTRIES)
    print(f"gallery: {len(chosen)} presets in {minutes(seconds)} -> {page}")
    return 0


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), {gpu}"


if __name__ == "__main__":
    sys.exit(main())
