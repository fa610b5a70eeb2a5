"""Exact resume under load: run the SIGTERM and SIGKILL resume tests N times with a busy loop on every core.

    python scripts/stress_resume.py            # 20 rounds of both tests, a spinning process per core
    python scripts/stress_resume.py --rounds 5 --busy 0

Each round is a fresh pytest process with a fresh temporary folder, so every test starts with an empty fast-path
cache: the interrupted run, its resume and the straight run each meet the machine while it is busy, and only
what the run records about its kernels keeps the three computing alike. Prints one line per round and the
counts; exits 1 if any round failed. Slow by design (about a minute per round on 2 busy cores): not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_reliability.py::test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run",
         "tests/test_reliability.py::test_sigterm_saves_a_checkpoint_and_says_how_to_resume"]


def spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="spinning processes (default: one per core)")
    args = parser.parse_args()

    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    passed = {t: 0 for t in TESTS}
    try:
        for i in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory(prefix="aelab-stress-") as tmp:
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                                      f"--basetemp={tmp}/t", "-rf", *TESTS], cwd=REPO, capture_output=True, text=True)
                failed = [t for t in TESTS if f"FAILED {t}" in out.stdout]
                if out.returncode not in (0, 1) or (out.returncode == 1 and not failed):
                    print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
                    failed = TESTS
                for t in TESTS:
                    passed[t] += t not in failed
                names = ", ".join(t.split("::")[1] for t in failed) or "both passed"
                print(f"round {i:2d}/{args.rounds}: {names} ({time.perf_counter() - t0:.0f} s, "
                      f"load average {os.getloadavg()[0]:.1f})", flush=True)
                if failed:
                    print("\n".join(line for line in out.stdout.splitlines() if "assert" in line or "Error" in line)[-2000:])
    finally:
        for p in spinners:
            p.terminate()
    for t in TESTS:
        print(f"{t.split('::')[1]}: {passed[t]} of {args.rounds} passed")
    return 0 if all(v == args.rounds for v in passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
