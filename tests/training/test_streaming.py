"""``streaming: true``: the train split streamed from Parquet shards, resumed exactly, on 1 and 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from msa_hf.data import generate_synth_corpus, shard_corpus, shard_files
from msa_hf_train import cli
from msa_hf_train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train.py"
DEFAULT_RECIPE = REPO / "training" / "configs" / "default.yaml"
# 16 train images × 5 captions; blocks of 20 pairs give 2 batches of 8 each, so an epoch is 4 blocks, 8 steps.
STREAM = ("streaming=true", "shuffle_buffer=20", "per_device_batch_size=8")


def run(args: list[str]) -> int:
    return cli.main(args, default_recipe=DEFAULT_RECIPE)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rs-synth (24 images: 16 train, 4 validation, 4 test) as Parquet shards of 2 images."""
    root = tmp_path_factory.mktemp("streaming")
    corpus = generate_synth_corpus(root / "rs", n_images=24, image_size=64, seed=3)
    shard_corpus(corpus, root / "shards", shard_size=2)
    return root / "shards"


def _final(output: Path) -> tuple[dict[str, torch.Tensor], list[dict], dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return (
        load_file(output / "best" / "model.safetensors"),
        [json.loads(line) for line in lines],
        json.loads((output / "test_metrics.json").read_text())["test"],
    )


def test_an_interrupted_streaming_run_resumes_to_the_same_weights(tiny_recipe_args, tmp_path, shards, monkeypatch):
    # 10 steps cross into the second epoch (other shard order); the interruption is inside the first epoch's
    # second block, so the resume restores the stream's state_dict, the block's permutation and its offset.
    options = (f"corpus={shards}", *STREAM, "max_steps=10", "augment=dihedral", "save_every=2", "eval_every=5")
    assert run(tiny_recipe_args("a", *options)) == 0
    best_a, evaluations_a, test_a = _final(tmp_path / "a")
    assert [e["step"] for e in evaluations_a] == [5, 10]
    final = json.loads((tmp_path / "a" / "checkpoints" / "step-000010" / "trainer_state.json").read_text())
    assert final["epoch"] == 1 and final["stream_positions"][0]["epoch"] == 1  # an epoch is 8 steps

    train_step = Trainer.train_step

    def interrupting_step(self, batch):
        terms = train_step(self, batch)
        if self.state.global_step == 2:  # the optimizer step this batch makes: the 3rd, the next block's first
            signal.raise_signal(signal.SIGINT)
        return terms

    monkeypatch.setattr(Trainer, "train_step", interrupting_step)
    assert run(tiny_recipe_args("b", *options)) == 128 + signal.SIGINT
    saved = json.loads((tmp_path / "b" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    position = saved["stream_positions"][0]
    assert (position["epoch"], position["block"], position["offset"]) == (0, 1, 8) and position["source"]
    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert run(tiny_recipe_args("b", *options, "resume_from_checkpoint=latest")) == 0
    best_b, evaluations_b, test_b = _final(tmp_path / "b")
    assert evaluations_b == evaluations_a and test_b == test_a
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_undecodable_images_are_skipped_counted_and_stop_the_run_past_max_bad_fraction(
    tiny_recipe_args, tmp_path, shards, capsys
):
    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    for path in (shards / "data").iterdir():
        table = datasets.Dataset.from_parquet(str(path))
        if path.name.startswith("train-00000-"):  # its first image's bytes are not an image
            table = table.map(
                lambda row, i: {"image": {"bytes": b"not an image", "path": "x.png"}} if i == 0 else {},
                with_indices=True,
            )
        table.to_parquet(str(broken / "data" / path.name))
    (broken / "shards.json").write_text((shards / "shards.json").read_text())
    # Frozen tower: the feature cache would apply, and says why it is off.
    # One block of 20 pairs holds the broken image's 5 (it gives 1 batch, the others 2): the epoch is 7 steps.
    options = (f"corpus={broken}", *STREAM, "max_steps=7", "num_workers=1", "freeze_vision_stages=all")
    assert run(tiny_recipe_args("tolerant", *options, "max_bad_fraction=0.3")) == 0
    err = capsys.readouterr().err
    assert "cache_frozen_vision is off with streaming=true" in err
    assert "5 of 80 streamed pairs had an image that did not decode and were skipped" in err and "x.png" in err

    assert run(tiny_recipe_args("strict", *options, "max_bad_fraction=0.01")) == 2
    err = capsys.readouterr().err
    assert "streamed pairs had an image that did not decode" in err and "more than max_bad_fraction=0.01" in err
    assert err.strip().splitlines()[-1].startswith("train.py: error:")


def test_streaming_recipes_that_cannot_work_are_refused(tiny_recipe_args, tmp_path, shards, capsys):
    assert run(tiny_recipe_args("synth", "streaming=true")) == 2
    assert "streaming=true reads Parquet shards" in capsys.readouterr().err
    assert run(tiny_recipe_args("accum", f"corpus={shards}", "streaming=true", "gradient_accumulation_steps=2")) == 2
    assert "gradient_accumulation_steps=1" in capsys.readouterr().err
    no_manifest = tmp_path / "no-manifest"
    no_manifest.mkdir()
    os.symlink(shards / "data", no_manifest / "data")
    assert run(tiny_recipe_args("epochs", f"corpus={no_manifest}", *STREAM)) == 2
    assert "set max_steps" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_two_processes_stream_their_own_shards(tiny_recipe_args, tmp_path, shards):
    """2 gloo processes: split_dataset_by_node gives each its shards; gathered features make full global batches."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = tiny_recipe_args("ddp", f"corpus={shards}", *STREAM, "per_device_batch_size=4", "max_steps=3")
    result = subprocess.run(
        [*command, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"streamed from {len(shard_files(shards, 'train'))} shards" in result.stderr
        and "4 × 2 process(es)" in result.stderr
    )
    assert (tmp_path / "ddp" / "best" / "model.safetensors").is_file()
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    first, second = state["stream_positions"]
    assert first["seen"] == second["seen"] == 12  # 3 batches of 4 each, no pair seen twice
