"""scripts/gallery.py: every preset has an entry (a new one without is an error, not a gap), --only names what it
accepts, pictures stay small, and the quick run draws every preset's pictures and lists them on its page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env, load_script

SCRIPT = REPO / "scripts" / "gallery.py"


gallery = load_script("gallery")


def test_every_preset_has_exactly_one_entry() -> None:
    presets = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert gallery.preset_names() == presets
    gallery.check_coverage(gallery.ENTRIES, presets)  # raises on a gap
    assert sorted(e.preset for e in gallery.ENTRIES) == presets


def test_a_preset_without_an_entry_stops_the_gallery(tmp_path) -> None:
    folder = tmp_path / "experiment"
    folder.mkdir()
    for name in [*gallery.preset_names(), "new_preset"]:
        (folder / f"{name}.yaml").write_text("# @package _global_\n")
    with pytest.raises(gallery.GalleryError, match="no gallery entry for preset\\(s\\) new_preset"):
        gallery.check_coverage(gallery.ENTRIES, gallery.preset_names(folder))
    with pytest.raises(gallery.GalleryError, match="unknown preset\\(s\\) vae_2d"):
        gallery.check_coverage(gallery.ENTRIES, [p for p in gallery.preset_names() if p != "vae_2d"])


def test_only_an_unknown_preset_is_one_line_listing_the_allowed(capsys) -> None:
    assert gallery.main(["--only", "vae_2dd", "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --only: unknown preset 'vae_2dd' (one of: ")
    assert "vae_2d" in err and "disentangle_study" in err
    assert not Path("/nonexistent/never-written").exists()


def test_only_picks_presets_in_the_order_given_once_each() -> None:
    chosen = gallery.select(gallery.ENTRIES, ["vae_2d", "ae_2d", "vae_2d"])
    assert [e.preset for e in chosen] == ["vae_2d", "ae_2d"]


def test_pictures_are_reencoded_below_the_limit(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)  # incompressible: ~1.4 MB as a plain PNG
    Image.fromarray(noise).save(tmp_path / "big.png")
    frames = [Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)) for _ in range(12)]
    frames[0].save(tmp_path / "big.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    for name in ("big.png", "big.gif"):
        gallery.copy_small(tmp_path / name, tmp_path / f"small_{name}")
        assert (tmp_path / f"small_{name}").stat().st_size < gallery.MAX_BYTES
    grey = np.repeat(rng.integers(0, 256, (50, 50, 1), dtype=np.uint8), 3, axis=2)  # a digit grid: R = G = B
    Image.fromarray(grey).save(tmp_path / "grey.png")
    gallery.copy_small(tmp_path / "grey.png", tmp_path / "small_grey.png")
    assert Image.open(tmp_path / "small_grey.png").mode == "L"


@pytest.mark.slow
def test_quick_gallery_draws_every_preset_and_lists_its_pictures(tmp_path) -> None:
    out, work = tmp_path / "gallery", tmp_path / "work"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--work", str(work)],
                          cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    page = (out / "README.md").read_text()
    for entry in gallery.ENTRIES:
        assert f"## {entry.preset}" in page
        shots = [shot for step in entry.steps for shot in step.shots]
        assert shots, entry.preset
        for shot in shots:
            name = shot.name + Path(shot.file).suffix
            path = out / entry.preset / name
            assert path.is_file() and 0 < path.stat().st_size < gallery.MAX_BYTES, path
            if path.suffix != ".md":
                assert f"]({entry.preset}/{name})" in page
    assert "not drawn yet" not in page and "Last `--quick` smoke run" in page


def test_from_run_draws_a_preset_from_its_own_timed_run(tmp_path, capsys) -> None:
    """--from-run PRESET=RUN: a long preset's pictures come from a run trained with that preset (its timed run), the
    page saying how it was trained; a run of another preset or a half-written one is refused in one line."""
    entry = next(e for e in gallery.ENTRIES if e.preset == "beta_tcvae_dsprites")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(  # data.size given twice: Hydra applies the later one
        "- experiment=beta_tcvae_dsprites\n- data.size=32\n- seed=0\n- data.size=64\n- hydra.run.dir=x\n")
    with pytest.raises(gallery.GalleryError, match="not a finished aelab run"):
        gallery.trained_run(entry, run)
    (run / "metrics.json").write_text('{"time/wall_s": 3512.5}')
    seconds, how = gallery.trained_run(entry, run)
    assert seconds == 3512.5 and how == "aelab train experiment=beta_tcvae_dsprites seed=0 data.size=64"
    other = next(e for e in gallery.ENTRIES if e.preset == "factor_vae_dsprites")
    with pytest.raises(gallery.GalleryError, match="not experiment=factor_vae_dsprites"):
        gallery.trained_run(other, run)
    assert gallery.parse_from_runs([f"beta_tcvae_dsprites={run}"], {"beta_tcvae_dsprites"}) == {
        "beta_tcvae_dsprites": run}
    assert gallery.main(["--only", "vae_2d", "--from-run", f"beta_tcvae_dsprites={run}", "--out",
                         str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--from-run: 'beta_tcvae_dsprites' is not among the presets drawn now" in err
    assert not (tmp_path / "never").exists()
