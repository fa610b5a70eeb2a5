"""eval, sample and interpolate on runs of every family, and the eval metrics measuring what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from aelab.commands import eval as eval_command
from aelab.commands import interpolate, sample, train
from aelab.commands.session import RunSession
from aelab.data.base import TensorSplit
from aelab.engine.loading import load_trained
from conftest import cli_env, model_names, noise_images

CPU = torch.device("cpu")
TINY_RUN = ["data=synthetic", "epochs=1", "batch_size=64", "device=cpu", "logger=none", "trainer.limit_batches=4"]
QUICK_EVAL = ["iw_samples=16", "probe.max_train=300", "generation.samples=128", "views.points=120", "views.tsne=0",
              "noise=[0.2]", "num_images=8"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: a second torch thread gains nothing, and on a busy machine two threads spin against each other
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compose(overrides: list[str], name: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            return compose(config_name=name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _train(run_dir: Path, *overrides: str) -> Path:
    args = [*TINY_RUN, *overrides]
    train.run(_compose(args, "train"), run_dir, args)
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 2-D VAE and a 4-D AE, trained a little longer than the per-family runs (real behaviour to measure)."""
    root = tmp_path_factory.mktemp("explore-runs")
    return {"vae": _train(root / "vae", "model=vae", "latent_dim=2", "epochs=3", "trainer.limit_batches=null"),
            "ae": _train(root / "ae", "model=ae", "latent_dim=4", "epochs=3", "trainer.limit_batches=null")}


@pytest.mark.parametrize("family", model_names())
def test_every_command_runs_on_every_family(family: str, tmp_path) -> None:
    extra = ["model.supervised=true", "model.prior=mixture"] if family == "aae" else []
    run = _train(tmp_path, f"model={family}", "latent_dim=2", *extra)
    model = load_trained(run).model
    on_run = [f"run={run}", "device=cpu"]
    before = {p.name for p in run.iterdir()}

    metrics = eval_command.run(_compose([*on_run, *QUICK_EVAL, "anomaly.normal=[0]"], "eval"))
    saved = json.loads(Path(metrics["output_dir"], "metrics.json").read_text())
    assert all(k.startswith("test/") for k in saved if isinstance(saved[k], float)), saved  # flat split/metric keys
    for key in ("test/loss", "test/recon_bce", "test/recon_mse", "test/psnr", "test/ssim", "test/probe_accuracy",
                "test/pca_probe_accuracy", "test/denoise_psnr_0.2", "test/anomaly_recon_auroc"):
        assert np.isfinite(saved[key]), key
    assert ("test/nll_iw" in saved) == model.has_posterior == ("test/anomaly_elbo_auroc" in saved)
    assert ("test/frechet_distance" in saved) == model.has_prior
    assert list(Path(metrics["output_dir"]).glob("events.out.tfevents.*"))

    drawn = sample.run(_compose([*on_run, "n=9", "grid_size=3", *(["style_from=1"] if model.conditional else [])],
                                "sample"))
    assert Path(drawn["output_dir"], drawn.get("samples") or drawn["samples_fitted_gaussian"]).stat().st_size > 0
    assert any(k.startswith("latent_grid") for k in drawn)  # 2-D codes: the decoded plane
    assert ("samples_by_class" in drawn) == (model.samples_by_class and model.has_prior)
    assert ("style_transfer" in drawn) == model.conditional

    path = interpolate.run(_compose([*on_run, "pairs=2", "steps=4", "frames=5", "arithmetic=0 - 1 + 2"],
                                    "interpolate"))
    made = {p.name for p in Path(path["output_dir"]).iterdir()}
    assert {"interpolation.png", "interpolation.gif", "arithmetic.png"} <= made
    assert {p.name for p in run.iterdir()} - before == {"eval", "sample", "interpolate"}  # beside, never over


def test_eval_metrics_measure_real_behaviour(trained, tmp_path) -> None:
    from aelab.metrics.generation import feature_net

    out = eval_command.run(_compose([f"run={trained['vae']}", "device=cpu", "iw_samples=64", "views.tsne=0",
                                     "noise=[0.1,0.5]", "probe.max_train=null", "generation.samples=128"], "eval"))
    assert out["test/nll_iw"] <= out["test/neg_elbo"] + 0.5  # the IWAE bound is at least as tight as the ELBO
    assert out["test/neg_elbo"] == pytest.approx(out["test/elbo_recon"] + out["test/elbo_kl"])
    assert sum(out[f"test/kl_dim/{d:02d}"] for d in range(2)) == pytest.approx(out["test/elbo_kl"], rel=1e-4)
    loaded = load_trained(trained["vae"])
    data = RunSession(_compose([f"run={trained['vae']}", "device=cpu"], "eval"), "eval").data
    split = data.test
    with torch.no_grad():
        codes = torch.cat([loaded.model.encode(b.x, b.y) for b in split.batches(256)])  # (N, 2) posterior means
    assert out["test/active_units"] == float((codes.var(0) > 0.01).sum())  # Burda et al.'s count, by hand
    assert out["test/knn_accuracy"] > 0.45 and out["test/pca_knn_accuracy"] > 0.45  # 4 shapes: chance is 0.25
    assert out["test/probe_accuracy"] > 0.3  # linear read-out of 2-D codes after 3 epochs
    assert out["test/noisy_psnr_0.1"] > out["test/noisy_psnr_0.5"]
    net, _, _ = feature_net(data, CPU, epochs=1, log=lambda _: None)  # the classifier eval cached, not a new one
    with torch.no_grad():
        right = sum(int((net(b.x).argmax(1) == b.y).sum()) for b in split.batches(256))
    assert out["test/feature_net_accuracy"] == pytest.approx(right / len(split), abs=1e-9)
    assert out["test/feature_net_accuracy"] > 0.9  # four clean shapes: measured 0.95 after the default training
    for key in ("test/precision", "test/recall"):  # shares of the 128 draws / 128 real examples
        assert (out[key] * 128) == pytest.approx(round(out[key] * 128), abs=1e-4), key
    assert out["test/frechet_reference"] < out["test/frechet_distance"]  # real data is closer to real data


def test_anomaly_detection_separates_noise_from_shapes(trained, tmp_path) -> None:
    from aelab.metrics.anomaly import anomaly_metrics

    model = load_trained(trained["ae"]).model
    data = RunSession(_compose([f"run={trained['ae']}", "device=cpu"], "eval"), "eval").data
    noise = (torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    found = anomaly_metrics(model, data.test, 64, outliers=TensorSplit(noise, torch.zeros(100), CPU))
    assert found["anomaly_recon_auroc"] > 0.95 and found["anomaly_recon_auprc"] > 0.9
    by_class = anomaly_metrics(model, data.test, 64, normal=[0, 1])
    swapped = anomaly_metrics(model, data.test, 64, normal=[2, 3])  # the same scores, the other classes anomalous
    assert by_class["anomaly_recon_auroc"] + swapped["anomaly_recon_auroc"] == pytest.approx(1.0, abs=1e-12)
    assert anomaly_metrics(model, data.test, 64, normal=[0, 1, 2, 3]) == {}  # no anomalies: nothing to rank


def test_probes_read_the_shape_from_the_codes(trained) -> None:
    from aelab.metrics.probes import latent_probes

    loaded = load_trained(trained["ae"])
    data = RunSession(_compose([f"run={trained['ae']}", "device=cpu"], "eval"), "eval").data
    found = latent_probes(loaded.model, data.train, data.test, 256, max_train=None)
    assert found["probe_accuracy"] > 0.35 and found["knn_accuracy"] > 0.35  # 4 shapes: chance 0.25 (sd 0.04 on 128)


def test_another_dataset_as_outliers_from_the_command_line(trained, tmp_path) -> None:
    folder = noise_images(tmp_path / "noise", 60)
    spec = f"anomaly.outliers={{name:folder,source:{{path:'{folder}',size:16}}}}"
    out = subprocess.run([sys.executable, "-m", "aelab", "eval", f"run={trained['ae']}", "device=cpu", spec,
                          "iw_samples=0", "probe.max_train=0", "generation.samples=0", "noise=[]", "tensorboard=false"],
                         cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    saved = json.loads(next(trained["ae"].glob("eval/*/metrics.json")).read_text())
    assert saved["anomaly_outliers"].startswith("folder") and saved["test/anomaly_recon_auroc"] > 0.95


def test_frechet_distance_and_precision_recall() -> None:
    from aelab.metrics.generation import frechet_distance, precision_recall

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(500, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    same, shifted = frechet_distance(a, b), frechet_distance(a, b + 3.0)
    assert same < 1.0 and shifted > 8 * 9 - 1  # ||shift||^2 = 8 * 9
    assert precision_recall(a, a) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(a, b + 10.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_the_feature_classifier_is_trained_once_per_dataset(trained, monkeypatch, tmp_path) -> None:
    from aelab.metrics import generation

    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "cache"))
    data = RunSession(_compose([f"run={trained['ae']}", "device=cpu"], "eval"), "eval").data
    trained_now: list[str] = []
    first, accuracy, path = generation.feature_net(data, CPU, epochs=1, log=trained_now.append)
    assert path.is_file() and path.parent == tmp_path / "cache" / "feature_nets" and len(trained_now) == 1
    _, again, _ = generation.feature_net(data, CPU, epochs=1, log=trained_now.append)
    assert again == accuracy and len(trained_now) == 1  # from the cache
    path.write_bytes(b"corrupt")
    torch.rand(1000)  # whatever the process drew before does not change the classifier ...
    state = torch.get_rng_state()
    retrained, _, _ = generation.feature_net(data, CPU, epochs=1, log=trained_now.append)  # a broken cache: retrained
    assert len(trained_now) == 2
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), retrained.state_dict().values()))
    assert torch.equal(torch.get_rng_state(), state)  # ... nor does training it move the caller's random stream


def test_reconstruction_scores_of_a_perfect_copy() -> None:
    from aelab.metrics.reconstruction import image_scores

    x = torch.rand(4, 1, 8, 8)
    scores = image_scores(x, x)
    assert torch.allclose(scores["ssim"], torch.ones(4)) and (scores["psnr"] == 100).all()
    assert (image_scores(x.flip(0), x)["ssim"] < 0.5).all()


def test_eval_tensorboard_views(trained) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = eval_command.run(_compose([f"run={trained['ae']}", "device=cpu", "views.tsne=60", "views.points=80",
                                     "generation.samples=0", "iw_samples=0", "probe.max_train=0"], "eval"))
    folder = Path(out["output_dir"])
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {"test/latent_manifold", "test/latent_manifold_tsne", "test/reconstructions"} <= images
    assert "test/codes" in events.Tags()["histograms"]
    assert (folder / "projector_config.pbtxt").is_file() and list(folder.rglob("sprite.png"))
    assert not list(folder.parent.parent.glob("events.out.tfevents.*"))  # logger=none run: training files untouched


def test_posterior_histograms_and_sparse_views(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path / "sparse", "model=sparse_ae", "latent_dim=16")
    out = eval_command.run(_compose([f"run={run}", "device=cpu", "views.tsne=0", "views.points=80",
                                     "iw_samples=0", "probe.max_train=0", "noise=[]"], "eval"))
    assert 0 <= out["test/mean_activation"] <= 1 and 0 <= out["test/active_fraction"] <= 1
    events = EventAccumulator(out["output_dir"], size_guidance={"images": 0}).Reload()
    assert "test/mean_activation_per_class" in events.Tags()["images"]
    vae = _train(tmp_path / "vae", "model=vae", "latent_dim=3")
    out = eval_command.run(_compose([f"run={vae}", "device=cpu", "views.tsne=0", "views.points=80", "iw_samples=0",
                                     "probe.max_train=0", "noise=[]", "generation.samples=0"], "eval"))
    tags = EventAccumulator(out["output_dir"], size_guidance={"histograms": 0}).Reload().Tags()["histograms"]
    assert {"test/posterior_mu", "test/posterior_logvar"} <= set(tags)


def test_interpolate_picks_by_class_and_the_strip_starts_and_ends_with_the_inputs(trained) -> None:
    out = interpolate.run(_compose([f"run={trained['ae']}", "device=cpu", "by=class", "from=2", "to=3", "steps=5",
                                    "tensorboard=false"], "interpolate"))
    data = RunSession(_compose([f"run={trained['ae']}", "device=cpu"], "eval"), "eval").data
    assert int(data.test.take([out["from"]]).y) == 2 and int(data.test.take([out["to"]]).y) == 3
    from PIL import Image

    gif = Image.open(Path(out["output_dir"], "interpolation.gif"))
    assert gif.n_frames == 5 + 3  # forward, then back without repeating the ends


def test_arithmetic_of_one_index_decodes_its_own_code(trained) -> None:
    from omegaconf import OmegaConf

    loaded = load_trained(trained["ae"])
    data = RunSession(_compose([f"run={trained['ae']}", "device=cpu"], "eval"), "eval").data
    cfg = OmegaConf.create({"arithmetic": "4 - 4 + 4", "by": "index", "split": "test"})
    operands, result, what = interpolate.arithmetic(loaded.model, data.test, cfg)
    assert what == "#4 - #4 + #4" and operands.shape[0] == 3
    assert torch.allclose(result, loaded.model.reconstruct(data.test.take([4]).x), atol=1e-5)


BAD_KEYS = [
    ("eval", ["noise=0.3"], "noise"),
    ("eval", ["anomaly.normal=3"], "anomaly.normal"),
    ("eval", ["anomaly.outliers=nope"], "anomaly.outliers"),
    ("eval", ["iw_samples=-1"], "iw_samples"),
    ("sample", ["span=[3,1]"], "span"),
    ("sample", ["by=shape"], "by"),
    ("interpolate", ["arithmetic=3 x 4"], "arithmetic"),
    ("interpolate", ["frames=1"], "frames"),
    ("interpolate", ["threads=0"], "threads"),
]


@pytest.mark.parametrize("command, args, key", BAD_KEYS, ids=[" ".join([c, *a]) for c, a, _ in BAD_KEYS])
def test_new_keys_are_checked_before_any_work(trained, command: str, args: list[str], key: str) -> None:
    from aelab.errors import UserError
    from aelab.precheck import compose_checked

    with pytest.raises(UserError) as error:
        compose_checked(command, [f"run={trained['ae']}", *args])
    assert error.value.key == key and len(error.value.line().splitlines()) == 1
