"""Sweeps: readable job folders, failures recorded per job, the sweep summary, launchers, and `aelab report`."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from aelab.commands.train import objective_value
from aelab.sweep.naming import SWEEP_FILE, job_dirname, safe_value
from aelab.sweep.threads import threads_for_job
from test_cli import aelab

SWEEP = ["data=synthetic", "epochs=1", "logger=none", "device=cpu", "trainer.limit_batches=2"]
HAS_JOBLIB = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


def sweep_dir(cwd: Path) -> Path:
    found = list((cwd / "multirun").glob("*/*"))
    assert len(found) == 1, found
    return found[0]


def test_job_names_keep_what_varies_and_are_safe(tmp_path) -> None:
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"constant_keys": ["data", "epochs"]}))
    overrides = ["model=vae", "latent_dim=8", "seed=1", "data=mnist5k", "epochs=3", "device=cpu"]
    assert job_dirname(5, overrides, tmp_path) == "5_model=vae,latent_dim=8,seed=1"
    assert job_dirname(0, ["data=mnist5k"], tmp_path) == "0_data=mnist5k"  # nothing varies: still say what ran
    assert safe_value("[400,200]") == "400_200" and safe_value("/data/my imgs") == "data_my_imgs"
    assert safe_value("0.000342123412") == "0.0003421" and safe_value("1e-3") == "1e-3"
    long = job_dirname(1, [f"arch.hidden=[{','.join(['512'] * 60)}]"])
    assert len(long) <= 120 and long.startswith("1_arch.hidden=512_512")


def test_sweep_records_a_failing_job_and_finishes_the_others(tmp_path) -> None:
    # data.source.n=3 passes every check before the sweep and fails inside its jobs (too few for the split)
    out = aelab("train", "-m", "model=ae,vae", "data.source.n=1024,3", *SWEEP, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "error: sweep: 2 of 4 jobs failed" in out.stderr
    root = sweep_dir(tmp_path)
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert jobs == ["0_model=ae,data.source.n=1024", "1_model=ae,data.source.n=3",
                    "2_model=vae,data.source.n=1024", "3_model=vae,data.source.n=3"]
    for job in jobs:
        status = json.loads((root / job / "status.json").read_text())
        if job.endswith("n=3"):
            assert status["status"] == "failed" and status["error"].startswith("error: data: only 3 examples")
            assert not (root / job / "metrics.json").exists() and (root / job / ".hydra" / "overrides.yaml").is_file()
        else:
            assert status["status"] == "done" and (root / job / "metrics.json").is_file()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "failed": 2}
    assert summary["constant"] == {"data": "synthetic", "epochs": "1", "logger": "none", "trainer.limit_batches": "2"}
    failed = {j["run"]: j["error"] for j in summary["jobs"] if j["status"] == "failed"}
    for job in summary["jobs"]:  # the summary holds each finished job's own final metrics
        if job["status"] == "done":
            assert job["metrics"]["val/loss"] == json.loads((root / job["run"] / "metrics.json").read_text())["val/loss"]
    assert set(failed) == {"1_model=ae,data.source.n=3", "3_model=vae,data.source.n=3"}
    assert "only 3 examples" in (root / "report.md").read_text() and (root / "report.csv").is_file()
    assert json.loads((root / SWEEP_FILE).read_text())["jobs"] == 4


@pytest.mark.skipif(not HAS_JOBLIB, reason="hydra-joblib-launcher not installed (pip install 'aelab[sweep]')")
def test_joblib_launcher_runs_jobs_in_parallel_with_shared_cores(tmp_path) -> None:
    out = aelab("train", "-m", "model=ae,vae", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    root = sweep_dir(tmp_path)
    metrics = [json.loads(p.read_text()) for p in sorted(root.glob("*/metrics.json"))]
    assert len(metrics) == 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert all(m["threads"] == max(1, cores // 2) for m in metrics)  # threads=auto: cores // parallel jobs
    assert json.loads((root / "summary.json").read_text())["counts"] == {"done": 2}


def test_threads_setting() -> None:
    assert threads_for_job(3) == 3
    assert threads_for_job("auto") is None  # no sweep launcher, no SLURM: torch's default


def test_objective_for_an_optimising_sweeper() -> None:
    metrics = {"val/loss": 12.5, "data": "synthetic"}
    assert objective_value(None, metrics) is metrics
    assert objective_value("val/loss", metrics) == 12.5
    assert objective_value("val/loss", None) is None  # a failed job: Optuna marks the trial failed and goes on
    assert objective_value("val/loss", {"val/loss": float("nan")}) is None


def _hydra_cfg(overrides: list[str]):
    import aelab.sweep.rundirs  # noqa: F401  (resolvers)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.skipif(not HAS_SUBMITIT, reason="hydra-submitit-launcher not installed (pip install 'aelab[slurm]')")
def test_slurm_launcher_config_composes_with_the_usual_knobs() -> None:
    cfg = _hydra_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                      "hydra.launcher.timeout_min=30", "hydra.launcher.mem_gb=64", "device=cuda"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) == ("gpu", 2, 30, 64)
    assert launcher.cpus_per_task == 8 and launcher.submitit_folder.endswith("/.submitit/%j")
    defaults = _hydra_cfg(["hydra/launcher=slurm"]).hydra.launcher
    assert defaults.partition is None and defaults.gpus_per_node == 1 and defaults.timeout_min == 120


@pytest.mark.skipif(not HAS_OPTUNA, reason="hydra-optuna-sweeper not installed (pip install 'aelab[search]')")
def test_optuna_search_config_composes() -> None:
    cfg = _hydra_cfg(["search=optuna", "hydra.sweeper.n_trials=5"])
    assert cfg.objective == "val/loss" and cfg.hydra.sweeper.n_trials == 5 and cfg.hydra.sweeper.direction == "minimize"
    assert set(cfg.hydra.sweeper.params) == {"lr", "beta", "latent_dim"}


def test_missing_launcher_is_one_line(tmp_path) -> None:
    out = aelab("train", "-m", "hydra/launcher=nope", *SWEEP, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: hydra/launcher: unknown option 'nope'")
    if not HAS_OPTUNA:
        out = aelab("train", "-m", "search=optuna", *SWEEP, cwd=tmp_path)
        assert out.returncode == 2 and "pip install 'aelab[search]'" in out.stderr.strip()
    assert not (tmp_path / "multirun").exists()


def test_session_records_for_the_hparams_tab(tmp_path) -> None:
    """Each run writes its HParams session but no experiment record: TensorBoard then builds the experiment
    from every run under --logdir (a per-run experiment record makes it show the first run's values only), and
    takes the metrics' values from the scalars the run logged, so no `hparam/*` copies crowd the scalar cards."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    from aelab.viz.tensorboard import TensorBoardLogger

    for model, recon in (("ae", 10.0), ("vae", 12.0)):
        logger = TensorBoardLogger(tmp_path / model)
        logger.scalars({"train/loss": 1.0, "val/recon": recon}, step=7)
        logger.hparams({"model": model, "latent_dim": 2, "hidden": [4]}, {"val/recon": recon})
        logger.close()
        events = EventAccumulator(str(tmp_path / model))
        events.Reload()
        tags = events.PluginTagToContent(metadata.PLUGIN_NAME)
        assert metadata.EXPERIMENT_TAG not in tags and metadata.SESSION_START_INFO_TAG in tags
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["model"].string_value == model and start.hparams["latent_dim"].number_value == 2
        assert sorted(events.Tags()["scalars"]) == ["train/loss", "val/recon"]
        assert [(e.step, e.value) for e in events.Scalars("val/recon")] == [(7, recon)]


def _fake_run(root: Path, name: str, overrides: list[str], metrics: dict | None = None, status: dict | None = None,
              eval_metrics: dict | None = None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    model = next(o.split("=")[1] for o in overrides if o.startswith("model="))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {
        "model": model, "arch": "mlp", "data": "mnist5k", "hydra/launcher": "basic"}}}}))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"latent_dim": 16, "seed": 0, "epochs": 3}))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps({**metrics, "data": "mnist5k", "epochs": 3}))
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    if eval_metrics is not None:
        (run / "eval" / "2026-01-01_00-00-00").mkdir(parents=True)
        (run / "eval" / "2026-01-01_00-00-00" / "metrics.json").write_text(json.dumps(eval_metrics))
    return run


def _fake_sweep(root: Path) -> None:
    """ae/vae x latent_dim 2/8 x seed 0/1 with known val/recon; one vae job failed, one still running."""
    recon = {("ae", 2): (30.0, 32.0), ("ae", 8): (20.0, 22.0), ("vae", 2): (40.0, 44.0), ("vae", 8): (35.0, None)}
    num = 0
    for (model, dim), values in recon.items():
        for seed, value in enumerate(values):
            overrides = [f"model={model}", f"latent_dim={dim}", f"seed={seed}", "data=mnist5k", "epochs=3"]
            name = f"{num}_model={model},latent_dim={dim},seed={seed}"
            if value is None:
                _fake_run(root, name, overrides, status={"status": "failed", "error": "error: data: bad things"})
            else:
                extra = {"test/psnr": 20.0 + seed} if (model, dim) == ("ae", 2) else None
                _fake_run(root, name, overrides, {"val/recon": value, "val/loss": value + 1, "train/loss": 1.0,
                                                  "val/kl_dim/00": 0.5}, eval_metrics=extra)
            num += 1
    wide = ["model=vae", "latent_dim=16", "data=mnist5k", "epochs=3"]
    _fake_run(root, f"{num}_model=vae,latent_dim=16,seed=0", [*wide, "seed=0"])  # no metrics, no status: incomplete
    _fake_run(root, f"{num + 1}_model=vae,latent_dim=16,seed=1", [*wide, "seed=1"],  # its process is alive: running
              status={"status": "running", "host": socket.gethostname(), "pid": os.getpid()})


def test_report_groups_seeds_into_mean_and_std(tmp_path, compose_cfg) -> None:
    from aelab.commands.report import run

    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    _fake_sweep(root)
    result = run(compose_cfg([f"dir={root}", "x=latent_dim", "y=val/recon"], config_name="report"))
    assert (result["runs"], result["done"], result["failed"], result["incomplete"], result["running"]) == (10, 7, 1, 1, 1)

    rows = {(r["model"], r["latent_dim"]): r for r in csv.DictReader((root / "report.csv").open())}
    assert list(rows) == [("ae", "2"), ("ae", "8"), ("vae", "2"), ("vae", "8"), ("vae", "16")]
    assert float(rows["ae", "2"]["val/recon"]) == 31.0 and float(rows["ae", "2"]["val/recon_std"]) == pytest.approx(
        2 ** 0.5)
    assert float(rows["ae", "2"]["test/psnr"]) == 20.5  # from eval/<time>/metrics.json
    assert (rows["vae", "8"]["runs"], rows["vae", "8"]["done"], rows["vae", "8"]["failed"]) == ("2", "1", "1")
    assert float(rows["vae", "8"]["val/recon"]) == 35.0 and rows["vae", "8"]["val/recon_std"] == ""
    assert rows["vae", "16"]["done"] == "0" and rows["vae", "16"]["val/recon"] == ""
    assert "train/loss" not in rows["ae", "2"]  # columns: val/*, test/*, eval/* by default
    assert "val/kl_dim/00" not in rows["ae", "2"]  # val/* is one level deep: no per-dimension breakdowns
    run(compose_cfg([f"dir={root}", "x=null", "metrics=[val/kl_dim/*]", f"out={tmp_path / 'dims'}"], config_name="report"))
    assert float(next(csv.DictReader((tmp_path / "dims" / "report.csv").open()))["val/kl_dim/00"]) == 0.5

    md = (root / "report.md").read_text()
    assert "| ae | 8 | 2/2 done | **21.000 ± 1.414** |" in md and "| vae | 8 | 1/2 done, 1 failed | 35.000 |" in md
    assert "Same in every run: `data=mnist5k`, `epochs=3`" in md and "Lowest `val/recon`: `model=ae`, `latent_dim=8`" in md
    assert "error: data: bad things" in md and "| vae | 16 | 0/2 done, 1 incomplete, 1 running |" in md
    runs = list(csv.DictReader((root / "runs.csv").open()))
    assert len(runs) == 10 and {r["status"] for r in runs} == {"done", "failed", "incomplete", "running"}
    plot = root / "val-recon_vs_latent_dim.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![val-recon_vs_latent_dim](val-recon_vs_latent_dim.png)" in md


def test_report_command_line(tmp_path) -> None:
    root = tmp_path / "sweep"
    _fake_sweep(root)
    out = aelab("report", str(root), "x=null", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "21.000 ± 1.414" in out.stdout and "failed" in out.stdout and not list(root.glob("*.png"))
    job = next(root.glob("0_*"))  # a job folder: its name holds `=` and `,`
    assert aelab("report", str(job), cwd=tmp_path).returncode == 0
    for args, line in ((["report", "missing"], "error: dir: no such directory: missing"),
                       (["report"], "error: dir: no folder given"),
                       (["report", str(tmp_path / "sweep" / "x")], "error: dir: no such directory"),
                       (["report", str(root), "x=colour"], "error: x: 'colour' is not a key the runs differ in"),
                       (["report", str(root), "y=val/nope"], "error: y: no run has the metric 'val/nope'")):
        out = aelab(*args, cwd=tmp_path)
        assert out.returncode == 2 and out.stderr.strip().startswith(line) and len(out.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    out = aelab("report", "empty", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: dir: no runs under empty")


@pytest.mark.parametrize(("name", "expected"), [
    # what train and eval write (metrics.json) for every run, by their known meaning
    ("val/loss", "min"), ("val/recon", "min"), ("val/kl", "min"), ("val/best_loss", "min"), ("test/recon_bce", "min"),
    ("test/recon_mse", "min"), ("test/nll_iw", "min"), ("test/neg_elbo", "min"), ("test/elbo_recon", "min"),
    ("test/elbo_kl", "min"), ("val/kl_dim/03", "min"), ("test/frechet_distance", "min"),
    ("test/frechet_reference", "min"), ("test/fid", "min"), ("time/epoch_s", "min"), ("val/quantisation_error", "min"),
    ("val/loss_at_beta", "min"), ("val/uniform_bits", "min"),
    ("test/accuracy", "max"), ("val/accuracy", "max"), ("test/probe_accuracy", "max"), ("test/knn_accuracy", "max"),
    ("test/pca_probe_accuracy", "max"), ("test/probe_linear_acc", "max"), ("test/feature_net_accuracy", "max"),
    ("test/anomaly_recon_auroc", "max"), ("test/anomaly_elbo_auprc", "max"), ("test/psnr", "max"), ("test/ssim", "max"),
    ("test/denoise_psnr_0.3", "max"), ("test/precision", "max"), ("test/recall", "max"), ("test/elbo", "max"),
    ("train/images_per_s", "max"), ("test/mig", "max"), ("test/sap", "max"), ("test/dci_disentanglement", "max"),
    ("test/dci_informativeness", "max"), ("test/beta_vae_score", "max"), ("test/disentanglement", "max"),
    # no side is better, or only the family can tell (its own names: see the next test)
    ("val/perplexity", None), ("epochs", None), ("steps", None), ("val/shrink", None), ("val/mmd", None),
    ("train/adv_gen", None), ("val/active_units", None),
])
def test_metric_directions(name: str, expected: str | None) -> None:
    from aelab.metrics.directions import direction, resolve

    assert direction(name) == expected
    assert resolve(name, "min") == "min" and resolve(name, "max") == "max" and resolve(name, "auto") == expected


@pytest.mark.parametrize(("overrides", "name", "expected"), [
    # loss terms are minimised unless the family says otherwise
    (["model=sparse_ae"], "sparsity", "min"), (["model=beta_tcvae"], "tc", "min"), (["model=wae"], "mmd", "min"),
    (["model=rae"], "code_l2", "min"), (["model=vq_vae", "arch=conv"], "commitment", "min"),
    (["model=ae", "model.weight_decay=1e-5"], "weight_decay", "min"),
    (["model=aae"], "adv_gen", None), (["model=aae"], "adv_disc", None), (["model=beta_tcvae"], "mi", None),
    (["model=factor_vae"], "adv_disc", None),
    # diagnostics: what the family declares
    (["model=vae"], "active_units", "max"), (["model=pca"], "explained_variance", "max"),
    (["model=vq_vae", "arch=conv"], "codebook_perplexity", "max"), (["model=vq_vae", "arch=conv"], "codes_used", "max"),
    (["model=sparse_ae"], "mean_activation", None), (["model=sparse_ae"], "active_fraction", None),
    (["model=wae"], "code_std_mean", None), (["model=factor_vae"], "tc_estimate", "min"),
])
def test_a_family_says_how_its_own_metrics_read(compose_cfg, overrides: list[str], name: str, expected) -> None:
    import torch

    from aelab.data import build_data
    from aelab.engine.build import build_model
    from aelab.engine.measure import measure

    cfg = compose_cfg(["data=synthetic", "latent_dim=4", "device=cpu", *overrides])
    data = build_data(cfg.data, torch.device("cpu"))
    model = build_model(cfg, data.shape, data.num_classes)
    if name == "explained_variance":
        model.fit_closed_form(data.train, 256)
    report = measure(model, data.val, step=0, batch_size=64)
    assert name in report.scalars and report.directions.get(name, "unsaid") == expected


def test_report_ranks_by_what_the_runs_family_recorded(tmp_path, compose_cfg) -> None:
    from aelab.sweep.table import build_report

    for num, dim in enumerate((2, 8)):
        _fake_run(tmp_path, f"{num}_latent_dim={dim}", ["model=vae", f"latent_dim={dim}", "seed=0"],
                  {"val/active_units": float(dim), "directions": {"val/active_units": "max"}})
    assert build_report(tmp_path, y="val/active_units").direction == "max"  # the name alone says nothing
    assert _best_dim(build_report(tmp_path, y="val/active_units")) == "8"


def _direction_runs(root: Path) -> None:
    """latent_dim 2/8/16: val/recon lowest at 8, test/accuracy and test/auroc highest at 2, lowest at 8."""
    results = {2: (30.0, 0.9), 8: (20.0, 0.7), 16: (25.0, 0.8)}
    for num, (dim, (recon, accuracy)) in enumerate(results.items()):
        overrides = ["model=ae", f"latent_dim={dim}", "seed=0"]
        _fake_run(root, f"{num}_latent_dim={dim}", overrides, {"val/recon": recon, "val/mean_activation": recon / 100},
                  eval_metrics={"test/accuracy": accuracy, "test/auroc": accuracy - 0.05})


def _best_dim(report) -> str | None:
    from aelab.sweep.table import best_group

    best = best_group(report)
    return None if best is None else best.values["latent_dim"]


def test_report_marks_the_best_row_by_the_metric_direction(tmp_path, compose_cfg, capsys, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from aelab.commands.report import run
    from aelab.errors import UserError
    from aelab.sweep.table import build_report

    _direction_runs(tmp_path)
    assert _best_dim(build_report(tmp_path, y="val/recon")) == "8"  # a loss: the lowest
    assert _best_dim(build_report(tmp_path, y="test/accuracy")) == "2"  # higher is better
    assert _best_dim(build_report(tmp_path, y="test/auroc")) == "2"
    assert _best_dim(build_report(tmp_path, y="test/accuracy", mode="min")) == "8"  # mode overrides
    assert _best_dim(build_report(tmp_path, y="val/recon", mode="max")) == "2"
    # no known direction and no mode: no row is marked (marking the lowest would be a guess)
    unknown = build_report(tmp_path, y="val/mean_activation")
    assert unknown.direction is None and _best_dim(unknown) is None
    assert _best_dim(build_report(tmp_path, y="val/mean_activation", mode="max")) == "2"
    with pytest.raises(UserError, match="one of: auto, min, max"):
        build_report(tmp_path, y="val/recon", mode="highest")

    labels = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (labels.append(fig.axes[0].get_ylabel()),
                                                                    Path(path).touch()))  # a file, as savefig leaves
    run(compose_cfg([f"dir={tmp_path}", "y=test/accuracy", "x=latent_dim"], config_name="report"))
    md = (tmp_path / "report.md").read_text()
    assert "Highest `test/accuracy`: `latent_dim=2` (bold; higher is better, mode=auto)." in md
    assert "| 2 | 1/1 done | **0.9000** |" in md and "| 8 | 1/1 done | 0.7000 |" in md
    assert "bold: highest test/accuracy (higher is better, mode=auto)" in capsys.readouterr().out
    assert labels == ["test/accuracy (higher is better)"]
    assert json.loads((tmp_path / "summary.json").read_text())["direction"] == "max"

    run(compose_cfg([f"dir={tmp_path}", "y=test/accuracy", "mode=min", "x=null"], config_name="report"))
    assert "Lowest `test/accuracy`: `latent_dim=8` (bold; lower is better, mode=min)." in (tmp_path / "report.md").read_text()
    assert "bold: lowest test/accuracy (lower is better, mode=min)" in capsys.readouterr().out

    run(compose_cfg([f"dir={tmp_path}", "y=val/mean_activation", "x=null"], config_name="report"))
    md = (tmp_path / "report.md").read_text()
    assert "No row marked best: `val/mean_activation` has no known direction" in md and "**" not in md


def test_report_with_directions_never_imports_torch(tmp_path) -> None:
    """`aelab report` reads metric directions on the CLI's light start path: torch would cost seconds."""
    import subprocess
    import sys

    _direction_runs(tmp_path)
    code = ("import sys\nfrom aelab.cli import main\nsys.argv = ['aelab', 'report', sys.argv[1], 'x=null', "
            "'y=test/auroc']\ntry:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
    assert "Highest `test/auroc`: `latent_dim=2`" in (tmp_path / "report.md").read_text()


def test_a_categorical_x_runs_in_the_order_of_its_numbers_and_long_names_tilt(tmp_path, monkeypatch) -> None:
    """A study's arms as x: beta_vae_1, _4, _16 in that order (as strings 16 sorts before 4, and the family's line
    would zigzag), and names too long to stand side by side are drawn tilted."""
    from aelab.sweep.plot import plot_metric
    from aelab.sweep.table import build_report

    arms = {"beta_vae_16": 0.13, "beta_vae_4": 0.27, "beta_vae_1": 0.14, "aae_disentangle": 0.03, "dip_vae": 0.02}
    for num, (arm, mig) in enumerate(arms.items()):
        model = arm.rsplit("_", 1)[0] if arm.startswith("beta_vae") else arm.split("_")[0]
        _fake_run(tmp_path, f"{num}_study_arm={arm}", [f"model={model}", f"study_arm={arm}", "seed=0"],
                  {"val/recon": 30.0}, eval_metrics={"test/mig": mig})
    report = build_report(tmp_path, y="test/mig")
    drawn = {}

    def keep(fig, path, **kw):
        axes = fig.axes[0]
        drawn["ticks"] = [t.get_text() for t in axes.get_xticklabels()]
        drawn["rotation"] = axes.get_xticklabels()[0].get_rotation()
        drawn["beta_vae"] = next(list(line.get_ydata()) for line in axes.get_lines() if len(line.get_ydata()) == 3)
        Path(path).touch()

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", keep)
    plot_metric(report, "study_arm", "test/mig", tmp_path / "plot.png")
    assert drawn["ticks"] == ["aae_disentangle", "beta_vae_1", "beta_vae_4", "beta_vae_16", "dip_vae"]
    assert drawn["beta_vae"] == pytest.approx([0.14, 0.27, 0.13])  # the beta-VAE line: beta 1, 4, 16
    assert drawn["rotation"] == 30
