"""Atomic output folders: replaced in one step, debris of killed saves cleaned up, modes as the umask says."""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from msa_hf import io_utils
from msa_hf.io_utils import atomic_directory, remove_stale_staging


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


def _killed_save(target: Path, die_after_first_rename: bool) -> None:
    """Run a save in a subprocess that is SIGKILLed mid-way, as a user's Ctrl-\\ or the OOM killer would."""
    script = textwrap.dedent(
        f"""
        import importlib.util, os, pathlib, signal
        spec = importlib.util.spec_from_file_location("io_utils", {io_utils.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # without importing msa_hf (torch), which takes seconds
        atomic_directory = module.atomic_directory
        if {die_after_first_rename}:
            rename = pathlib.Path.rename
            def rename_then_die(self, target):
                rename(self, target)
                os.kill(os.getpid(), signal.SIGKILL)
            pathlib.Path.rename = rename_then_die
        with atomic_directory({str(target)!r}) as staging:
            (staging / "model.safetensors").write_bytes(b"new" * 1000)
            if not {die_after_first_rename}:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr


def test_staging_of_a_killed_save_is_removed_by_the_next_run(tmp_path):
    target = tmp_path / "model"
    _killed_save(target, die_after_first_rename=False)
    debris = [p.name for p in tmp_path.iterdir()]
    assert len(debris) == 1 and debris[0].startswith(".model.tmp-"), debris
    with atomic_directory(target) as staging:
        (staging / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_save_killed_between_the_renames_gives_the_previous_folder_back(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"the user's previous model")
    _killed_save(target, die_after_first_rename=True)
    assert not target.exists(), "the kill came after the old folder was moved aside"
    assert remove_stale_staging(target)
    assert (target / "model.safetensors").read_bytes() == b"the user's previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_live_and_foreign_staging_folders_are_left_alone(tmp_path):
    target = tmp_path / "model"
    mine = tmp_path / f".model.tmp-somehost-{os.getpid()}-abc"
    other_host = tmp_path / ".model.tmp-elsewhere-999999999-abc"
    unrelated = tmp_path / ".modelx.tmp-host-1-abc"
    for folder in (mine, other_host, unrelated):
        folder.mkdir()
    with atomic_directory(target) as staging:
        (staging / "a").write_text("a")
    assert {p.name for p in tmp_path.iterdir()} == {"model", mine.name, other_host.name, unrelated.name}


def test_saved_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as staging:
            private = staging / "model.safetensors"
            private.write_bytes(b"x")
            private.chmod(0o600)  # what safetensors does
            (staging / "sub").mkdir(mode=0o700)
            (staging / "sub" / "run.sh").write_text("#!/bin/sh\n")
            (staging / "sub" / "run.sh").chmod(0o700)
    finally:
        os.umask(old)
    out = tmp_path / "out"

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(out) == 0o755 and mode(out / "sub") == 0o755
    assert mode(out / "model.safetensors") == 0o644 and mode(out / "sub" / "run.sh") == 0o755


def test_refuses_to_replace_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("the user's files")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="current folder"), atomic_directory("."):
        pass
    with pytest.raises(ValueError, match="current folder"), atomic_directory(".."):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with atomic_directory(".") as staging:  # an empty current folder may be filled
        (staging / "a.txt").write_text("a")
    assert [p.name for p in empty.iterdir()] == ["a.txt"]


# ---------------------------------------------------------------------------- single files and the lock


def test_atomic_file_writers_replace_in_one_step_with_umask_modes(tmp_path):
    import torch
    from safetensors.torch import load_file

    from msa_hf.io_utils import atomic_save_safetensors, atomic_write_json

    target = tmp_path / "manifest.json"
    target.write_text("old")
    old = os.umask(0o022)
    try:
        atomic_write_json(target, {"a": 1})
        atomic_save_safetensors(tmp_path / "e.safetensors", {"embeddings": torch.ones(2, 3)}, {"format": "x"})
    finally:
        os.umask(old)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert load_file(str(tmp_path / "e.safetensors"))["embeddings"].shape == (2, 3)
    assert stat.S_IMODE((tmp_path / "e.safetensors").stat().st_mode) == 0o644  # safetensors alone gives 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors", "manifest.json"]


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path):
    from msa_hf.io_utils import atomic_write_json

    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"not serialisable": object()})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
    from msa_hf.io_utils import LockHeldError, exclusive_lock

    lock = tmp_path / ".lock"
    with (
        exclusive_lock(lock, purpose="first writer"),
        pytest.raises(LockHeldError, match=rf"in use by pid {os.getpid()} on host .*first writer"),
        exclusive_lock(lock),
    ):
        pass
    assert not lock.exists()
    holder = subprocess.run(  # takes the lock and dies without releasing it
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import importlib.util, os
                spec = importlib.util.spec_from_file_location("io_utils", {io_utils.__file__!r})
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                held = module.exclusive_lock({str(lock)!r})
                held.__enter__()
                print(os.getpid(), flush=True)
                os._exit(0)
                """
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert lock.exists()
    with pytest.warns(UserWarning, match=f"left by pid {holder.stdout.strip()}"), exclusive_lock(lock) as me:
        assert me["pid"] == os.getpid()
