"""aelab/files.py: files written whole or not at all, and the caches that glob beside them sparing them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from aelab.data import image_cache
from aelab.files import TEMP_MARK, atomic_path


def test_the_new_file_replaces_the_old_one_only_when_written_whole(tmp_path) -> None:
    target = tmp_path / "deep" / "state.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and TEMP_MARK in tmp.name
        tmp.write_text("first")
    assert target.read_text() == "first"

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"  # the old file, and no temporary left beside it
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_suffix_the_writer_insists_on_ends_the_temporary_name(tmp_path) -> None:
    with atomic_path(tmp_path / "grid.npy", ".npy") as tmp:
        assert tmp.suffix == ".npy"
        tmp.write_bytes(b"x")
    assert (tmp_path / "grid.npy").read_bytes() == b"x"


def test_removing_stale_folder_caches_spares_another_process_s_build(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "data"))
    root, images = tmp_path / "images", SimpleNamespace(size=8, channels=1)
    root.mkdir()
    prefix = image_cache._prefix(root, images)
    folders = image_cache.cache_dir()
    folders.mkdir(parents=True)
    keep, stale = folders / f"{prefix}new.npy", folders / f"{prefix}old.npy"
    keep.write_bytes(b"k")
    stale.write_bytes(b"s")
    with atomic_path(folders / f"{prefix}other.npy", ".npy") as building:
        building.write_bytes(b"b")
        image_cache._remove_stale(root, images, keep)
        assert building.exists() and keep.exists() and not stale.exists()
