"""A trained run applied to new data: encode, reconstruct, score, export, and the Python API (aelab.load_run,
aelab.train). Runs are trained once per module on tiny data; the commands run through their real configs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aelab
from aelab.commands import encode, export, reconstruct, score
from aelab.data.embedded import load_synthetic
from aelab.errors import UserError
from conftest import model_names

IMAGES = ["data=synthetic", "data.source.n=256"]
SMALL = ["latent_dim=3", "epochs=1", "batch_size=64", "device=cpu", "logger=none", "threads=1"]
RUN_ARGS = ["device=cpu", "threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Trained runs by name, made on first use through aelab.train (the API the README documents)."""
    root, made = tmp_path_factory.mktemp("runs"), {}

    def get(name: str, *overrides: str) -> Path:
        if name not in made:
            data = [] if any(o.startswith("data=") for o in overrides) else IMAGES
            result = aelab.train([*data, *SMALL, *overrides, f"hydra.run.dir={root / name}"])
            assert result.run_dir == root / name and np.isfinite(result.metrics["val/loss"])
            made[name] = result.run_dir
        return made[name]

    return get


def _table(path: Path, rows: np.ndarray, names: tuple[str, ...] = ("a", "b", "c", "d", "e", "f")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows([[f"{v:.6g}" for v in row] for row in rows])
    return path


def _normal_rows(n: int, seed: int) -> np.ndarray:
    """Six correlated columns on two hidden factors, in units far from standard (what standardising is for)."""
    g = np.random.default_rng(seed)
    factors = g.normal(size=(n, 2))
    mixing = np.array([[1.0, 0.5, -1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, -0.5, 1.5, -1.0]])
    return 10.0 + 5.0 * factors @ mixing + 0.1 * g.normal(size=(n, 6))


@pytest.fixture(scope="module")
def table_run(runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    train_csv = _table(folder / "train.csv", _normal_rows(400, 0))
    run = runs("table_ae", "model=ae", "data=csv", f"data.path={train_csv}", "arch=mlp", "latent_dim=2", "epochs=3")
    return run, train_csv


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _run(module, compose_cfg, config: str, overrides: list[str]) -> dict:
    return module.run(compose_cfg([*RUN_ARGS, *overrides], config_name=config))


# ---- encode ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["ae", "vae", "cvae"])
def test_encode_writes_every_example_in_order_with_the_models_codes(runs, compose_cfg, family) -> None:
    run = runs(family, f"model={family}")
    before = {p.name: p.stat().st_mtime_ns for p in [*run.iterdir(), *(run / "checkpoints").iterdir()]}
    result = _run(encode, compose_cfg, "encode", [f"run={run}"])
    out = Path(result["output_dir"])
    assert out.parent.parent == run and out.parent.name == "encode"
    codes = np.load(out / "codes.npy")
    source = load_synthetic(n=256)
    opened = aelab.load_run(run)
    x = source.train_x.float() / 255
    assert codes.shape == (256, 3)
    np.testing.assert_allclose(codes, opened.encode(x, source.train_y).numpy(), atol=1e-5)
    header, rows = _read_csv(out / "codes.csv")
    posterior = opened.model.has_posterior
    assert header == ["index", "label", "z0", "z1", "z2"] + (["logvar0", "logvar1", "logvar2"] if posterior else [])
    assert [int(r[0]) for r in rows] == list(range(256))
    assert [r[1] for r in rows] == [source.class_names[int(k)] for k in source.train_y]
    np.testing.assert_allclose(np.array([r[2:5] for r in rows], dtype=np.float64), codes, rtol=1e-6, atol=1e-7)
    assert (out / "logvar.npy").is_file() == posterior
    if posterior:
        _, logvar = opened.model.posterior(x, source.train_y)
        np.testing.assert_allclose(np.load(out / "logvar.npy"), logvar.detach().numpy(), atol=1e-5)
    after = {p.name: p.stat().st_mtime_ns for p in [*run.iterdir(), *(run / "checkpoints").iterdir()]}
    assert {k: v for k, v in after.items() if k not in ("encode", "thresholds.json", "export")} == \
        {k: v for k, v in before.items() if k not in ("encode", "thresholds.json", "export")}  # training files untouched


def test_encode_writes_parquet_when_pyarrow_is_installed(runs, compose_cfg) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = Path(_run(encode, compose_cfg, "encode", [f"run={runs('vae', 'model=vae')}"])["output_dir"])
    table = pq.read_table(out / "codes.parquet").to_pydict()
    assert table["index"] == list(range(256))
    np.testing.assert_allclose(table["z0"], np.load(out / "codes.npy")[:, 0], rtol=1e-6)


def test_encode_a_folder_names_each_file_and_refuses_other_shapes(runs, compose_cfg, tmp_path) -> None:
    run = runs("ae", "model=ae")
    for name, size in (("b/two.png", 20), ("a.jpg", 16), ("b/one.png", 40)):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size), 200, dtype=np.uint8)).save(tmp_path / "in" / name)
    result = _run(encode, compose_cfg, "encode", [f"run={run}", "data=folder", f"data.source.path={tmp_path / 'in'}",
                                                   "data.source.size=16"])
    header, rows = _read_csv(Path(result["output_dir"]) / "codes.csv")
    assert header[:2] == ["index", "file"] and [r[1] for r in rows] == ["a.jpg", "b/one.png", "b/two.png"]
    with pytest.raises(UserError, match=r"shape \[1, 32, 32\], the model takes \[1, 16, 16\]"):
        _run(encode, compose_cfg, "encode", [f"run={run}", "data=folder", f"data.source.path={tmp_path / 'in'}"])


def test_missing_run_and_bad_keys_are_one_line_errors(tmp_path) -> None:
    for args, expected in ((["encode", f"run={tmp_path / 'nope'}"], "error: run: no such directory"),
                           (["score", f"run={tmp_path}", "threshold.quantile=2"], "error: run: "),
                           (["export", "run=" + str(tmp_path), "format=tflite"], "error: run: ")):
        done = subprocess.run([sys.executable, "-m", "aelab", *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.strip().startswith(expected), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


# ---- tables: stored statistics, columns, CSV in -> CSV out ---------------------------------------------------
def test_the_checkpoint_keeps_the_training_tables_statistics(table_run) -> None:
    run, train_csv = table_run
    from aelab.data import build_data

    opened = aelab.load_run(run)
    stats = opened.data_info["standardization"]
    assert stats["columns"] == ["a", "b", "c", "d", "e", "f"]
    refitted = build_data(opened.config.data, torch.device("cpu")).standardization  # the training split, fitted again
    assert stats == refitted
    rows = np.loadtxt(train_csv, delimiter=",", skiprows=1)
    assert not np.allclose(stats["mean"], rows.mean(0), rtol=1e-6)  # val and test rows were left out


def test_score_reuses_the_training_statistics_and_keeps_row_order(table_run, compose_cfg, tmp_path) -> None:
    run, train_csv = table_run
    rows = _normal_rows(30, seed=5)
    rows[[3, 17]] += np.array([40.0, -40.0, 40.0, -40.0, 40.0, -40.0])  # two planted anomalies
    new_csv = _table(tmp_path / "new.csv", rows)
    few_csv = _table(tmp_path / "few.csv", rows[:4])  # refitting on 4 rows would change every score
    out_csv = tmp_path / "scored.csv"
    result = _run(score, compose_cfg, "score", [f"run={run}", "data=csv", f"data.path={new_csv}", f"out={out_csv}"])
    header, scored = _read_csv(out_csv)
    assert header == ["a", "b", "c", "d", "e", "f", "recon_nll", "is_anomaly"]
    _, original = _read_csv(new_csv)
    assert [r[:6] for r in scored] == original  # the input's own cells, in its row order
    nll = np.array([float(r[6]) for r in scored])
    assert set(np.argsort(nll)[-2:]) == {3, 17}
    assert [int(r[7]) for r in scored] == [int(v > result["threshold"]) for v in nll]
    assert int(scored[3][7]) == 1 and int(scored[17][7]) == 1
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"]
    stored = json.loads((run / "thresholds.json").read_text())[f"last/step{step}/recon_nll/q0.99"]
    assert stored["value"] == pytest.approx(result["threshold"]) and stored["split"] == "val" and stored["examples"] == 40
    few = _run(score, compose_cfg, "score", [f"run={run}", "data=csv", f"data.path={few_csv}"])
    _, few_rows = _read_csv(Path(few["output_dir"]) / "scores.csv")
    # rtol 1e-5: a batch of 4 rows and one of 40 may take different matmul ways (fast paths are chosen per size)
    np.testing.assert_allclose([float(r[6]) for r in few_rows], nll[:4], rtol=1e-5)
    assert few["threshold_from"].startswith("thresholds.json")  # the stored threshold, not a new one
    with pytest.raises(UserError, match="the input table"):
        _run(score, compose_cfg, "score", [f"run={run}", "data=csv", f"data.path={new_csv}", f"out={new_csv}"])


def test_a_checkpoint_without_stored_statistics_recomputes_the_training_splits(table_run, compose_cfg,
                                                                               tmp_path) -> None:
    import shutil

    run, train_csv = table_run
    older = tmp_path / "older_run"
    shutil.copytree(run, older, ignore=shutil.ignore_patterns("score", "encode", "export", "reconstruct", "thresholds.json"))
    state = torch.load(older / "checkpoints" / "last.pt", weights_only=True)
    del state["data"]["standardization"]  # as runs trained before this version wrote it
    torch.save(state, older / "checkpoints" / "last.pt")
    args = ["data=csv", f"data.path={train_csv}"]
    new = np.load(Path(_run(encode, compose_cfg, "encode", [f"run={run}", *args])["output_dir"]) / "codes.npy")
    old = np.load(Path(_run(encode, compose_cfg, "encode", [f"run={older}", *args])["output_dir"]) / "codes.npy")
    np.testing.assert_array_equal(old, new)
    import aelab  # the Python API opens the run through the same object, fallback included

    api_x = aelab.load_run(older).data.test.head(8).x
    assert torch.equal(api_x, aelab.load_run(run).data.test.head(8).x)


def test_a_table_with_other_columns_is_named(table_run, compose_cfg, tmp_path) -> None:
    run, _ = table_run
    other = _table(tmp_path / "other.csv", _normal_rows(5, 1), names=("a", "b", "c", "d", "e", "g"))
    with pytest.raises(UserError, match=r"data.path: .*columns not in the training table: g; missing: f"):
        _run(score, compose_cfg, "score", [f"run={run}", "data=csv", f"data.path={other}"])
    fewer = _table(tmp_path / "fewer.csv", _normal_rows(5, 1)[:, :4], names=("a", "b", "c", "d"))
    with pytest.raises(UserError, match=r"data.path: .*missing: e, f"):
        _run(score, compose_cfg, "score", [f"run={run}", "data=csv", f"data.path={fewer}", "split=test"])
    swapped = _table(tmp_path / "swapped.csv", _normal_rows(5, 1), names=("b", "a", "c", "d", "e", "f"))
    with pytest.raises(UserError, match="another order"):
        _run(encode, compose_cfg, "encode", [f"run={run}", "data=csv", f"data.path={swapped}"])


def test_reconstruct_a_table_in_its_own_units(table_run, compose_cfg, tmp_path) -> None:
    run, train_csv = table_run
    rows = _normal_rows(20, seed=9)
    new_csv = _table(tmp_path / "new.csv", rows)
    _run(reconstruct, compose_cfg, "reconstruct", [f"run={run}", "data=csv", f"data.path={new_csv}",
                                                   f"out={tmp_path / 'rec'}"])
    header, out = _read_csv(tmp_path / "rec" / "reconstruction.csv")
    assert header == ["index", "a", "b", "c", "d", "e", "f"]
    values = np.array([r[1:] for r in out], dtype=np.float64)
    # a 2-D code of data on two factors: reconstructions in the table's units, close to the rows
    assert np.abs(values - rows).mean() < 0.5 * np.abs(rows - rows.mean(0)).mean()


# ---- images: reconstruct a folder, score ---------------------------------------------------------------------
def test_reconstruct_a_folder_keeps_names_and_sizes(runs, compose_cfg, tmp_path) -> None:
    run = runs("dae", "model=dae", "noise=0.3")
    images = load_synthetic(n=8).train_x  # (8, 1, 16, 16) uint8
    sizes = {"x0.png": (16, 16), "deep/x1.png": (40, 24), "deep/x2.jpg": (33, 33)}
    for k, (name, size) in enumerate(sizes.items()):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[k, 0].numpy()).resize(size).save(tmp_path / "in" / name)
    args = [f"run={run}", "data=folder", f"data.source.path={tmp_path / 'in'}", "data.source.size=16"]
    result = _run(reconstruct, compose_cfg, "reconstruct", [*args, f"out={tmp_path / 'out'}"])
    for name, size in sizes.items():
        with Image.open(tmp_path / "out" / name) as written:
            assert written.size == size
    preview = Image.open(Path(result["output_dir"]) / "preview.png")
    assert preview.size[1] > preview.size[0] / 8  # two rows: inputs, reconstructions
    with Image.open(tmp_path / "out" / "x0.png") as same_size:  # no resize: exactly the model's reconstruction
        x = torch.from_numpy(images[:1].numpy()).float() / 255
        expected = (aelab.load_run(run).reconstruct(x)[0, 0].clamp(0, 1) * 255).round().numpy()
        assert np.abs(np.asarray(same_size, dtype=np.float64) - expected).max() <= 1
    for bad in (tmp_path / "in", tmp_path / "in" / "deep", run / "checkpoints"):
        with pytest.raises(UserError, match="^error: out: "):
            _run(reconstruct, compose_cfg, "reconstruct", [*args, f"out={bad}"])


def test_score_images_with_the_posterior_scores(runs, compose_cfg) -> None:
    run = runs("vae", "model=vae")
    result = _run(score, compose_cfg, "score", [f"run={run}", "iw_samples=8", "split=test", "threshold.score=nll_iw"])
    header, rows = _read_csv(Path(result["output_dir"]) / "scores.csv")
    assert header == ["index", "label", "recon_nll", "neg_elbo", "nll_iw", "is_anomaly"] and len(rows) == 32
    assert result["score"] == "nll_iw"
    nll_iw, neg_elbo = (np.array([float(r[k]) for r in rows]) for k in (4, 3))
    assert (nll_iw <= neg_elbo + 1.0).mean() > 0.9  # the IWAE bound is (up to sampling noise) tighter
    flagged = np.array([int(r[5]) for r in rows])
    assert (flagged == (nll_iw > result["threshold"])).all()
    stored = json.loads((run / "thresholds.json").read_text())
    assert [v["examples"] for k, v in stored.items() if k.endswith("/nll_iw/iw8/q0.99")] == [32]
    with pytest.raises(UserError, match="iw_samples"):
        _run(score, compose_cfg, "score", [f"run={runs('ae', 'model=ae')}", "iw_samples=4"])
    with pytest.raises(UserError, match="^error: threshold.score: neg_elbo needs a posterior"):
        _run(score, compose_cfg, "score", [f"run={runs('ae', 'model=ae')}", "threshold.score=neg_elbo"])


# ---- export ---------------------------------------------------------------------------------------------------
def _without_aelab(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a script where `import aelab` fails: isolated mode (no PYTHONPATH, no script folder) and aelab blocked."""
    code = ("import runpy, sys; sys.modules['aelab'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-c", code, str(script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("which", ["image", "table"])
def test_exported_files_reproduce_encode_without_aelab(runs, table_run, compose_cfg, tmp_path, which) -> None:
    if which == "image":
        run = runs("vae", "model=vae")
        raw = load_synthetic(n=256).train_x.numpy()  # (256, 1, 16, 16) uint8
        encoded = _run(encode, compose_cfg, "encode", [f"run={run}"])
    else:
        run, train_csv = table_run
        raw = np.loadtxt(train_csv, delimiter=",", skiprows=1).astype(np.float32)
        encoded = _run(encode, compose_cfg, "encode", [f"run={run}", "data=csv", f"data.path={train_csv}"])
    exported = Path(_run(export, compose_cfg, "export", [f"run={run}"])["output_dir"])
    assert {"encoder.pt", "decoder.pt", "export.json", "load.py"} <= {p.name for p in exported.iterdir()}
    np.save(tmp_path / "raw.npy", raw)
    blocked = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.modules['aelab'] = None; import aelab"],
                             capture_output=True, text=True, cwd=tmp_path)  # the blocking itself works
    assert blocked.returncode != 0 and "import of aelab halted" in blocked.stderr
    done = _without_aelab(exported / "load.py", str(exported), str(tmp_path / "raw.npy"), str(tmp_path / "z.npy"),
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    codes = np.load(Path(encoded["output_dir"]) / "codes.npy")
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), codes, atol=1e-5, rtol=0)


def test_onnx_export_matches_the_model(runs, compose_cfg) -> None:
    pytest.importorskip("onnx")
    run = runs("cvae", "model=cvae")
    exported = Path(_run(export, compose_cfg, "export", [f"run={run}", "format=onnx"])["output_dir"])
    meta = json.loads((exported / "export.json").read_text())
    assert meta["conditional"] and meta["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    assert max(meta["max_abs_diff"].values()) < 1e-4


# ---- the Python API ------------------------------------------------------------------------------------------
def test_load_run_gives_the_model_config_and_data(runs) -> None:
    run = aelab.load_run(runs("vae", "model=vae"))
    assert run.config.model._target_.endswith("VAE") and run.config.latent_dim == 3
    batch = run.data.test.head(4)
    assert run.encode(batch.x).shape == (4, 3) and run.reconstruct(batch.x).shape == (4, 1, 16, 16)
    assert run.sample(5).shape == (5, 1, 16, 16) and float(run.decode(torch.zeros(2, 3)).min()) >= 0
    with pytest.raises(UserError, match="^error: ckpt: "):
        aelab.load_run(run.run_dir, ckpt="first")


def test_import_aelab_stays_light() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, aelab; assert callable(aelab.__getattr__); "
                           "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# ---- every registered family (conf/model/*.yaml) through the four commands --------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", model_names())
def test_every_family_encodes_scores_reconstructs_and_exports(compose_cfg, tmp_path, family) -> None:
    run = aelab.train(["data=synthetic", "data.source.n=64", *SMALL, "batch_size=32", f"model={family}",
                       f"hydra.run.dir={tmp_path / family}"]).run_dir
    codes = np.load(Path(_run(encode, compose_cfg, "encode", [f"run={run}"])["output_dir"]) / "codes.npy")
    assert codes.shape == (64, aelab.load_run(run).model.latent_dim) and np.isfinite(codes).all()
    scored = _run(score, compose_cfg, "score", [f"run={run}"])
    _, rows = _read_csv(Path(scored["output_dir"]) / "scores.csv")
    assert len(rows) == 64 and all(np.isfinite(float(r[2])) for r in rows)
    rebuilt = _run(reconstruct, compose_cfg, "reconstruct", [f"run={run}"])
    assert len(list((Path(rebuilt["output_dir"]) / "images").glob("*.png"))) == 64
    exported = _run(export, compose_cfg, "export", [f"run={run}"])
    assert exported["max_abs_diff_encoder"] <= 1e-5 and exported["max_abs_diff_decoder"] <= 1e-5


def test_eval_on_a_new_table_scales_it_with_the_training_statistics(table_run, compose_cfg, tmp_path) -> None:
    from aelab.commands import eval as eval_command

    run, train_csv = table_run
    quick = [f"run={run}", "device=cpu", "data=csv", "split=test", "iw_samples=0", "probe.max_train=0", "noise=[]",
             "generation.samples=0", "tensorboard=false", "num_images=0"]
    same = eval_command.run(compose_cfg([*quick, f"data.path={train_csv}"], config_name="eval"))
    shifted = _table(tmp_path / "shifted.csv", _normal_rows(400, 0) + 30.0)  # the same rows, 30 units (6 std) off
    moved = eval_command.run(compose_cfg([*quick, f"data.path={shifted}"], config_name="eval"))
    # refitted on itself the shifted table would standardise to the very same numbers (and the same loss)
    assert moved["test/recon"] > 10 * same["test/recon"]
