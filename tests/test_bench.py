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
    # a choice timed on the benchmark's own shapes: listed whether or not a busy machine let it be cached
    assert "linear 128x784x400 train" in out.stdout


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


def test_peer_bench_without_pythae_says_how_to_install_it() -> None:
    """`bench.py --peer` on a machine without pythae (CI's): one line naming the install, before any work."""
    code = ("import runpy, sys; sys.modules['pythae'] = None; sys.argv = ['bench.py', '--peer', '--quick']; "
            f"sys.path.insert(0, {str(REPO / 'scripts')!r}); runpy.run_path({str(REPO / 'scripts' / 'bench.py')!r}, "
            "run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "pip install --no-deps pythae==0.1.2" in out.stderr and "Traceback" not in out.stderr


def test_peer_bench_scores_pythaes_iwae_by_its_bound() -> None:
    """pythae's IWAE loss is -(sum w~ log w), a lower number than the bound it follows: the bench scores the bound,
    which at k = 1 is the one-draw ELBO, log p(x|z) + log p(z) - log q(z|x)."""
    pytest.importorskip("pythae")
    import math

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "scripts"))
    import bench_peer

    torch.manual_seed(0)
    model = bench_peer.pythae_model("iwae", {"k": 5})
    x = torch.rand(8, 1, 28, 28).round()
    torch.manual_seed(1)
    one = bench_peer.iw_bound(model, x, 1)
    torch.manual_seed(1)
    enc = model.encoder(x)
    mu, log_var = enc.embedding, enc.log_covariance
    z = mu + torch.randn(1, *mu.shape)[0] * (0.5 * log_var).exp()
    probs = model.decoder(z).reconstruction.reshape(8, -1)
    log_px = -F.binary_cross_entropy(probs, x.reshape(8, -1), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_qz = (-0.5 * ((z - mu).pow(2) / log_var.exp() + log_var) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(one, log_px + log_pz - log_qz, atol=1e-3)
