"""bf16 on the CPU: chosen by timing the model's own step, recorded with the run, the losses kept in fp32."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from aelab.engine import precision, trainer as trainer_mod
from aelab.models.mmd import squared_distances
from aelab.models.vamp import mixture_log_density
from aelab.nets.fastpath import FAST_PATHS, TimingPlan

TINY = ["data=synthetic", "latent_dim=4", "batch_size=64", "device=cpu", "logger=none", "seed=0"]


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A CPU that reports bf16 dot products (whatever this one has); fast-path choices cached under tmp_path."""
    monkeypatch.setattr(trainer_mod, "cpu_has_bf16_dot", lambda: True)
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "data-dir"))
    FAST_PATHS.configure("auto")
    yield
    FAST_PATHS.configure("auto")


@pytest.mark.parametrize(("flags", "expected"), [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True),
                                                 ("fpu avx2 avx512f", False)])
def test_bf16_hardware_is_read_from_the_cpu_flags(tmp_path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision.cpu_has_bf16_dot(cpuinfo) is expected
    assert precision.cpu_has_bf16_dot(tmp_path / "missing") is False


def test_squared_distances_and_mixture_densities_stay_exact_under_autocast() -> None:
    """|a|^2 + |b|^2 - 2 a.b cancels to noise in bf16 (codes near each other, far from the origin): these
    expansions run in fp32 even inside a bf16 autocast region."""
    g = torch.Generator().manual_seed(0)
    a = 20 + torch.randn(64, 8, generator=g) * 0.1
    b = 20 + torch.randn(32, 8, generator=g) * 0.1
    exact = ((a.double()[:, None] - b.double()[None]) ** 2).sum(-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        held = squared_distances(a, b)
        naive = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2.0 * a @ b.T).clamp_min(0.0)
    assert held.dtype == torch.float32
    assert (held.double() - exact).abs().max() < 5e-3  # fp32 rounding of |a|^2 ~ 3200
    assert (naive.double() - exact).abs().max() > 1.0  # what bf16 would have given
    mu, logvar = 20 + torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        held = mixture_log_density(a, mu, logvar)
    assert torch.allclose(held, mixture_log_density(a, mu, logvar), rtol=1e-5)  # as fp32 outside autocast


def test_autocast_nets_hand_back_fp32_outputs(compose_cfg) -> None:
    from aelab.engine.build import build_trainer

    trainer, data = build_trainer(compose_cfg(["model=vae", *TINY, "epochs=1", "trainer.precision=bf16"]),
                                  torch.device("cpu"), "unused")
    x = data.train.head(8).x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = trainer.model.encoder(x, None)
        logits = trainer.model.decoder(codes[:, :4])
        inner = trainer.model.encoder.net[0](x.flatten(1))  # a layer inside the net computes in bf16
    assert codes.dtype == logits.dtype == torch.float32 and inner.dtype == torch.bfloat16


def _fit(compose_cfg, tmp_path, name: str, extra: list[str], steps: int = 30):
    from aelab.engine.build import build_trainer

    torch.manual_seed(0)
    trainer, _ = build_trainer(compose_cfg(["model=vae", *TINY, "epochs=1", f"trainer.limit_batches={steps}", *extra]),
                               torch.device("cpu"), tmp_path / name)
    trainer.fit()
    return trainer


@pytest.mark.parametrize(("model", "family"), [("vae", "VAE"), ("factor_vae", "FactorVAE")])
def test_auto_times_the_step_once_and_records_the_choice(bf16_cpu, compose_cfg, tmp_path, monkeypatch, model: str,
                                                         family: str) -> None:
    """auto on a CPU with bf16: the first step times bf16 against fp32 on the run's own step (every phase, with its
    update: FactorVAE's second phase trains the discriminator); the choice is cached for the machine, carried in the
    checkpoint, and timing leaves no trace in what the run computes."""
    timed, ways = [], []
    real, real_step = FAST_PATHS.use_fast, trainer_mod.Trainer._step_as

    def spy(path, key, fast, plain, sync=None, **timing):
        if path == "cpu_bf16":
            timed.append(key)
        return real(path, key, fast, plain, sync, **timing)

    def step_as(self, way, batch):
        ways.append(way)
        return real_step(self, way, batch)

    monkeypatch.setattr(FAST_PATHS, "use_fast", spy)
    monkeypatch.setattr(trainer_mod.Trainer, "_step_as", step_as)
    first = _fit(compose_cfg, tmp_path, "first", [f"model={model}"])
    assert len(timed) == 1 and timed[0].startswith(f"{family} ")
    assert {"fp32", "autocast"} <= set(ways)
    chosen = FAST_PATHS.known("cpu_bf16", timed[0])
    assert (first.amp_dtype == torch.bfloat16 or first.bf16_matmuls) is chosen
    state = torch.load(tmp_path / "first" / "checkpoints" / "last.pt", weights_only=False)
    assert state["fast_paths"][f"cpu_bf16|{timed[0]}"]["fast"] is chosen
    cache = json.loads((tmp_path / "data-dir" / "fastpaths.json").read_text())
    assert any(f"cpu_bf16|{timed[0]}" in entries for entries in cache.values())
    # a second run reads the machine's cache (no timing) and computes exactly what the timed run computed
    FAST_PATHS.configure("auto")
    second = _fit(compose_cfg, tmp_path, "second", [f"model={model}"])
    assert len(timed) == 2
    cpu_bf16 = [c for c in FAST_PATHS.choices() if c.path == "cpu_bf16"]
    assert cpu_bf16[0].source == "cached"
    for p, q in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)


def test_the_step_is_timed_with_its_update_and_leaves_no_trace(bf16_cpu, monkeypatch) -> None:
    """The optimizer's update streams the weights and Adam's moments through the caches, where autocast's casts of
    the weights then read them, so the timing runs the whole step (without the update autocast timed faster than it
    trains); the parameters, the optimizer's moments and the gradients are put back after."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(32, 8)

    def loss() -> dict[str, torch.Tensor]:
        return {"mse": (model(x) - x).square().mean()}

    loss()["mse"].backward()  # one real step first: the moments to put back are not empty
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    weights = [p.detach().clone() for p in model.parameters()]
    moments = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    ways = []

    def step(way: str) -> None:  # what the trainer hands over: its own step, with the update
        ways.append(way)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=way == "autocast"):
            total = loss()["mse"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    # blocks of one way's steps in a row, as training runs them (a real model's: ~100 ms, at most 30 steps)
    monkeypatch.setattr(precision, "STEP_TIMING", TimingPlan(min_seconds=10.0, max_reps=3, rounds=2))
    precision.choose_cpu_bf16(model, step, len(x), [optimizer])
    assert [(way, len(list(run))) for way, run in itertools.groupby(ways)] == [
        ("autocast", 2), ("fp32", 2), ("autocast", 3), ("fp32", 3), ("autocast", 3), ("fp32", 3)]  # warm-up, 2 rounds
    precision.choose_bf16_matmuls(model, step, len(x), [optimizer])
    assert {"fp32", "autocast", "matmuls"} == set(ways)
    assert precision.step_key(model, len(x)).endswith("train step")
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    for p, saved in zip(model.parameters(), moments):
        assert optimizer.state[p].keys() == saved.keys()
        assert all(torch.equal(optimizer.state[p][k], v) for k, v in saved.items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("model", ["vae", "iwae", "wae", "vamp"])
def test_bf16_training_reaches_fp32s_loss(bf16_cpu, compose_cfg, tmp_path, model: str) -> None:
    """The same run in bf16 (forced) and fp32: the networks in bf16, the losses in fp32, the final validation loss
    within 1% (the four models the peer benchmark compares with pythae)."""
    from aelab.engine.build import build_trainer

    losses = {}
    for prec in ("bf16", "fp32"):
        FAST_PATHS.configure("auto")
        torch.manual_seed(0)
        overrides = [f"model={model}", *TINY, "epochs=3", f"trainer.precision={prec}"]
        if model == "vamp":
            overrides.append("model.pseudo_inputs=10")
        trainer, _ = build_trainer(compose_cfg(overrides), torch.device("cpu"), tmp_path / prec)
        summary = trainer.fit()
        assert trainer.amp_dtype == (torch.bfloat16 if prec == "bf16" else None)
        losses[prec] = summary["val/loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.01)


def test_forced_fp32_never_times(bf16_cpu, compose_cfg, tmp_path) -> None:
    trainer = _fit(compose_cfg, tmp_path, "fp32", ["trainer.fast_path.cpu_bf16=off"], steps=3)
    assert trainer.amp_dtype is None
    assert [c.source for c in FAST_PATHS.choices() if c.path == "cpu_bf16"] == ["forced"]
    trainer = _fit(compose_cfg, tmp_path, "p32", ["trainer.precision=fp32"], steps=3)
    assert trainer.amp_dtype is None and not trainer.precision_pending


def test_a_conv_stacks_layout_key_does_not_depend_on_the_precision(monkeypatch) -> None:
    """A stack keeps the layout of its first forward: a bf16-trained run meets it under autocast, the same run
    reopened by eval in fp32, so both must ask for the same choice (else the reopened model computes in another
    layout: test_loaded_run_reproduces_the_trained_model[vae-conv] failed so on a clean CI run)."""
    from aelab.nets import conv
    from aelab.nets.conv import ConvArch

    keys = []
    monkeypatch.setattr(FAST_PATHS, "choose", lambda path, key, candidates: keys.append(key) or False)
    x = torch.rand(4, 1, 16, 16)
    for amp in (True, False):
        stack = ConvArch([4, 8]).encoder((1, 16, 16), 6)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            conv._channels_last_is_faster(stack, x, ())  # the encoder is the layout-tuned stack
    assert len(keys) == 2 and keys[0] == keys[1]


def _bf16_rounded(t: torch.Tensor) -> torch.Tensor:
    return t.bfloat16().double()


@pytest.mark.skipif(not precision.cpu_has_bf16_dot(), reason="oneDNN takes the bf16 setting only where the CPU has it")
def test_bf16_matmuls_round_the_operands_and_leave_exact_blocks_exact() -> None:
    """Inside bf16_matmuls() an fp32 product is the fp32-accumulated product of the bf16-rounded operands, in both
    directions of autograd; full_precision() inside it and everything after it compute exactly again."""
    from aelab.nets.precision import bf16_matmuls, bf16_matmuls_on, full_precision

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g)
    w = torch.randn(32, 96, generator=g).requires_grad_()
    exact = x.double() @ w.detach().double().T
    rounded = _bf16_rounded(x) @ _bf16_rounded(w.detach()).T
    before = torch.backends.mkldnn.matmul.fp32_precision
    with bf16_matmuls():
        assert bf16_matmuls_on()
        y = torch.nn.functional.linear(x, w)
        with full_precision(x) as (held,):
            inside = held @ w.detach().T
            assert not bf16_matmuls_on()
        assert bf16_matmuls_on()
        y.backward(torch.ones_like(y))
    assert torch.backends.mkldnn.matmul.fp32_precision == before and not bf16_matmuls_on()
    assert y.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert (y.double() - rounded).abs().max() < 1e-3 < (y.double() - exact).abs().max()  # bf16 rounding's size
    assert (inside.double() - exact).abs().max() < 1e-3
    grad_rounded = torch.ones(64, 32, dtype=torch.float64).T @ _bf16_rounded(x)
    assert (w.grad.double() - grad_rounded).abs().max() < 1e-3
    after = x @ w.detach().T
    assert (after.double() - exact).abs().max() < 1e-3


@pytest.mark.parametrize("model", ["vae", "iwae"])
def test_bf16_matmul_steps_reach_fp32s_loss_and_validate_exactly(bf16_cpu, compose_cfg, tmp_path, model: str,
                                                                   monkeypatch) -> None:
    """The bf16_matmul path forced: the step runs in fp32 without autocast, its matmuls rounded to bf16 by oneDNN,
    and reaches fp32's validation loss within 1%; validation itself runs with the setting off (exact fp32)."""
    from aelab.engine.build import build_trainer
    from aelab.nets import precision as nets_precision

    seen = []
    real_measure = trainer_mod.measure
    monkeypatch.setattr(trainer_mod, "measure",
                        lambda *a, **k: seen.append(nets_precision.bf16_matmuls_on()) or real_measure(*a, **k))
    losses = {}
    for name, extra in (("matmuls", ["trainer.fast_path.cpu_bf16=on", "trainer.fast_path.bf16_matmul=on"]),
                        ("fp32", ["trainer.precision=fp32"])):
        FAST_PATHS.configure("auto")
        torch.manual_seed(0)
        trainer, _ = build_trainer(compose_cfg([f"model={model}", *TINY, "epochs=3", *extra]), torch.device("cpu"),
                                   tmp_path / name)
        summary = trainer.fit()
        assert trainer.bf16_matmuls is (name == "matmuls") and trainer.amp_dtype is None
        losses[name] = summary["val/loss"]
    assert seen and not any(seen)
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"
    assert losses["matmuls"] == pytest.approx(losses["fp32"], rel=0.01)


def test_autocast_stays_where_bf16_matmuls_lose(bf16_cpu, compose_cfg, tmp_path) -> None:
    trainer = _fit(compose_cfg, tmp_path, "ac", ["trainer.fast_path.cpu_bf16=on", "trainer.fast_path.bf16_matmul=off"],
                   steps=3)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.bf16_matmuls
    from aelab.engine.build import build_trainer

    FAST_PATHS.configure("auto")
    compiled, data = build_trainer(compose_cfg(["model=vae", *TINY, "trainer.compile=true",
                                                "trainer.fast_path.cpu_bf16=on", "trainer.fast_path.bf16_matmul=on"]),
                                   torch.device("cpu"), tmp_path / "compiled")
    compiled._choose_precision(data.train.head(8))  # both paths forced: nothing is timed (nor compiled)
    assert compiled.amp_dtype == torch.bfloat16 and not compiled.bf16_matmuls  # a compiled step keeps autocast


def test_a_resumed_run_takes_back_its_bf16_matmuls(bf16_cpu, compose_cfg, tmp_path) -> None:
    """A run that chose bf16 matmuls by timing records it; resumed on a machine whose cache says autocast, it
    computes with its own choice and continues exactly as the straight run did."""
    from aelab.commands import train
    from aelab.nets import fastpath

    key = None

    def say(fast: bool) -> None:  # the machine's cache: bf16 pays, and this way (or autocast) is the faster
        nonlocal key
        entries = {f"cpu_bf16|{key}": {"fast": True, "fast_us": 1.0, "plain_us": 2.0, "steady": True},
                   f"bf16_matmul|{key}": {"fast": fast, "fast_us": 1.0, "plain_us": 2.0, "steady": True}}
        (tmp_path / "data-dir").mkdir(exist_ok=True)
        (tmp_path / "data-dir" / "fastpaths.json").write_text(json.dumps({fastpath.machine_fingerprint(): entries}))
        FAST_PATHS.configure("auto")

    base = ["model=vae", *TINY, "trainer.limit_batches=4"]
    probe_trainer = _fit(compose_cfg, tmp_path, "probe", [], steps=1)
    key = precision.step_key(probe_trainer.model, 64)
    say(True)
    straight = train.run(compose_cfg([*base, "epochs=2"]), tmp_path / "straight", [*base, "epochs=2"])
    say(True)
    train.run(compose_cfg([*base, "epochs=1"]), tmp_path / "split", [*base, "epochs=1"])
    say(False)  # the machine now prefers autocast: the run's record must win
    resumed = train.run(compose_cfg([f"resume={tmp_path / 'split'}", "epochs=2"]), tmp_path / "split",
                        [f"resume={tmp_path / 'split'}", "epochs=2"])
    sources = {c.path: c.source for c in FAST_PATHS.choices()}
    assert sources["bf16_matmul"] == "the run's" and FAST_PATHS.known("bf16_matmul", key) is True
    for name in ("train/loss", "val/loss"):
        assert resumed[name] == straight[name], name


@pytest.mark.skipif(not precision.cpu_has_bf16_dot(), reason="oneDNN takes the bf16 setting only where the CPU has it")
def test_a_step_with_exact_blocks_keeps_autocast(bf16_cpu, compose_cfg, tmp_path) -> None:
    """Autograd runs a full_precision() block's backward after the block has closed: under bf16_matmuls() its
    matmuls would round (the gradient of |a - b|^2 for close codes far from the origin turns to noise), under
    autocast they stay fp32. So a model whose step enters such a block (WAE's MMD) keeps autocast, even forced."""
    g = torch.Generator().manual_seed(0)
    a = (20 + torch.randn(64, 8, generator=g) * 0.1).requires_grad_()
    b = 20 + torch.randn(32, 8, generator=g) * 0.1
    exact = 2 * (a.detach().double()[:, None] - b.double()[None]).sum(1)  # d/da of sum_j |a - b_j|^2
    errors = {}
    for name in ("autocast", "matmuls"):
        a.grad = None
        from aelab.nets.precision import bf16_matmuls

        with bf16_matmuls(name == "matmuls"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "autocast"):
                d = squared_distances(a, b)
            d.sum().backward()
        errors[name] = (a.grad.double() - exact).abs().max().item()
    assert errors["autocast"] < 1e-3 < 0.05 < errors["matmuls"]
    trainer = _fit(compose_cfg, tmp_path, "wae", ["model=wae", "trainer.fast_path.cpu_bf16=on",
                                                  "trainer.fast_path.bf16_matmul=on"], steps=2)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.bf16_matmuls
