"""Shared fixtures: compose the real configs (conf/) with tiny overrides, fully offline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import aelab.sweep.rundirs  # noqa: F401  (registers the resolvers the configs use)
from aelab.nets.fastpath import TimingPlan

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: each stays single-threaded (set before any test imports torch), so OpenMP threads of two
    # workers never spin against each other; the tests' subprocesses inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """scripts/<name>.py as a module (registered under its name: dataclasses look their module up by it)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# AELAB_TEST_DEVICE=cuda runs every test built on TINY on a GPU (a lent one: CI has none); tests/test_cuda.py adds the
# GPU's own checks.
TEST_DEVICE = os.environ.get("AELAB_TEST_DEVICE", "cpu")
TINY = ["data=synthetic", "latent_dim=4", "epochs=1", "batch_size=64", f"device={TEST_DEVICE}", "logger=none"]


@pytest.fixture(autouse=True)
def _offline_data(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may download: data roots point at an empty folder.
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data-cache"))
    # A fast path's timing is cached only when steady (aelab/nets/fastpath.py); tests that check the caching must not
    # depend on how busy the machine running them is. tests/test_fast_paths.py checks the steadiness rule itself.
    monkeypatch.setattr("aelab.nets.fastpath.STEADY", float("inf"))
    # The bf16 choice times a real model's step in ~100-ms blocks, a second a model once per machine; the suite's
    # hundreds of small models are timed as the other fast paths are (tests/test_precision.py checks the plan).
    monkeypatch.setattr("aelab.engine.precision.STEP_TIMING", TimingPlan())


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    def _compose(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides or []))

    yield _compose
    GlobalHydra.instance().clear()


def model_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def arch_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / "arch").glob("*.yaml"))


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["AELAB_DATA_DIR"] = str(tmp_path / "data-cache")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def noise_images(folder: Path, n: int, seed: int = 0) -> Path:
    """A new folder of n 16x16 greyscale PNGs of uniform noise (unlabelled images for folder data)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny tensors gain nothing from a second one, which only spins against the
    other workers, and sums keep one order. Use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch  # here, not at the top: OMP_NUM_THREADS must be set before anything imports torch (above)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_tiny(compose_cfg: Callable[..., DictConfig], *overrides: str, seed: int = 0):
    """TINY plus `overrides`, composed; its data built on the CPU, then its model after seeding torch with `seed`:
    (cfg, data, model)."""
    import torch

    from aelab.data import build_data
    from aelab.engine.build import build_model

    cfg = compose_cfg([*TINY, *overrides])
    data = build_data(cfg.data, torch.device("cpu"))
    torch.manual_seed(seed)
    return cfg, data, build_model(cfg, data.shape, data.num_classes)
