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
                "every fast path off (torch's plain ops)", "linear: oneDNN (others auto)", "fast-path choices made",
                "launch -> first training step", "-epoch MLP VAE run, whole process", "IS-NLL k=50",
                "image folders: streamed", "data path"):
        assert row in out.stdout, row
    assert "linear 128x784x400 train" in out.stdout  # a choice timed on the benchmark's own shapes


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs Debian's Fashion-MNIST (installed by .ci/run)")
def test_gpu_bench_runs_every_path_on_the_cpu() -> None:
    """`bench.py --device cuda` is run where a GPU is lent: every path it takes (textbook loops, bf16 autocast,
    torch.compile, the folder at 64x64 RGB, FLOP counting) runs here on the CPU, small."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--device", "cpu", "--quick"],
                         capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("textbook loop, fp32", "aelab, fp32", "aelab, bf16", "aelab, fp32, compiled", "conv VAE 64x64 RGB",
                "FLOPs per image"):
        assert row in out.stdout, row
