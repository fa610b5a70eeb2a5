"""scripts/bench.py keeps working: its quick mode prints every table (the full run is a manual job)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs Debian's dataset-fashion-mnist (installed by .ci/run)")
def test_bench_quick_prints_every_row() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick"], capture_output=True,
                         text=True, timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("MLP VAE reference loop", "MLP VAE aelab", "MLP VAE compute floor", "conv AE aelab",
                "torch's matmul (MKL) instead of oneDNN", "launch -> first training step", "IS-NLL k=50"):
        assert row in out.stdout, row
