"""Resuming refuses what would not be exact: another recipe, a damaged or incomplete checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from msa_hf_train import cli
from msa_hf_train.checkpointing import COMPLETE_NAME, checkpoint_problem

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "training" / "configs" / "default.yaml"


def run(args: list[str]) -> int:
    return cli.main(args, default_recipe=DEFAULT_RECIPE)


def output_of(args: list[str]) -> Path:
    return Path(next(arg for arg in args if arg.startswith("output_dir=")).removeprefix("output_dir="))


class Evil:
    """A pickle that runs code when loaded; ``weights_only`` loading must refuse it."""

    def __reduce__(self) -> tuple:
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def reference(module_recipe_args) -> Path:
    """An uninterrupted run: 2 epochs of 10 steps, checkpoints at steps 10 and 20."""
    args = module_recipe_args("reference")
    assert run(args) == 0
    return output_of(args)


@pytest.fixture
def crashed(reference, module_recipe_args, request) -> tuple[Path, list[str]]:
    """A copy of the reference run as a crash during its second epoch would leave it (unfinished)."""
    args = module_recipe_args(request.node.name)
    out = output_of(args)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(reference, out)
    (out / "test_metrics.json").unlink()
    return out, args


def _same_best(out: Path, reference: Path) -> bool:
    best, expected = (load_file(folder / "best" / "model.safetensors") for folder in (out, reference))
    return all(torch.equal(best[name], expected[name]) for name in expected)


def test_every_save_writes_a_completion_marker_listing_its_files(reference):
    checkpoint = reference / "checkpoints" / "step-000020"
    listed = json.loads((checkpoint / COMPLETE_NAME).read_text())["files"]
    assert set(listed) == {p.name for p in checkpoint.iterdir()} - {COMPLETE_NAME}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json"} <= set(listed)
    assert checkpoint_problem(checkpoint) is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["per_device_batch_size=4"], "per_device_batch_size: 8 -> 4"),
        (["corpus_kwargs={n_images: 24, image_size: 64, seed: 4}"], "corpus_fingerprint"),
        (["config_overrides.same_text_positives=false"], "config.same_text_positives: True -> False"),
        (["seed=1"], "seed: 0 -> 1"),
    ],
    ids=["batch-size", "corpus", "config", "seed"],
)
def test_resuming_with_another_recipe_is_refused_naming_the_keys(crashed, capsys, overrides, named):
    out, args = crashed
    assert run([*args, "resume_from_checkpoint=latest", *overrides]) == 2
    err = capsys.readouterr().err
    assert named in err and "resume_allow_changes=true" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "test_metrics.json").exists()


def test_resume_allow_changes_continues_and_logs_what_changed(crashed, capsys):
    out, args = crashed
    assert run([*args, "resume_from_checkpoint=latest", "num_epochs=3", "resume_allow_changes=true"]) == 0
    assert "num_epochs: 2 -> 3" in capsys.readouterr().err
    assert json.loads((out / "test_metrics.json").read_text())["best_step"] in (10, 20, 30)


def test_another_model_is_one_line_even_with_resume_allow_changes(crashed, capsys):
    _, args = crashed
    other = "config_overrides.text_config.intermediate_size=40"  # another shape of every text-tower layer
    assert run([*args, "resume_from_checkpoint=latest", other]) == 2
    assert "config.text_config.intermediate_size: 37 -> 40" in capsys.readouterr().err
    assert run([*args, "resume_from_checkpoint=latest", other, "resume_allow_changes=true"]) == 2
    err = capsys.readouterr().err
    assert "cannot be loaded into this run" in err and "Traceback" not in err
    assert len(error_lines(err)) == 1 and len(err.splitlines()) == 2  # the logged changes, the error


def error_lines(err: str) -> list[str]:
    """The command's own error lines (warnings logged before them are not errors)."""
    return [line for line in err.splitlines() if line.startswith("train.py:")]


def _pickle_with_code(path: Path) -> None:
    torch.save({"state": Evil()}, path)


DAMAGE = {
    "truncated-weights": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:1000])),
    "empty-weights": ("model.safetensors", lambda p: p.write_bytes(b"")),
    "pickled-optimizer": ("optimizer.bin", _pickle_with_code),
    "corrupt-optimizer": ("optimizer.bin", lambda p: p.write_bytes(b"\x00" * p.stat().st_size)),
    "corrupt-state": ("trainer_state.json", lambda p: p.write_text("{")),
    "missing-rng": ("random_states_0.pkl", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_file(crashed, capsys, damage):
    out, args = crashed
    name, spoil = DAMAGE[damage]
    checkpoint = out / "checkpoints" / "step-000020"
    spoil(checkpoint / name)
    assert run([*args, f"resume_from_checkpoint={checkpoint}"]) == 2
    err = capsys.readouterr().err
    assert name in err and str(checkpoint) in err and "this ran" not in err
    assert "Traceback" not in err and "weights_only" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", ["truncated-weights", "missing-rng"])
def test_latest_skips_a_damaged_newest_checkpoint_and_resumes_exactly(crashed, reference, capsys, damage):
    out, args = crashed
    name, spoil = DAMAGE[damage]
    spoil(out / "checkpoints" / "step-000020" / name)
    assert run([*args, "resume_from_checkpoint=latest"]) == 0
    assert f"Skipping checkpoint {out / 'checkpoints' / 'step-000020'}: {name}" in capsys.readouterr().err
    assert _same_best(out, reference)  # trained on from step 10: the uninterrupted run's weights


@pytest.mark.parametrize("damage", ["pickled-optimizer", "missing-rng"])
def test_a_checkpoint_without_a_marker_is_still_checked_when_loaded(crashed, capsys, damage):
    """Checkpoints saved before completion markers: a missing RNG file or a pickle is still refused in one line."""
    out, args = crashed
    name, spoil = DAMAGE[damage]
    checkpoint = out / "checkpoints" / "step-000010"
    (checkpoint / COMPLETE_NAME).unlink()
    spoil(checkpoint / name)
    assert run([*args, f"resume_from_checkpoint={checkpoint}"]) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "this ran" not in err
    assert "Traceback" not in err and "weights_only" not in err and len(error_lines(err)) == 1


def test_a_resume_after_a_crash_after_evaluation_keeps_one_line_per_evaluation(crashed, reference):
    out, args = crashed
    shutil.rmtree(out / "checkpoints" / "step-000020")  # evaluated at step 20, killed before saving it
    assert run([*args, "resume_from_checkpoint=latest"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]
    assert lines == (reference / "metrics.jsonl").read_text().splitlines()
    assert _same_best(out, reference)
