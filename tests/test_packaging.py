"""The configs ship inside the wheel, and Hydra finds them there by package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build the wheel")
def test_wheel_ships_every_config_and_composes_from_it(tmp_path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("aelab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"aelab/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)
    modules = {f"aelab/{p.relative_to(REPO / 'aelab').as_posix()}" for p in (REPO / "aelab").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (add their package to pyproject): {sorted(modules - names)}"

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = ("import aelab, aelab.commands._common; from hydra import compose, initialize_config_module\n"
             "with initialize_config_module(config_module='aelab.conf', version_base='1.3'):\n"
             "    cfg = compose(config_name='train', overrides=['experiment=vae_2d'])\n"
             "print(aelab.__file__, cfg.latent_dim, cfg.model._target_)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(target)) and "2 aelab.models.vae.VAE" in out.stdout
