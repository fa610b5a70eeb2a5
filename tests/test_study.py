"""experiment=disentangle_study: the arms, the sweep it makes, and the evaluation and report at its end."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from aelab.precheck import compose_checked
from conftest import REPO, cli_env

ARMS = {"beta_vae_1": ("BetaVAE", 1.0), "beta_vae_4": ("BetaVAE", 4.0), "beta_vae_16": ("BetaVAE", 16.0),
        "beta_tcvae": ("BetaTCVAE", 6.0), "factor_vae": ("FactorVAE", None), "dip_vae": ("DIPVAE", None),
        "aae_disentangle": ("AAE", None)}


def test_the_study_sweeps_every_arm_over_three_seeds() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=disentangle_study"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params.study_arm.split(",") == list(ARMS) and params.seed.split(",") == ["0", "1", "2"]
    assert sorted(p.stem for p in (REPO / "conf" / "study_arm").glob("*.yaml")) == sorted(ARMS)
    assert cfg.data.source._target_.endswith("load_dsprites") and cfg.sweep_eval.y == "test/mig"


@pytest.mark.parametrize("arm", list(ARMS))
def test_each_arm_is_its_family_with_its_setting(arm: str) -> None:
    (cfg,) = compose_checked("train", ["experiment=disentangle_study", f"study_arm={arm}"])
    family, beta = ARMS[arm]
    assert cfg.model._target_.rsplit(".", 1)[1] == family
    if beta is not None:
        assert cfg.beta == beta
    if arm == "aae_disentangle":
        assert cfg.model.disentangle is True


QUICK_EVAL = ["iw_samples=0", "probe.max_train=0", "noise=[]", "generation.samples=0", "num_images=0", "tensorboard=false",
              "threads=1", "disentanglement.num_train=200", "disentanglement.num_eval=100",
              "disentanglement.variance_points=200", "disentanglement.batch_size=16"]


@pytest.mark.slow
def test_a_small_study_trains_evaluates_and_reports_the_scores(tmp_path) -> None:
    sweep = tmp_path / "study"
    command = [sys.executable, "-m", "aelab", "train", "experiment=disentangle_study", "hydra.sweeper.params.seed=0",
               "hydra.sweeper.params.study_arm='beta_vae_4,aae_disentangle'", "data.subsample=400", "epochs=1",
               "logger=none", f"hydra.sweep.dir={sweep}", "threads=1",
               "sweep_eval.overrides=[" + ",".join(f"'{o}'" for o in QUICK_EVAL) + "]"]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep_eval: 2/2" in done.stdout
    rows = {r["study_arm"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert set(rows) == {"beta_vae_4", "aae_disentangle"}
    for row in rows.values():
        scores = [float(row[f"test/{name}"]) for name in ("betavae_score", "factorvae_score", "mig", "sap",
                                                          "dci_disentanglement", "dci_completeness")]
        assert all(0 <= s <= 1 for s in scores)
    assert "Highest `test/mig`" in (sweep / "report.md").read_text()
    assert len(list(Path(sweep).glob("*/eval/*/metrics.json"))) == 2
