"""The shared knobs (latent_dim, beta, noise) belong to the families whose YAML reads them: set for one that does
not, they are refused in one line, never a silent no-op, and a run logs only the knobs its family reads."""

from __future__ import annotations

import pytest

from aelab.engine.measure import hparams_of
from aelab.errors import UserError
from aelab.precheck import compose_checked
from aelab.schema import shared_keys_read
from conftest import REPO, model_names

BETA_FAMILIES = sorted(n for n in model_names() if "${beta}" in (REPO / "conf" / "model" / f"{n}.yaml").read_text())


def test_a_knob_the_family_does_not_read_is_refused_naming_family_key_and_readers() -> None:
    with pytest.raises(UserError) as error:
        compose_checked("train", ["model=ae", "beta=4"])
    assert error.value.key == "beta" and "model=ae does not read it" in error.value.problem
    assert error.value.allowed.endswith(", ".join(BETA_FAMILIES)) and "vae" in BETA_FAMILIES and "ae" not in BETA_FAMILIES


def test_a_sweep_that_would_train_identical_jobs_is_refused_naming_the_family() -> None:
    with pytest.raises(UserError) as error:
        compose_checked("train", ["-m", "model=vae,wae", "beta=1,4"])
    assert error.value.key == "beta" and "model=wae" in error.value.problem
    compose_checked("train", ["-m", "model=vae,beta_vae", "beta=1,4", "data=synthetic"])  # both read it: fine


@pytest.mark.parametrize("name", model_names())
def test_every_family_reads_the_knobs_its_yaml_interpolates_and_logs_only_those(compose_cfg, name: str) -> None:
    cfg = compose_cfg([f"model={name}", "data=synthetic"])
    read = shared_keys_read(cfg.model)
    assert "latent_dim" in read  # every family has a code size
    assert ("beta" in read) == (name in BETA_FAMILIES)
    logged = hparams_of(cfg)
    assert {k for k in ("latent_dim", "beta", "noise") if k in logged} == read
    if "beta" in read:  # and the knob really reaches the family
        assert compose_cfg([f"model={name}", "data=synthetic", "beta=3.5"]).model != cfg.model


def _presets_setting_knobs() -> list[tuple[str, str]]:
    import yaml

    return [(group, p.stem) for group in ("experiment", "study_arm") for p in sorted((REPO / "conf" / group).glob("*.yaml"))
            if {"beta", "noise"} & set(yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("group, name", _presets_setting_knobs())
def test_a_preset_sets_only_knobs_its_family_reads(compose_cfg, group: str, name: str) -> None:
    import yaml

    cfg = compose_cfg([f"{group}={name}"])
    set_here = {"beta", "noise"} & set(yaml.safe_load((REPO / "conf" / group / f"{name}.yaml").read_text()))
    assert set_here <= shared_keys_read(cfg.model), f"{group}={name} sets {set_here}; its family ignores some"
