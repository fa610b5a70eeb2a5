"""The `aelab` console script as a user runs it, offline: real subprocesses for the exit path, and the many bad
command lines that only reach the pre-check in-process (same code path up to the point Hydra would start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import cli_env, model_names


def aelab(*args: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aelab", *args], cwd=cwd, env=cli_env(cwd),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands(tmp_path) -> None:
    out = aelab("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("train", "eval", "sample", "interpolate"):
        assert command in out.stdout


def test_command_help_and_cfg_are_hydras(tmp_path) -> None:
    helped = aelab("train", "--help", cwd=tmp_path)
    families = "model: " + ", ".join(model_names())  # conf/model/ is the registry: every family, new ones too
    assert helped.returncode == 0 and families in helped.stdout and "arch: burgess_conv, conv, mlp" in helped.stdout
    cfg = aelab("train", "model=ae", "latent_dim=3", "--cfg", "job", cwd=tmp_path)
    assert cfg.returncode == 0 and "_target_: aelab.models.ae.AE" in cfg.stdout and "latent_dim: 3" in cfg.stdout
    assert not (tmp_path / "outputs").exists()


def _psnr_by_hand(run: Path) -> float:
    """Mean PSNR (dB, pixels in [0, 1]) of the run's reconstructions of its test split: 10 log10(1 / MSE)."""
    import torch

    from aelab.data import build_data
    from aelab.engine.loading import load_trained

    loaded = load_trained(run)
    test = build_data(loaded.config.data, torch.device("cpu")).test
    with torch.no_grad():
        x = test.head(len(test)).x.float()  # (N, 1, 16, 16)
        mse = (loaded.model.reconstruct(x).clamp(0, 1) - x).pow(2).flatten(1).mean(1)  # (N,)
    return float((10 * torch.log10(1 / mse)).mean())


def test_train_then_eval_sample_interpolate(tmp_path) -> None:
    out = aelab("train", "data=synthetic", "model=vae", "latent_dim=2", "epochs=2", "device=cpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    runs = list((tmp_path / "outputs").glob("*/*_vae"))
    assert len(runs) == 1
    run = runs[0]
    assert f"tensorboard --logdir {run.resolve()}" in out.stdout.replace("\n", " ")
    assert list(run.glob("events.out.tfevents.*")) and (run / ".hydra" / "config.yaml").is_file()
    training_files = sorted(p.name for p in run.iterdir())

    ev = aelab("eval", f"run={run}", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(next(run.glob("eval/*/metrics.json")).read_text())
    assert metrics["data"] == "synthetic"
    assert metrics["test/loss"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"])
    assert metrics["test/psnr"] == pytest.approx(_psnr_by_hand(run), rel=1e-4)

    sa = aelab("sample", f"run={run}", "n=16", cwd=tmp_path)
    assert sa.returncode == 0, sa.stderr
    assert next(run.glob("sample/*/samples.png")).is_file() and next(run.glob("sample/*/latent_grid.png")).is_file()

    it = aelab("interpolate", f"run={run}", "from=2", "to=5", "steps=6", "method=slerp", cwd=tmp_path)
    assert it.returncode == 0, it.stderr
    assert next(run.glob("interpolate/*/interpolation.gif")).stat().st_size > 0

    # the commands wrote beside the training files, never over them
    assert sorted(p.name for p in run.iterdir()) == sorted([*training_files, "eval", "sample", "interpolate"])


def test_multirun_sweeps_into_one_folder_per_job(tmp_path) -> None:
    out = aelab("train", "-m", "model=ae,vae", "data=synthetic", "epochs=1", "logger=none", "device=cpu",
                "trainer.limit_batches=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    jobs = sorted(p.name for p in (tmp_path / "multirun").glob("*/*/*") if p.is_dir())
    assert len(jobs) == 2 and any("model=ae" in j for j in jobs) and any("model=vae" in j for j in jobs)
    assert len(list((tmp_path / "multirun").glob("*/*/*/metrics.json"))) == 2


def test_resume_from_the_command_line(tmp_path) -> None:
    first = aelab("train", "data=synthetic", "model=ae", "epochs=1", "logger=none", "device=cpu", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = next((tmp_path / "outputs").glob("*/*_ae"))
    again = aelab("train", f"resume={run}", "epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert (run / ".hydra" / "overrides.yaml").read_text().count("resume") == 0  # original record kept
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1  # no new run folder


BAD_COMMAND_LINES = [
    (["train", "model=foo"], "model"),
    (["train", "latent_dim=0"], "latent_dim"),
    (["train", "latnet_dim=2"], "latnet_dim"),
    (["train", "beta=-1"], "beta"),
    (["train", "noise=-0.1"], "noise"),
    (["train", "epochs=-1"], "epochs"),
    (["train", "batch_size=0"], "batch_size"),
    (["train", "lr=0"], "lr"),
    (["train", "device=tpu"], "device"),
    (["train", "data=nope"], "data"),
    (["train", "arch=transformer"], "arch"),
    (["train", "model.likelihood=poisson", "data=synthetic"], "model.likelihood"),
    (["train", "-m", "model=ae,vae", "latent_dim=2,-3"], "latent_dim"),
    (["train", "resume=does/not/exist"], "resume"),
    (["train", "data=folder"], "data.source.path"),
    (["train", "data=folder", "data.source.path=/no/such/folder"], "data.source.path"),
    (["eval"], "run"),
    (["eval", "run=missing_run_dir"], "run"),
    (["sample", "run=."], "run"),
    (["interpolate", "run=missing", "method=cubic"], "run"),
    (["frobnicate"], "command"),
    (["train", "seed=-1"], "seed"),
    (["train", "epochs=ten"], "epochs"),
    (["train", "batch_size=1.5"], "batch_size"),
    (["train", "beta=lots"], "beta"),
    (["train", "trainer.grad_clip=0"], "trainer.grad_clip"),
    (["train", "trainer.log_every=0"], "trainer.log_every"),
    (["train", "trainer.precision=fp8"], "trainer.precision"),
    (["train", "trainer.checkpoint_every=0"], "trainer.checkpoint_every"),
    (["train", "trainer.skip_nonfinite=-2"], "trainer.skip_nonfinite"),
    (["train", "trainer.malloc_keep_mb=-1"], "trainer.malloc_keep_mb"),
    (["train", "trainer.flush_denormals=maybe"], "trainer.flush_denormals"),
    (["train", "trainer.optimzer.lr=1"], "trainer.optimzer.lr"),
    (["train", "data.split_seed=abc"], "data.split_seed"),
    (["train", "hydra.run.dir=/proc/x"], "hydra.run.dir"),
    (["train", "-m", "model=ae,vae", "hydra.sweep.dir=/proc/x"], "hydra.sweep.dir"),
    (["train", "trainer.precision=fp16", "trainer.monitor_mode=up"], "trainer.monitor_mode"),
    (["train", "trainer.early_stopping=0"], "trainer.early_stopping"),
    (["train", "trainer.monitor=loss"], "trainer.monitor"),
    (["train", "data=synthetic", "data.val_fraction=0.6", "data.test_fraction=0.5"], "data.val_fraction"),
    (["train", "data=csv"], "data.path"),
    (["train", "+colour=red"], "colour"),
    (["eval", "run=.", "split=dev"], "run"),
    (["sample", "run=.", "by=colour"], "run"),
    (["train", "arch.activation=swishy", "data=synthetic"], "arch.activation"),
    (["train", "arch=conv", "arch.channels=[]", "data=synthetic"], "arch.channels"),
    (["train", "data=synthetic", "data.source.num_classes=9"], "data.source.num_classes"),
    (["train", "+model.colour=red", "data=synthetic"], "model.colour"),
    (["train", "data=synthetic", "trainer.optimizer._target_=torch.optim.Nope"], "trainer.optimizer._target_"),
    (["train", "latent_dim=2", "latent_dim="], "latent_dim"),
    (["train", "model=[ae"], "override"),
    (["train", "experiment=disentangle_study", "hydra.sweeper.params.seed=0,1"], "hydra.sweeper.params.seed"),
    # nonsense combinations of a family with its options (those that need the data: test_families, test_vector_data)
    (["train", "model=aae", "model.prior=grid", "latent_dim=8"], "model.prior"),
    (["train", "model=sparse_ae", "model.penalty=kl", "model.rho=1.5"], "model.rho"),
    (["train", "model=sparse_ae", "beta=-0.01"], "beta"),
    (["train", "model=dae", "noise=-0.3"], "noise"),
    (["train", "model=dae", "model.corruption=masking", "noise=1.5"], "noise"),
    (["train", "model=pca", "model.variance=1.5"], "model.variance"),
]


@pytest.mark.parametrize("args, key", BAD_COMMAND_LINES, ids=[" ".join(a) for a, _ in BAD_COMMAND_LINES])
def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys, args: list[str], key: str) -> None:
    """cli.main up to the hand-over to Hydra: a case that passed the pre-check would fail here, not run."""
    from aelab import cli

    def no_command(name: str):
        raise AssertionError(f"the pre-check let {args} through to {name}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("AELAB_DEBUG", raising=False)
    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=no_command))  # cli's own name only
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {key}:"), out.err
    assert not list(tmp_path.iterdir())  # nothing on disk


# The real exit path: a fresh interpreter, exit status 2, one line, no traceback, nothing on disk; the first two
# fail in the pre-check, the last two only once the command runs (no GPU here; a bad value in a sweep's job list).
REAL_EXITS = [
    (["train", "latnet_dim=2"], "latnet_dim"),
    (["eval", "run=missing_run_dir"], "run"),
    (["train", "model=vae", "device=cuda", "data=synthetic"], "device"),
    (["frobnicate"], "command"),
]


@pytest.mark.parametrize("args, key", REAL_EXITS, ids=[" ".join(a) for a, _ in REAL_EXITS])
def test_user_errors_exit_2_with_one_line(tmp_path, args: list[str], key: str) -> None:
    if key == "device" and _has_cuda():
        pytest.skip("a CUDA GPU is present: device=cuda is not a mistake here")
    out = aelab(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_config_is_validated_once_per_invocation(compose_cfg, monkeypatch) -> None:
    """The pre-check validates; the command's run() (which checks for Python callers) then sees the same config."""
    from aelab import config_check
    from aelab.precheck import compose_checked

    calls = []
    real = config_check.check_keys
    monkeypatch.setattr(config_check, "check_keys", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    overrides = ["model=ae", "data=synthetic", "latent_dim=3", "epochs=1", "seed=4242"]  # a config no other test has
    compose_checked("train", overrides)
    once = len(calls)
    config_check.check_train(compose_cfg(overrides))
    assert once > 0 and len(calls) == once
    config_check.check_train(compose_cfg([*overrides[:-1], "seed=4243"]))  # another config is checked
    assert len(calls) == 2 * once
