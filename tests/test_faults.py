"""A full disk, an unwritable output and a kill mid-write never cost a user a run or a traceback.

A full disk is simulated by failing every write to files of chosen names with ENOSPC (the `full_disk` fixture),
once for real on a small tmpfs (where the machine lets a test mount one), and a kill mid-write by a real SIGKILL
of a subprocess held just before its file would be renamed into place.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aelab.commands import encode, eval as eval_cmd, export, fit_prior, reconstruct, report, sample, score, train
from aelab.commands._common import run_command
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.errors import UserError
from conftest import TINY, cli_env

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


class _FullFile:
    """An open file whose every write fails as on a full disk."""

    def __init__(self, file, path: str) -> None:
        self._file, self._path = file, path

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, NO_SPACE, self._path)

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


class FullDisk:
    """full_disk("*last.pt*", after=1): writes to files whose names match fail with ENOSPC (after the first
    `after` of them succeed); clear() frees the space again."""

    def __init__(self) -> None:
        self.patterns: dict[str, int] = {}

    def __call__(self, pattern: str, after: int = 0) -> None:
        self.patterns[pattern] = after

    def clear(self) -> None:
        self.patterns.clear()

    def hits(self, file, mode: str) -> bool:
        if not isinstance(file, (str, bytes, os.PathLike)) or not any(c in mode for c in "wax+"):
            return False
        name = os.path.basename(os.fsdecode(file))
        for pattern, after in self.patterns.items():
            if fnmatch.fnmatch(name, pattern):
                self.patterns[pattern] = after - 1
                return after <= 0
        return False


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    disk, real_open = FullDisk(), builtins.open

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return _FullFile(handle, os.fsdecode(file)) if disk.hits(file, mode) else handle

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # pathlib and TensorBoard's file layer open through io
    return disk


def _exits_with_one_line(task: Callable[[], object], capsys, interrupted: Callable[[], str] | None = None) -> str:
    with pytest.raises(SystemExit) as stop:
        run_command(task, interrupted=interrupted)
    err = capsys.readouterr().err
    assert stop.value.code == 1, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained VAE (images) whose files the tests below must never damage."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    run = tmp_path_factory.mktemp("faults") / "run"
    overrides = [*TINY, "model=vae", "latent_dim=2", "epochs=1"]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    train.run(cfg, run, overrides)
    return run


# ---- a full disk -------------------------------------------------------------------------------
def test_a_full_disk_at_a_checkpoint_is_one_line_the_last_one_intact_and_resume_works(
        compose_cfg, tmp_path, full_disk, capsys) -> None:
    overrides = [*TINY, "model=vae", "epochs=3"]
    full_disk("*last.pt*", after=1)  # epoch 1's checkpoint is written; epoch 2's meets a full disk
    line = _exits_with_one_line(lambda: train.run(compose_cfg(overrides), tmp_path, overrides), capsys,
                                lambda: train._resume_hint(tmp_path))
    last = checkpoint_path(tmp_path)
    assert line.startswith(f"error: could not write checkpoint {last}: {NO_SPACE}")
    assert line.endswith(f"continue from the last checkpoint with: aelab train resume={tmp_path}")
    assert load_checkpoint(last)["progress"]["epoch"] == 1  # the last good checkpoint, whole
    assert not [p.name for p in last.parent.iterdir() if p.name.startswith(".")], "no temporary file left"

    full_disk.clear()  # space freed
    resumed = train.run(compose_cfg([f"resume={tmp_path}"]), tmp_path, [f"resume={tmp_path}"])
    assert resumed["epochs"] == 3 and load_checkpoint(last)["progress"]["epoch"] == 3


def test_a_full_disk_under_tensorboard_events_is_one_line(compose_cfg, tmp_path, full_disk, capsys) -> None:
    overrides = [*TINY, "model=ae", "epochs=2", "logger=tensorboard"]
    full_disk("*events.out.tfevents*")
    line = _exits_with_one_line(lambda: train.run(compose_cfg(overrides), tmp_path, overrides), capsys)
    assert line.startswith(f"error: could not write TensorBoard events in {tmp_path}: {NO_SPACE}")


def test_a_cache_that_cannot_be_written_is_said_once_and_the_run_goes_on(compose_cfg, tmp_path, full_disk,
                                                                           caplog) -> None:
    from aelab import files
    from aelab.nets.fastpath import FAST_PATHS

    files._unwritable_said.discard("fast-path cache")
    full_disk("*fastpaths.json*")
    overrides = [*TINY, "model=vae", "epochs=1", "trainer.fast_paths=retune"]
    with caplog.at_level(logging.WARNING, logger="aelab.files"):
        result = train.run(compose_cfg(overrides), tmp_path, overrides)
    said = [r.getMessage() for r in caplog.records if "fast-path cache" in r.getMessage()]
    assert result["epochs"] == 1 and len(said) == 1 and NO_SPACE in said[0]
    FAST_PATHS.configure("auto")


def test_a_data_cache_that_cannot_be_written_still_gives_the_data(tmp_path, full_disk, monkeypatch, caplog) -> None:
    import gzip

    import numpy as np

    from aelab import files
    from aelab.data.idx import read_idx

    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "cache"))
    files._unwritable_said.discard("decoded data cache")
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + np.array(array.shape, dtype=">i4").tobytes() + array.tobytes()))
    full_disk("*.npy*")
    with caplog.at_level(logging.WARNING, logger="aelab.files"):
        for _ in range(2):
            assert np.array_equal(read_idx(path), array)
    assert len([r for r in caplog.records if "decoded data cache" in r.getMessage()]) == 1  # said once
    assert not list((tmp_path / "cache").rglob("*.npy")) and not list((tmp_path / "cache").rglob(".*"))


def test_a_full_disk_is_refused_before_a_run_starts(tmp_path, full_disk) -> None:
    from aelab.precheck import compose_checked

    full_disk("probe")  # the folder fits, a file does not: Hydra's own config files would fail with a traceback
    with pytest.raises(UserError) as error:
        compose_checked("train", [f"hydra.run.dir={tmp_path}/run"])
    assert error.value.key == "hydra.run.dir" and NO_SPACE in error.value.problem


def test_a_log_file_that_cannot_be_written_is_said_once(tmp_path, capsys) -> None:
    from aelab.commands._common import quiet_log_file_errors

    handler = logging.FileHandler(tmp_path / "train.log")
    handler.stream = _FullFile(handler.stream, str(tmp_path / "train.log"))
    logging.getLogger().addHandler(handler)
    try:
        quiet_log_file_errors()
        for i in range(3):
            logging.getLogger("aelab.test").warning("record %d", i)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err.count(f"warning: could not write the log {tmp_path / 'train.log'}: {NO_SPACE}") == 1
    assert "Traceback" not in err and "Logging error" not in err


WRITES = [  # command, its module, extra keys, the file that meets the full disk, what the line calls it
    ("eval", eval_cmd, [], "*metrics.json*", "metrics"),
    ("sample", sample, ["n=4"], "*samples.png*", "picture"),
    ("encode", encode, [], "*codes.npy*", "codes"),
    ("reconstruct", reconstruct, ["out={tmp}/recon"], "*.png*", "reconstruction"),
    ("score", score, ["out={tmp}/scores.csv"], "*scores.csv*", "table"),
    ("export", export, [], "*encoder.pt*", "exported encoder"),
    ("fit_prior", fit_prior, ["components=2"], "*gmm.pt*", "fitted prior"),
]


@pytest.mark.parametrize("command, module, extra, pattern, what", WRITES, ids=[w[0] for w in WRITES])
def test_a_full_disk_under_a_commands_output_is_one_line_and_the_run_is_untouched(
        trained, compose_cfg, tmp_path, full_disk, capsys, command, module, extra, pattern, what) -> None:
    before = {p: p.stat().st_mtime_ns for p in (trained / "checkpoints").iterdir()}
    full_disk(pattern)
    keys = [f"run={trained}", *(e.format(tmp=tmp_path) for e in extra)]
    line = _exits_with_one_line(lambda: module.run(compose_cfg(keys, config_name=command)), capsys)
    assert line.startswith(f"error: could not write {what} ") and line.endswith(NO_SPACE), line
    assert {p: p.stat().st_mtime_ns for p in (trained / "checkpoints").iterdir()} == before
    half = [p for p in trained.rglob(pattern.rstrip("*")) if p.stat().st_size == 0]
    assert not half, f"half-written files under their real names: {half}"


def _unshare_prefix() -> list[str] | None:
    """A private mount namespace this test may mount a tmpfs in (root, or an unprivileged user namespace)."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return None
    for prefix in (["unshare", "--mount", "--propagation", "private"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def test_a_really_full_tmpfs_stops_training_in_one_line_and_resume_works_once_space_is_freed(tmp_path) -> None:
    """The whole path for real: a 16 MB tmpfs holds epoch 1 (last.pt and best.pt, 6.4 MB each) but not epoch 2's
    new last.pt beside them; after a remount with room, resume= finishes the run."""
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("this machine lets no test mount a tmpfs (no unshare, or no permission)")
    mount = tmp_path / "small"
    mount.mkdir()
    run = mount / "run"
    aelab = f"{sys.executable} -m aelab train"
    script = f"""
set -u
mount -t tmpfs -o size=16m tmpfs {mount}
{aelab} data=synthetic model=vae epochs=3 device=cpu logger=none hydra.run.dir={run} > {tmp_path}/first.out 2> {tmp_path}/first.err
echo $? > {tmp_path}/first.rc
cp {run}/checkpoints/last.pt {tmp_path}/kept.pt
mount -o remount,size=64m {mount}
{aelab} resume={run} > {tmp_path}/resumed.out 2> {tmp_path}/resumed.err
echo $? > {tmp_path}/resumed.rc
cp {run}/metrics.json {tmp_path}/metrics.json
"""
    subprocess.run([*prefix, "sh", "-c", script], env=cli_env(tmp_path), cwd=tmp_path, timeout=300, check=True)
    err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", err
    assert "Traceback" not in err
    assert f"error: could not write checkpoint {run}/checkpoints/last.pt: {NO_SPACE}" in err
    assert f"aelab train resume={run}" in err
    assert load_checkpoint(tmp_path / "kept.pt")["progress"]["epoch"] == 1  # epoch 1's checkpoint, whole
    assert (tmp_path / "resumed.rc").read_text().strip() == "0", (tmp_path / "resumed.err").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 3


# ---- output paths checked before any work ------------------------------------------------------------
def test_an_output_that_cannot_be_created_is_one_line_before_any_work(trained, tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "aelab", "reconstruct", f"run={trained}", "out=/proc/forbidden/x"],
                         cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: out: cannot create /proc/forbidden/x")
    assert not list((trained / "reconstruct").glob("*/*"))  # nothing computed, nothing written


@pytest.mark.parametrize("command, module, key, target", [
    ("reconstruct", reconstruct, "out", "{run}/checkpoints"),
    ("reconstruct", reconstruct, "out", "{file}/inside"),
    ("score", score, "out", "{run}/metrics.json"),
])
def test_an_output_among_the_runs_files_or_under_a_file_is_refused(trained, compose_cfg, tmp_path, command, module,
                                                                   key, target) -> None:
    (tmp_path / "a_file").write_text("")
    path = target.format(run=trained, file=tmp_path / "a_file")
    with pytest.raises(UserError) as error:
        module.run(compose_cfg([f"run={trained}", f"{key}={path}"], config_name=command))
    assert error.value.key == key


def test_a_run_folder_that_cannot_be_written_is_refused_before_any_work(trained, compose_cfg, monkeypatch) -> None:
    import tempfile

    from aelab.engine import measure as engine_measure

    real = tempfile.mkdtemp

    def read_only(*args, dir=None, **kwargs):  # noqa: A002  (tempfile's name)
        if dir is not None and trained.resolve() in (Path(dir).resolve(), *Path(dir).resolve().parents):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(engine_measure, "measure", lambda *a, **k: pytest.fail("eval measured before refusing"))
    with pytest.raises(UserError) as error:
        eval_cmd.run(compose_cfg([f"run={trained}"], config_name="eval"))
    assert error.value.key == "run" and "Read-only file system" in error.value.problem
    from aelab.commands.session import open_run

    with open_run(compose_cfg([f"run={trained}"], config_name="explore"), "explore", writes=False) as session:
        assert session.model is not None  # a command that writes nothing still opens a read-only run
    with pytest.raises(UserError) as error:
        report.run(compose_cfg([f"dir={trained.parent}", f"out={trained}"], config_name="report"))
    assert error.value.key == "out"


    from aelab.precheck import compose_checked

    with pytest.raises(UserError) as error:  # resuming it would train, then fail at its first checkpoint
        compose_checked("train", [f"resume={trained}"])
    assert error.value.key == "resume" and "Read-only file system" in error.value.problem


# ---- killed mid-write ---------------------------------------------------------------------------------
HELD = """
import os, pathlib, sys, time
real, name, marker = os.replace, sys.argv[1], pathlib.Path(sys.argv[2])
def held(src, dst):
    if pathlib.Path(dst).name == name:  # written whole under its temporary name: the worst moment to die
        marker.touch()
        time.sleep(600)
    return real(src, dst)
os.replace = held
from aelab.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("name, args, previous", [
    ("scores.csv", ["score", "out={tmp}/scores.csv"], "the previous scores\n"),
    ("codes.npy", ["encode"], None),
])
def test_killed_mid_write_leaves_the_previous_file_or_none(trained, tmp_path, name, args, previous) -> None:
    target = tmp_path / name if previous is not None else None
    if target is not None:
        target.write_text(previous)
    marker = tmp_path / "held"
    argv = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.Popen([sys.executable, "-c", HELD, name, str(marker), argv[0], f"run={trained}", *argv[1:]],
                            cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the write was never reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if target is not None:
        assert target.read_text() == previous  # the complete previous file
    else:
        assert not [p for p in trained.rglob(name)], "nothing under the name a user reads"
    # (fit-prior, export and checkpoints write through the same atomic_path: tested above for a full disk)


def test_an_os_error_no_writer_names_is_still_one_line_with_the_path(capsys) -> None:
    def unnamed() -> None:  # e.g. a library writing (or reading) a file aelab does not wrap
        raise OSError(errno.ENOSPC, NO_SPACE, "/some/where/file.bin")

    line = _exits_with_one_line(unnamed, capsys)
    assert line == f"error: /some/where/file.bin: {NO_SPACE}"
