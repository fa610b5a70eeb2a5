"""docs/extending.md works as written: its files (code blocks starting `# file: <path>`) are written into a temporary
project, and each of its `aelab train` commands is run there in-process on tiny settings, through the same checks
and run directory as the CLI (aelab.train). Nothing in aelab/ or conf/ knows the examples' names.

Also the arch contract the page relies on: an arch of plain one-input modules works for every family (aelab
adapts it, aelab/nets/adapter.py), and aelab's own mlp and conv encoders are used unwrapped."""

from __future__ import annotations

import math
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from aelab.errors import UserError
from conftest import REPO, model_names

DOC = REPO / "docs" / "extending.md"
TINY = {"epochs": "1", "batch_size": "64", "latent_dim": "2"}  # replace the page's values
QUIET = ["device=cpu", "logger=none", "trainer.limit_batches=2", "trainer.fast_paths=off"]  # added to each command


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of the page."""
    return re.findall(r"^```(\w*)\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def doc_files() -> dict[str, str]:
    return {text.split("\n", 1)[0].removeprefix("# file:").strip(): text
            for _, text in blocks() if text.startswith("# file:")}


def doc_commands() -> list[str]:
    return [line for lang, text in blocks() if lang == "bash" for line in text.splitlines()
            if line.startswith("PYTHONPATH=. aelab train ")]


def own_options(group: str) -> set[str]:
    """The config options the page defines in its own folder's group (e.g. data: spirals)."""
    return {Path(path).stem for path in doc_files() if path.startswith(f"my_conf/{group}/")}


def tiny(command: str) -> list[str]:
    """The command's overrides, on tiny settings: synthetic data unless the data is the page's own."""
    args = shlex.split(command)
    assert args[:3] == ["PYTHONPATH=.", "aelab", "train"], command
    out = []
    for arg in args[3:]:
        key, _, value = arg.partition("=")
        if key in TINY:
            continue
        if key == "data" and value not in own_options("data"):
            arg = "data=synthetic"
        out.append(arg)
    return [*out, *(f"{k}={v}" for k, v in TINY.items()), *QUIET]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page's files in a fresh folder, the working directory, on Python's path (PYTHONPATH=.)."""
    folder = tmp_path / "my_project"
    for rel, text in doc_files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    modules = [Path(rel).stem for rel in doc_files() if rel.endswith(".py")]
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in modules:
        sys.modules.pop(name, None)


def test_the_page_has_its_three_examples() -> None:
    files = doc_files()
    assert {p for p in files if p.endswith(".py")} == {"my_resnet.py", "my_family.py", "my_data.py"}
    assert {p.split("/")[1] for p in files if p.startswith("my_conf/")} == {"arch", "model", "data"}
    assert len(doc_commands()) == 3


def test_nothing_in_the_repository_knows_the_examples() -> None:
    names = {Path(p).stem for p in doc_files()} | {"ResNetArch", "CapacityVAE", "load_spirals"}
    for path in [*(REPO / "aelab").rglob("*.py"), *(REPO / "conf").rglob("*.yaml")]:
        text = path.read_text()
        assert not [n for n in names if n in text], path


@pytest.mark.parametrize("command", doc_commands(), ids=lambda c: re.search(r" (arch|model|data)=(\w+)", c)[2])
def test_the_documented_command_trains(project: Path, command: str) -> None:
    import aelab

    result = aelab.train(tiny(command))
    assert math.isfinite(result.metrics["val/loss"])
    run = aelab.load_run(result.run_dir)  # rebuilt from the _target_s the run recorded
    batch = run.data.test.head(8)
    assert run.encode(batch.x, batch.y).shape == (8, 2)
    if "arch=resnet" in command:  # the arch's plain nn.Sequential, adapted by aelab
        assert type(run.model.encoder).__name__ == "OneInput" and isinstance(run.model.encoder.module, nn.Sequential)
    if "model=capacity_vae" in command:
        assert type(run.model).__name__ == "CapacityVAE" and result.metrics["val/capacity"] > 0
    if "data=spirals" in command:
        assert result.metrics["data"] == "spirals" and run.model.conditional


@pytest.mark.parametrize("args, line", [
    (["~arch", "+arch._target_=my_resnet.ResNetArch", "+arch.width=8"], None),
    (["arch._target_=my_resnet.ResNetArch"], "error: arch.hidden: unknown key (keys: width, blocks)"),
    (["hydra.searchpath=[file://my_conf]", "arch=resnet", "arch.width=0"], "error: arch.width: out of range: 0"),
    (["hydra.searchpath=[file://my_conf]", "model=capacity_vae", "model.gamma=-1"],
     "error: model.gamma: out of range: -1 (a number >= 0)"),
    (["hydra.searchpath=[file://my_conf]", "model=capacity_vae", "beta=4"],
     "error: beta: model=capacity_vae does not read it"),
    (["hydra.searchpath=[file://my_conf]", "data=spirals", "data.source.noise=-1"],
     "error: data.source.noise: out of range: -1 (a number >= 0)"),
])
def test_what_the_page_says_is_checked_is_checked(project: Path, args: list[str], line: str | None) -> None:
    from aelab.precheck import compose_checked

    args = args if any(a.startswith("data=") for a in args) else [*args, "data=synthetic"]
    if line is None:  # the page's command-line route without a YAML composes and passes the checks
        compose_checked("train", args)
        return
    assert args[-2 if args[-1] == "data=synthetic" else -1] in DOC.read_text()  # the page shows this mistake
    with pytest.raises(UserError) as caught:
        compose_checked("train", args)
    assert caught.value.line().startswith(line)


# ---- an arch of plain one-input modules, for every family ---------------------------------------------
class PlainArch:
    """Both networks plain nn.Sequentials of one input; the encoder takes the extra features it is asked for."""

    def encoder(self, input_shape, out_features, extra_features=0):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape) + extra_features, 32), nn.ReLU(),
                             nn.Linear(32, out_features))

    def decoder(self, in_features, output_shape):
        return nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, math.prod(output_shape)),
                             nn.Unflatten(1, tuple(output_shape)))


def _plain(compose_cfg, model: str, *overrides: str):
    from aelab.data import build_data
    from aelab.instantiate import build

    cfg = compose_cfg(["latent_dim=2", "device=cpu", "logger=none", f"model={model}", *overrides])
    data = build_data(cfg.data, torch.device("cpu"))
    torch.manual_seed(0)
    net = build(cfg.model, "model", arch=PlainArch(), input_shape=tuple(data.shape), num_classes=data.num_classes)
    return data, net


def test_a_plain_arch_works_for_every_family(compose_cfg) -> None:
    for model in model_names():
        if model == "cvae":  # conditions its encoder: images are refused (below), vectors take the label joined on
            continue
        data, net = _plain(compose_cfg, model, "data=synthetic")
        batch = data.train.head(16)
        net.train()
        terms = net.losses(batch, 1)
        assert terms and all(torch.isfinite(t) for t in terms.values()), model
        plain = [m for m in net.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Flatten)]
        if net.phases():  # pca builds no networks
            sum(terms.values()).backward()
            assert plain and plain[0][1].weight.grad.abs().sum() > 0, model
        net.eval()
        z = net.encode(batch.x, batch.y)
        assert z.shape == (16, 2) and net.decode(z, batch.y).shape == batch.x.shape, model


def test_a_conditional_encoder_joins_the_label_to_vectors_and_refuses_images(compose_cfg) -> None:
    data, net = _plain(compose_cfg, "cvae", "data=toy2d")
    x = data.train.head(8).x
    zeros, ones = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    assert not torch.equal(net.encode(x, zeros), net.encode(x, ones))  # the label reaches the encoder
    assert net.encoder.module[1].in_features == 2 + 2  # built for x and the one-hot label

    with pytest.raises(UserError) as caught:
        _plain(compose_cfg, "cvae", "data=synthetic")
    assert caught.value.line().startswith("error: arch: PlainArch.encoder returns a module of one input (x), and "
                                          "CVAE also conditions its encoder on the class label")
    assert "model.condition_encoder=false" in caught.value.line() and "\n" not in caught.value.line()
    _plain(compose_cfg, "cvae", "data=synthetic", "model.condition_encoder=false")  # then it works


@pytest.mark.parametrize("arch, encoder", [("mlp", "MLPEncoder"), ("conv", "ConvEncoder")])
def test_aelabs_own_encoders_take_the_condition_themselves(compose_cfg, arch: str, encoder: str) -> None:
    from aelab.data import build_data
    from aelab.engine.build import build_model
    from aelab.nets.adapter import takes_condition

    for model in ("vae", "cvae"):
        cfg = compose_cfg(["data=synthetic", "latent_dim=2", "device=cpu", f"arch={arch}", f"model={model}"])
        data = build_data(cfg.data, torch.device("cpu"))
        net = build_model(cfg, data.shape, data.num_classes)
        assert type(net.encoder).__name__ == encoder and takes_condition(net.encoder)  # not wrapped: same keys
    assert not takes_condition(nn.Sequential(nn.Linear(2, 2)))
