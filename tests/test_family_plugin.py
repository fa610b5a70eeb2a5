"""A new family is its module plus its YAML and nothing else: one defined only in this test's temporary folder is
validated (its own keys, ranges and cross-key rule), trained and evaluated through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aelab.errors import UserError
from conftest import REPO, cli_env

FAMILY = "shrink_ae_plugin"  # the module; conf name `shrinky`: neither appears anywhere in the repository
MODULE = '''"""An autoencoder that pulls its codes towards 0 with an L1 or L2 penalty of weight `strength`."""

from __future__ import annotations

from aelab.errors import UserError
from aelab.models.ae import AE
from aelab.models.likelihoods import LIKELIHOODS
from aelab.schema import Annotated, OneOf, Range

NORMS = ("l1", "l2")


class ShrinkAE(AE):
    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if options["norm"] == "l1" and options["strength"] > 1:
            raise UserError(f"{key}.strength", "l1 above 1 shuts every unit off", "strength <= 1 with norm=l1")

    def __init__(self, arch, input_shape, latent_dim: Annotated[int, Range(1, None)],
                 strength: Annotated[float, Range(0, None)] = 0.1, norm: Annotated[str, OneOf(NORMS)] = "l2",
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.strength, self.power = float(strength), NORMS.index(norm) + 1

    def code_penalties(self, z):  # (B, D) -> the weighted mean norm of the codes
        return {"shrink": self.strength * z.abs().pow(self.power).sum(1).mean()}
'''
YAML = f"""_target_: {FAMILY}.ShrinkAE
latent_dim: ${{latent_dim}}
strength: 0.1
norm: l2
likelihood: ${{data.likelihood}}
input_noise: ${{noise}}
"""
TINY_RUN = ["data=synthetic", "epochs=1", "device=cpu", "logger=none", "trainer.limit_batches=2", "latent_dim=3"]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    (tmp_path / "plugin" / "conf" / "model").mkdir(parents=True)
    (tmp_path / "plugin" / f"{FAMILY}.py").write_text(MODULE)
    (tmp_path / "plugin" / "conf" / "model" / "shrinky.yaml").write_text(YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plugin"), env.get("PYTHONPATH", "")])
    yield {"searchpath": f"hydra.searchpath=[file://{tmp_path / 'plugin' / 'conf'}]", **env}
    sys.modules.pop(FAMILY, None)


def test_nothing_in_the_repository_knows_the_family() -> None:
    for path in [*(REPO / "aelab").rglob("*.py"), *(REPO / "conf").rglob("*.yaml")]:
        text = path.read_text()
        assert FAMILY not in text and "shrinky" not in text, path


@pytest.mark.parametrize("args, line", [
    (["model.strength=-1"], "error: model.strength: out of range: -1 (a number >= 0)"),
    (["model.norm=l3"], "error: model.norm: unknown value 'l3' (one of: l1, l2)"),
    (["model.norm=l1", "model.strength=2"], "error: model.strength: l1 above 1 shuts every unit off"),
    (["+model.colour=red"], "error: model.colour: unknown key (keys: latent_dim, strength, norm, likelihood"),
    (["noise=-1"], "error: noise: out of range: -1"),
])
def test_its_keys_are_checked_before_any_work(plugin: dict[str, str], args: list[str], line: str) -> None:
    from aelab.precheck import compose_checked

    with pytest.raises(UserError) as caught:
        compose_checked("train", [plugin["searchpath"], "model=shrinky", *TINY_RUN, *args])
    assert caught.value.line().startswith(line)


def aelab(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aelab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # three subprocesses (a refusal, a training run, its eval): 28-58 s measured on 2 shared cores (load 6-9)
def test_it_is_refused_trained_and_evaluated_from_the_command_line(plugin: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in plugin.items() if k != "searchpath"}
    bad = aelab("train", plugin["searchpath"], "model=shrinky", "model.strength=-1", *TINY_RUN, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: model.strength: out of range: -1 (a number >= 0)"
    assert not (tmp_path / "outputs").exists()

    out = aelab("train", plugin["searchpath"], "model=shrinky", "model.norm=l1", *TINY_RUN, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    run = next((tmp_path / "outputs").glob("*/*_shrinky"))
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["train/shrink"] > 0 and trained["val/loss"] > trained["val/recon"]  # its own term was trained

    ev = aelab("eval", f"run={run}", "iw_samples=0", "generation.samples=0", "probe.max_train=0", "noise=[]",
               "tensorboard=false", cwd=tmp_path, env=env)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(next(run.glob("eval/*/metrics.json")).read_text())
    assert metrics["test/shrink"] > 0 and metrics["test/recon"] > 0
