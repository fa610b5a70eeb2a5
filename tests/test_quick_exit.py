"""The `aelab` process's quick exit (aelab/quick_exit.py): what Python's shutdown is for still happens, the rest
is skipped only on success and only where no tracer or profiler waits for the interpreter to finish.

Each case runs in an interpreter of its own: exiting is what is tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# An atexit handler and a non-daemon thread that both write a file late, and an object whose finalizer prints
# only if the interpreter is torn down object by object (a module global: freed at module teardown).
PROGRAM = """
import atexit, sys, threading, time
from pathlib import Path
from aelab.quick_exit import exit_quickly

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("ran")
threading.Thread(target=late).start()
from concurrent.futures import ThreadPoolExecutor
POOL = ThreadPoolExecutor(1)  # an idle worker left running: joined only after the pool is told to stop
POOL.submit(print, end="")
class Noisy:
    def __del__(self):
        print("teardown", flush=True)
NOISY = Noisy()
print("partial line", end="")  # unflushed: the quick exit must flush it
code = sys.argv[2]
exit_quickly(None if code == "none" else int(code) if code.lstrip("-").isdigit() else code)
"""


def run_program(tmp_path: Path, code: str, *runner: str) -> subprocess.CompletedProcess:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    return subprocess.run([sys.executable, *runner, str(script), str(tmp_path), code], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("code", ["0", "none"])
def test_success_joins_threads_runs_handlers_flushes_and_skips_teardown(tmp_path: Path, code: str) -> None:
    done = run_program(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread").read_text() == "ran"  # joined, as Python's shutdown joins it
    assert (tmp_path / "atexit").read_text() == "ran"
    assert done.stdout == "partial line"  # flushed, and no finalizer ran: the teardown was skipped


@pytest.mark.parametrize("code, expected", [("2", 2), ("message", 1)])
def test_failure_exits_the_usual_way(tmp_path: Path, code: str, expected: int) -> None:
    done = run_program(tmp_path, code)
    assert done.returncode == expected
    assert (tmp_path / "thread").exists() and (tmp_path / "atexit").exists()
    if code == "message":
        assert "message" in done.stderr  # sys.exit's own handling of a str code


def test_a_profiler_gets_the_usual_exit(tmp_path: Path) -> None:
    """`python -m cProfile -o F -m aelab ...` writes F after the command returns: it must return."""
    done = run_program(tmp_path, "0", "-m", "cProfile", "-o", str(tmp_path / "profile.out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "profile.out").stat().st_size > 0


def test_aelab_train_exits_quickly_with_its_files_complete(tmp_path: Path) -> None:
    """The real command through `python -m aelab`: return code, final table, metrics and TensorBoard events whole."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "aelab", "train", "data=synthetic", "model=ae", "epochs=1",
                           "device=cpu", "threads=1", "logger=tensorboard", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TensorBoard:" in done.stdout  # the last line the command prints
    assert (run_dir / "metrics.json").read_text().strip().endswith("}")
    events = EventAccumulator(str(next(run_dir.glob("events.out.tfevents.*"))))
    events.Reload()
    assert "val/loss" in events.Tags()["scalars"]
    assert (run_dir / "train.log").read_text().strip()
