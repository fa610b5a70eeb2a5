"""The performance paths compute exactly what the plain PyTorch forms compute.

Fast CPU paths: oneDNN linear layers, the log-free Bernoulli loss, in-place importance-sampling
terms, fused Adam, channels-last convolutions. Each is checked against the textbook form, values and
gradients, on shapes that exercise its edge cases.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelab.engine.trainer import fused_if_available
from aelab.models.likelihoods import Bernoulli, Gaussian, _BernoulliNLL, sum_softplus
from aelab.nets import linear as linear_mod
from aelab.nets.conv import ConvArch
from aelab.nets.fastpath import FAST_PATHS
from aelab.nets.linear import Linear


# ---- Bernoulli loss without a log per pixel ----------------------------------------------
@pytest.mark.parametrize("shape", [(7, 1, 28, 28), (5, 3, 5, 7), (4, 16), (3, 1)])
def test_sum_softplus_matches_softplus(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    logits = torch.randn(*shape) * 6
    logits.view(-1)[:3] = torch.tensor([80.0, -80.0, 0.0])[: logits.numel()]  # far tails: no overflow, no underflow
    expected = F.softplus(logits.flatten(1)).sum(1)
    assert torch.allclose(sum_softplus(logits.flatten(1)), expected, rtol=1e-5, atol=1e-3)
    consumed = logits.flatten(1).clone()
    assert torch.allclose(sum_softplus(consumed, consume=True), expected, rtol=1e-5, atol=1e-3)


def test_bernoulli_loss_and_gradient_match_bce_with_logits() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    logits = (torch.randn(16, 1, 28, 28) * 5).requires_grad_()
    ours = Bernoulli().batch_nll(logits, x)
    (grad,) = torch.autograd.grad(ours, logits)
    reference = logits.detach().clone().requires_grad_()
    theirs = F.binary_cross_entropy_with_logits(reference, x, reduction="sum") / 16
    theirs.backward()
    assert torch.allclose(ours, theirs, rtol=1e-6)
    assert torch.allclose(grad, reference.grad, atol=1e-7)
    per_image = Bernoulli().nll(logits.detach(), x)
    assert per_image.shape == (16,)
    assert torch.allclose(per_image, F.binary_cross_entropy_with_logits(logits.detach(), x, reduction="none").sum((1, 2, 3)),
                          rtol=1e-6)


def test_bernoulli_loss_gradcheck() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(3, 2, 5, dtype=torch.double) * 4).requires_grad_()
    x = torch.rand(3, 2, 5, dtype=torch.double).requires_grad_()
    assert torch.autograd.gradcheck(_BernoulliNLL.apply, (logits, x))


@pytest.mark.parametrize("likelihood", [Bernoulli(), Gaussian()], ids=["bernoulli", "gaussian"])
def test_nll_of_draws_consume_matches_per_draw_nll(likelihood) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 5)
    draws = torch.randn(3, 6, 1, 4, 5) * 3
    expected = torch.stack([likelihood.nll(d, x) for d in draws])  # (S, B)
    assert torch.allclose(likelihood.nll_of_draws(draws, x), expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(likelihood.nll_of_draws(draws.clone(), x, consume=True), expected, rtol=1e-5, atol=1e-4)


# ---- oneDNN linear layers --------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_nn_linear_values_and_gradients(bias: bool) -> None:
    torch.manual_seed(0)
    ours, plain = Linear(37, 23, bias=bias), nn.Linear(37, 23, bias=bias)
    plain.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())  # checkpoints do not depend on the path
    x = torch.randn(2, 9, 37)  # leading dims are flattened and restored
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), plain(x2)
    assert y1.shape == (2, 9, 23)
    assert torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    for a, b in zip(ours.parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


def test_linear_handles_broadcast_gradients_and_empty_batches() -> None:
    torch.manual_seed(0)
    ours, plain = Linear(4, 3), nn.Linear(4, 3)
    plain.load_state_dict(ours.state_dict())
    x1 = torch.randn(5, 4, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    ours(x1).sum().backward()  # the incoming gradient is an expanded (stride-0) tensor
    plain(x2).sum().backward()
    assert torch.allclose(x1.grad, x2.grad) and torch.allclose(ours.weight.grad, plain.weight.grad)
    assert ours(torch.randn(0, 4)).shape == (0, 3)


@pytest.mark.skipif(linear_mod._ONEDNN is None, reason="this torch has no oneDNN linear")
def test_linear_takes_onednn_on_cpu_fp32_and_falls_back_elsewhere() -> None:
    layer, x = Linear(8, 4), torch.randn(3, 8)
    assert linear_mod.onednn_applies(x, layer.weight)
    assert not linear_mod.onednn_applies(x.double(), layer.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear_mod.onednn_applies(x, layer.weight)
        assert layer(x).dtype == torch.bfloat16  # autocast's own linear ran


def test_onednn_linear_can_be_switched_off() -> None:
    code = "import aelab.nets.linear as m; print(m._ONEDNN is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "AELAB_ONEDNN_LINEAR": "0"})
    assert out.stdout.strip() == "True"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_compiled_training_step_matches_eager() -> None:
    """trainer.compile=true: inductor must not lower the oneDNN linear (it needs constant weights)."""
    import torch._inductor.config

    # the same noise as eager; inductor's own patch, which restores the setting (monkeypatch's undo deleted it, and
    # every later compile in the process failed: "torch._inductor.config.fallback_random does not exist")
    with torch._inductor.config.patch(fallback_random=True):
        _compare_compiled_vae()


def _compare_compiled_vae() -> None:
    from aelab.models.vae import VAE
    from aelab.nets.mlp import MLPArch
    from aelab.data.base import Batch

    torch.manual_seed(0)
    model = VAE(MLPArch(hidden=[32]), (1, 6, 6), latent_dim=3)
    batch = Batch(torch.rand(16, 1, 6, 6))
    torch.manual_seed(1)
    eager = model.losses(batch, 1)
    torch.manual_seed(1)
    compiled = torch.compile(model.losses)(batch, 1)
    for name in eager:
        assert torch.allclose(eager[name], compiled[name], rtol=1e-4), name
    sum(compiled.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_a_compiled_first_step_chooses_the_conv_layout_eagerly(fast_paths) -> None:
    """trainer.compile=true on a conv model: the first forward is traced before any layout is chosen; the choice (a
    timing, then moving the parameters) runs eagerly outside the graph instead of failing inside it (it did:
    `aelab train experiment=beta_tcvae_dsprites trainer.compile=true` stopped with a traceback at its first step)."""
    from aelab.data.base import Batch
    from aelab.models.vae import VAE
    from aelab.nets.conv import ConvArch

    torch.manual_seed(0)
    model = VAE(ConvArch([4, 8]), (1, 16, 16), latent_dim=3)
    terms = torch.compile(model.losses)(Batch(torch.rand(8, 1, 16, 16)), 1)
    sum(terms.values()).backward()
    layouts = [c for c in fast_paths.choices() if c.path == "conv_layout"]
    assert len(layouts) == 2 and all(c.source != "forced" for c in layouts)
    assert model.encoder.layout is not None and model.decoder.layout is not None


# ---- fused optimisers ------------------------------------------------------------------------
def test_fused_is_requested_where_the_optimizer_has_it() -> None:
    params = [nn.Parameter(torch.randn(3))]
    adam = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3), torch.device("cpu"))
    assert adam(params).defaults["fused"] is True
    chosen = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3, foreach=True, fused=False),
                                torch.device("cpu"))
    assert chosen(params).defaults["fused"] is False  # the user's choice wins
    lbfgs = fused_if_available(functools.partial(torch.optim.LBFGS, lr=1.0), torch.device("cpu"))
    assert "fused" not in lbfgs.keywords  # no fused implementation: left alone
    mps = fused_if_available(functools.partial(torch.optim.Adam, lr=1e-3), torch.device("mps"))
    assert "fused" not in mps.keywords


# ---- channels-last convolutions --------------------------------------------------------------
@pytest.fixture
def fast_paths(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """The process's fast-path settings, restored after the test; choices cached under tmp_path."""
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(FAST_PATHS, "_cached", None)
    yield FAST_PATHS
    FAST_PATHS.configure("auto")
    FAST_PATHS._cached = None


def test_conv_nets_keep_the_ordinary_layout_at_their_edges(fast_paths) -> None:
    torch.manual_seed(0)
    arch = ConvArch([8, 16])
    x = torch.rand(4, 1, 28, 28)
    outs = {}
    for mode in ("on", "off"):  # on: channels-last inside; off: the ordinary (NCHW) layout throughout
        fast_paths.configure("auto", {"conv_layout": mode})
        torch.manual_seed(0)
        enc, dec = arch.encoder((1, 28, 28), 6), arch.decoder(6, (1, 28, 28))
        outs[mode] = dec(enc(x))
        assert outs[mode].shape == (4, 1, 28, 28) and outs[mode].is_contiguous()
        assert enc.features[1][0].weight.is_contiguous(memory_format=torch.channels_last) == (mode == "on")
    assert torch.allclose(outs["on"], outs["off"], atol=1e-5)  # the same function, the same weights


# ---- choosing a way by timing it ----------------------------------------------------------------
def _work(n: int):
    a = torch.randn(n, n)
    return lambda: a @ a


def test_a_conv_stacks_layout_does_not_depend_on_what_its_first_forward_was(fast_paths, monkeypatch) -> None:
    """A trained model's first forward is a training step, the same model reopened first encodes an eval batch: the
    layout each keeps for good must come from one key, or the two compute differently (a flaky bit-for-bit test)."""
    from aelab.nets.conv import ConvEncoder

    keys = []
    real = fast_paths.choose
    monkeypatch.setattr(fast_paths, "choose", lambda path, key, candidates: (keys.append((path, key)),
                                                                             real(path, key, candidates))[1])
    torch.manual_seed(0)
    trained, reopened = ConvEncoder((1, 16, 16), [8, 16], 4, 0.2), ConvEncoder((1, 16, 16), [8, 16], 4, 0.2)
    trained(torch.rand(64, 1, 16, 16)).sum().backward()  # a training step's batch
    with torch.no_grad():
        reopened.eval()(torch.rand(7, 1, 16, 16))  # an evaluation batch of another size, no gradients
    layout = [k for k in keys if k[0] == "conv_layout"]
    assert len(layout) == 2 and layout[0] == layout[1] and trained.layout == reopened.layout


def test_auto_keeps_the_faster_way_and_a_tie_keeps_the_plain_one(fast_paths) -> None:
    small, large = _work(32), _work(256)  # ~500x apart in FLOPs
    assert fast_paths.use_fast("linear", "a", small, large) is True
    assert fast_paths.use_fast("linear", "b", large, small) is False
    same = _work(64)
    assert fast_paths.use_fast("linear", "c", same, same) is False  # equal within TIE: torch's own op
    made = {c.key: c for c in fast_paths.choices()}
    assert made["a"].fast_us < made["a"].plain_us and made["a"].source == "measured"


def test_choices_are_cached_per_machine_and_retune_measures_again(fast_paths, tmp_path) -> None:
    from aelab.nets import fastpath

    small, large = _work(32), _work(256)
    fast_paths.use_fast("bernoulli_nll", "k", small, large)
    stored = json.loads((tmp_path / "fastpaths.json").read_text())
    assert stored[fastpath.machine_fingerprint()]["bernoulli_nll|k"]["fast"] is True

    def never() -> None:
        raise AssertionError("a cached choice must not be timed again")

    fresh = fastpath.FastPaths()  # a later run on this machine
    assert fresh.use_fast("bernoulli_nll", "k", never, never) is True and fresh.choices()[0].source == "cached"
    fresh.configure("retune")
    assert fresh.use_fast("bernoulli_nll", "k", large, small) is False  # measured again, and stored
    assert json.loads((tmp_path / "fastpaths.json").read_text())[fastpath.machine_fingerprint()][
        "bernoulli_nll|k"]["fast"] is False


def test_a_busy_machines_timing_decides_its_own_run_only(fast_paths, tmp_path, monkeypatch) -> None:
    """A timing whose rounds disagree (another job on the cores) is used by the run that made it, and recorded in
    its checkpoint, but not cached for the machine: the next run times again instead of inheriting it."""
    from aelab.nets import fastpath

    calls = []

    def busy(fast, plain, sync=None, **timing):
        calls.append(1)
        return fastpath.PairTiming(1e-3, 2e-3, steady=False)

    monkeypatch.setattr(fastpath, "time_pair", busy)
    assert fast_paths.use_fast("bernoulli_nll", "k", None, None) is True
    choice = fast_paths.choices()[0]
    assert not choice.steady and "not cached" in choice.describe()
    assert fast_paths.record()["bernoulli_nll|k"]["fast"] is True  # the run still carries it
    assert not (tmp_path / "fastpaths.json").exists()
    fresh = fastpath.FastPaths()
    assert fresh.use_fast("bernoulli_nll", "k", None, None) is True and len(calls) == 2  # timed again


def test_entries_cached_without_steadiness_are_timed_again(fast_paths, tmp_path, monkeypatch) -> None:
    from aelab.nets import fastpath

    (tmp_path / "fastpaths.json").write_text(json.dumps(  # a cache from before steadiness was asked
        {fastpath.machine_fingerprint(): {"bernoulli_nll|k": {"fast": False, "fast_us": 8e4, "plain_us": 6.8e4}}}))
    monkeypatch.setattr(fastpath, "time_pair",
                        lambda fast, plain, sync=None, **timing: fastpath.PairTiming(1e-4, 1e-3, True))
    assert fast_paths.use_fast("bernoulli_nll", "k", None, None) is True
    assert fast_paths.choices()[0].source == "measured"
    stored = json.loads((tmp_path / "fastpaths.json").read_text())[fastpath.machine_fingerprint()]["bernoulli_nll|k"]
    assert stored["fast"] is True and stored["steady"] is True


def test_steadiness_is_two_rounds_that_agree(monkeypatch) -> None:
    import time

    from aelab.nets import fastpath

    monkeypatch.setattr(fastpath, "STEADY", 1.25)  # the module's value (conftest lifts it for the other tests)

    def constant() -> None:
        time.sleep(0.005)

    durations = iter(3.0 ** i * 1e-3 for i in range(100))

    def growing() -> None:  # 1, 3, 9, 27, ... ms: no two rounds agree, as on a machine getting busier
        time.sleep(next(durations))

    timing = fastpath.time_pair(constant, constant, plan=fastpath.TimingPlan(budget_seconds=1.0, rounds=3))
    assert timing.steady and 0.005 <= timing.fast_s < 0.02
    assert not fastpath.time_pair(constant, growing, plan=fastpath.TimingPlan(budget_seconds=1.0, rounds=3)).steady


def test_a_plan_bounds_each_measurement_by_time_and_by_calls() -> None:
    """A training step is timed in blocks of one way's steps (precision.STEP_TIMING): as long as min_seconds asks,
    but never more than max_reps calls, so a small model's blocks stay short."""
    from aelab.nets import fastpath

    calls = {"fast": 0, "plain": 0}

    def way(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    fastpath.time_pair(way("fast"), way("plain"), plan=fastpath.TimingPlan(min_seconds=10.0, max_reps=4, rounds=3))
    assert calls == {"fast": 2 + 3 * 4, "plain": 2 + 3 * 4}  # warm-up and first sample, then 3 rounds of 4 calls


def test_on_and_off_force_every_path_without_timing(fast_paths) -> None:
    def never() -> None:
        raise AssertionError("a forced choice is not timed")

    fast_paths.configure("off", {"linear": "on"})
    assert fast_paths.use_fast("linear", "k", never, never) is True
    assert fast_paths.use_fast("conv_layout", "k", never, never) is False
    assert fast_paths.choices()[0].source == "forced"


def test_ranks_of_a_distributed_run_never_time(fast_paths) -> None:
    """A timing forward through SyncBatchNorm all-reduces: ranks timing different rounds would mispair
    their collectives. Untimed, they take the machine's cached choice, else the plain way, alike."""
    def never() -> None:
        raise AssertionError("a rank of a distributed run does not time")

    fast_paths.use_fast("linear", "cached", *[_work(32), _work(256)])  # an earlier single-process run's choice
    fast_paths.configure("auto", timing=False)
    assert fast_paths.use_fast("linear", "cached", never, never) is True
    assert fast_paths.use_fast("conv_layout", "new", never, never) is False
    assert [c.source for c in fast_paths.choices()] == ["cached", "untimed in a distributed run"]
    fast_paths.configure("on", timing=False)  # a forced path is forced on every rank alike
    assert fast_paths.use_fast("conv_layout", "new", never, never) is True


@pytest.mark.skipif(linear_mod._ONEDNN is None, reason="this torch has no oneDNN linear")
def test_linear_follows_the_choice_and_computes_the_same_either_way(fast_paths, monkeypatch) -> None:
    layer, x = Linear(8, 4), torch.randn(3, 8, requires_grad=True)
    calls = []
    monkeypatch.setattr(linear_mod, "_OneDNNLinear", type("Spy", (), {"apply": staticmethod(
        lambda *a: calls.append(1) or F.linear(*a))}))
    outs = {}
    for mode in ("on", "off"):
        fast_paths.configure(mode)
        outs[mode] = layer(x)
    assert calls == [1]  # oneDNN only where the path is on
    assert torch.allclose(outs["on"], outs["off"])


def test_bernoulli_nll_follows_the_choice(fast_paths) -> None:
    logits, x = torch.randn(5, 1, 4, 4, requires_grad=True), torch.rand(5, 1, 4, 4)
    values = {}
    for mode in ("on", "off"):
        fast_paths.configure("auto", {"bernoulli_nll": mode})
        values[mode] = Bernoulli().nll(logits, x)
        assert (values[mode].grad_fn.name() == "_BernoulliNLLBackward") == (mode == "on")
    assert torch.allclose(values["on"], values["off"], atol=1e-5)


def test_a_training_run_logs_its_choices_and_the_key_forces_them(compose_cfg, tmp_path, caplog) -> None:
    import logging

    from aelab.engine.build import build_trainer

    cfg = compose_cfg(["model=vae", "data=synthetic", "epochs=1", "trainer.limit_batches=2", "logger=none",
                       "trainer.fast_path.linear=off", "device=cpu"])
    with caplog.at_level(logging.INFO, logger="aelab.nets.fastpath"):
        trainer, _ = build_trainer(cfg, torch.device("cpu"), tmp_path)
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if r.name == "aelab.nets.fastpath"]
    assert any(line.startswith("fast path linear") and "torch matmul (forced)" in line for line in lines)
    assert any(line.startswith("fast path bernoulli_nll") for line in lines)
    FAST_PATHS.configure("auto")


def test_reopening_a_run_keeps_this_processs_choices_under_the_same_modes(fast_paths) -> None:
    small, large = _work(32), _work(256)
    assert fast_paths.use_fast("bernoulli_nll", "met after the last checkpoint", small, large) is True
    fast_paths.follow_run("auto", None, {"linear|k": {"fast": False}})  # a run trained in this process, reopened
    assert fast_paths.known("bernoulli_nll", "met after the last checkpoint") is True  # not timed again
    assert fast_paths.use_fast("linear", "k", small, large) is False  # the run's record
    fast_paths.follow_run("off", None, None)  # other modes: this process's choices no longer apply
    assert fast_paths.known("bernoulli_nll", "met after the last checkpoint") is None


def test_a_run_carries_its_choices_and_a_resume_computes_with_them(fast_paths, compose_cfg, tmp_path, caplog) -> None:
    """Exact resume must not depend on the load: the checkpoint records every choice made by timing, and a
    resumed run (or a command opening the run) takes them before the machine's cache, which says otherwise here."""
    import logging

    from aelab.commands import train
    from aelab.engine.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
    from aelab.engine.loading import load_trained
    from aelab.nets import fastpath

    overrides = ["model=vae", "data=synthetic", "epochs=1", "trainer.limit_batches=2", "logger=none", "device=cpu"]
    train.run(compose_cfg(overrides), tmp_path / "run", overrides)
    last = checkpoint_path(tmp_path / "run")
    state = load_checkpoint(last)
    recorded = state["fast_paths"]
    assert any(k.startswith("linear|") for k in recorded) and any(k.startswith("bernoulli_nll|") for k in recorded)
    # the run says "fast" everywhere, the machine's cache says the opposite: the run's word must win
    state["fast_paths"] = {k: {**v, "fast": True} for k, v in recorded.items()}
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, last)
    (tmp_path / "fastpaths.json").write_text(json.dumps(
        {fastpath.machine_fingerprint(): {k: {**v, "fast": False} for k, v in recorded.items()}}))
    with caplog.at_level(logging.INFO, logger="aelab.nets.fastpath"):
        train.run(compose_cfg([f"resume={tmp_path / 'run'}", "epochs=2"]), tmp_path / "run",
                  [f"resume={tmp_path / 'run'}", "epochs=2"])
    resumed = [c for c in FAST_PATHS.choices() if f"{c.path}|{c.key}" in recorded]
    assert resumed and all(c.fast and c.source == "the run's" for c in resumed)
    assert set(recorded) <= set(load_checkpoint(last)["fast_paths"])  # still recorded, for the next resume
    load_trained(tmp_path / "run")  # eval, sample, ... compute with the run's kernels too
    assert FAST_PATHS.record() == {k: {**v, "fast": True} for k, v in recorded.items()}


@pytest.mark.parametrize("override, key, allowed", [
    ("trainer.fast_paths=fast", "trainer.fast_paths", "retune"),
    ("+trainer.fast_path.matmul=on", "trainer.fast_path.matmul", "bernoulli_nll"),
    ("trainer.fast_path.linear=yes", "trainer.fast_path.linear", "retune")])
def test_a_wrong_fast_path_setting_is_one_line_naming_the_key(override: str, key: str, allowed: str) -> None:
    out = subprocess.run([sys.executable, "-m", "aelab", "train", override, "data=synthetic", "epochs=1"],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert key in out.stderr and allowed in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
