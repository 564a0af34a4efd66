"""Atomic output folders."""

import pytest

from msa_hf.io_utils import atomic_directory


def test_success_replaces_folder_in_one_step(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing visible before the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_existing_folder_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half.bin").write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert (target / "keep.txt").read_text() == "user data" and not (target / "half.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_non_empty_folder_without_overwrite(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"), atomic_directory(tmp_path, overwrite=False):
        pass
