"""The training script end to end on msa-tiny: outputs, exact resume, reproducibility, failures."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from msa_hf import MSAModel, MSATrainingInputs  # also registers the Auto classes
from msa_hf_train import cli
from msa_hf_train.checkpointing import EMA_WEIGHTS_NAME
from msa_hf_train.trainer import Trainer, model_inputs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train.py"
DEFAULT_RECIPE = REPO / "training" / "configs" / "default.yaml"


def run(args: list[str]) -> int:
    return cli.main(args, default_recipe=DEFAULT_RECIPE)


def test_a_batch_s_trainer_only_fields_reach_the_model_as_training_inputs():
    """Tokens, pixels and image ids stay the keywords any caller passes; text ids and cached features travel grouped."""
    batch = {
        "input_ids": torch.ones(2, 4, dtype=torch.long),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
        "scale_features": [torch.zeros(2, 3), torch.zeros(2, 5)],
        "stage_hidden_state": torch.zeros(2, 5, 2, 2),
        "image_ids": torch.tensor([0, 1]),
        "text_ids": torch.tensor([3, 4]),
        "image_text_ids": torch.tensor([[3], [4]]),
    }
    inputs = model_inputs(batch, torch.device("cpu"))
    assert sorted(inputs) == ["attention_mask", "image_ids", "input_ids", "training_inputs"]
    training = inputs["training_inputs"]
    assert isinstance(training, MSATrainingInputs) and training.global_negatives is None
    assert training.scale_features[1] is batch["scale_features"][1] and inputs["image_ids"] is batch["image_ids"]
    assert training.stage_hidden_state is batch["stage_hidden_state"] and training.text_ids is batch["text_ids"]
    assert training.image_text_ids is batch["image_text_ids"]


def test_the_script_trains_selects_on_validation_and_writes_a_loadable_model(tiny_recipe_args, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *tiny_recipe_args("run", "eval_every=5", "save_every=4", "keep_last=2", "report_to=tensorboard"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    test_metrics = json.loads((out / "test_metrics.json").read_text())["test"]
    assert f"mR = {test_metrics['mr']:.2f}" in result.stdout and "Finished in" in result.stdout

    evaluations = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["split"] for e in evaluations] == ["validation"] * len(evaluations)
    steps = [e["step"] for e in evaluations]
    assert steps == sorted(steps) and len(steps) >= 3  # every 5 steps, at epoch ends and at the end
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert best["validation"]["mr"] == max(e["metrics"]["mr"] for e in evaluations)
    assert best["step"] == next(e["step"] for e in evaluations if e["metrics"]["mr"] == best["validation"]["mr"])
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and not any(name.startswith(".") for name in checkpoints)
    for plot in ("losses.png", "validation.png", "test_retrieval_examples.png"):
        assert (out / "plots" / plot).stat().st_size > 0
    assert "model: msa-tiny" in (out / "best" / "recipe.yaml").read_text()
    card = (out / "best" / "README.md").read_text()
    assert "model-index" in card and f"{test_metrics['mr']:.2f}" in card
    record = json.loads((out / "test_metrics.json").read_text())
    assert set(record["test_argsort_ties"]) == set(record["test_expected_ties"]) == set(test_metrics)
    assert all(set(e["metrics_by_tie_rule"]) == {"expected", "argsort"} for e in evaluations)
    from huggingface_hub import ModelCard

    test_results = {
        r.metric_type: r.metric_value for r in ModelCard.load(out / "best" / "README.md").data.eval_results
        if r.dataset_split == "test"
    }  # fmt: skip
    assert test_results["mr"] == pytest.approx(record["test_argsort_ties"]["mr"], abs=0.01)  # the published rule
    assert "\n# msa-test-resnet-bert-rs-synth\n" in card  # towers + corpus, not the output folder's name

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/loss_triplet", "train/loss_mscma", "train/loss_csmmc", "train/lr"}
    assert expected | {"validation/mr", "validation/i2t_r1", "validation/t2i_r10"} <= logged

    model = AutoModel.from_pretrained(out / "best").eval()
    processor = AutoProcessor.from_pretrained(out / "best")
    batch = processor(images=[torch.rand(3, 64, 64)], text=["two planes parked beside the runway"])
    with torch.no_grad():
        output = model(**batch)
    assert torch.isfinite(output.logits_per_image).all()


def _final_state(out: Path) -> tuple[dict, dict, list]:
    best = load_file(out / "best" / "model.safetensors")
    test = json.loads((out / "test_metrics.json").read_text())["test"]
    evaluations = [json.loads(line)["metrics"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return best, test, evaluations


def _sigint_after_step_5(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make runs raise a real SIGINT after step 5, mid first epoch; returns what undoes it."""
    train_step = Trainer.train_step

    def interrupting_step(self, batch):
        terms = train_step(self, batch)
        if self.state.global_step == 5 and self.state.batches_done == 5:
            signal.raise_signal(signal.SIGINT)
        return terms

    monkeypatch.setattr(Trainer, "train_step", interrupting_step)
    return lambda: monkeypatch.setattr(Trainer, "train_step", train_step)


def test_same_seed_same_run_and_an_interrupted_run_resumes_exactly(tiny_recipe_args, tmp_path, monkeypatch):
    # Trainable image tower, augmentation, dropout, warmup + cosine: every source of randomness is in play.
    options = ("augment=dihedral", "lr_scheduler=cosine", "warmup_steps=3", "save_every=4")
    assert run(tiny_recipe_args("a", *options)) == 0
    assert run(tiny_recipe_args("b", *options)) == 0
    best_a, test_a, evaluations_a = _final_state(tmp_path / "a")
    best_b, test_b, evaluations_b = _final_state(tmp_path / "b")
    assert test_a == test_b and evaluations_a == evaluations_b
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)

    # Interrupt with a real SIGINT in the middle of the first epoch, then resume from the saved state.
    restore = _sigint_after_step_5(monkeypatch)
    assert run(tiny_recipe_args("c", *options)) == 128 + signal.SIGINT
    assert not (tmp_path / "c" / "test_metrics.json").exists()
    restore()
    assert run(tiny_recipe_args("c", *options)) == 2  # an unfinished run is not restarted silently
    assert run(tiny_recipe_args("c", *options, "resume_from_checkpoint=latest")) == 0
    best_c, test_c, evaluations_c = _final_state(tmp_path / "c")
    assert test_c == test_a and evaluations_c == evaluations_a
    assert all(torch.equal(best_c[k], best_a[k]) for k in best_a)


def test_ema_decay_selects_and_saves_the_moving_average_of_the_weights(tiny_recipe_args, tmp_path):
    decay, options = 0.8, ("max_steps=5", "eval_every=1", "save_every=1", "keep_last=10")
    assert run(tiny_recipe_args("ema", f"ema_decay={decay}", *options)) == 0
    assert run(tiny_recipe_args("plain", *options)) == 0
    out = tmp_path / "ema"
    # The average changes what is scored, not how the weights train: the run without it scored the same weights.
    plain = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["metrics_without_ema"] for e in evaluations] == [e["metrics"] for e in plain]
    assert [e["metrics_without_ema_by_tie_rule"] for e in evaluations] == [e["metrics_by_tie_rule"] for e in plain]
    assert sorted(evaluations[0]["metrics_without_ema_by_tie_rule"]) == ["argsort", "expected"]
    assert evaluations[0]["metrics"] == evaluations[0]["metrics_without_ema"]  # step 1: the average is the weights
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert len(checkpoints) == 5
    raw = {int(c.name.removeprefix("step-")): load_file(c / "model.safetensors") for c in checkpoints}
    ema = {int(c.name.removeprefix("step-")): load_file(c / EMA_WEIGHTS_NAME) for c in checkpoints}
    steps = sorted(raw)
    assert all(torch.equal(ema[1][name], raw[1][name]) for name in raw[1])  # the first step copies the weights
    moved = False
    for previous, step in itertools.pairwise(steps):
        # timm ModelEmaV3 with warm-up: ema_t = d_t * ema_(t-1) + (1 - d_t) * weights_t, d_t = min(decay, 1 - t^-2/3).
        d = min(decay, 1 - step ** (-2 / 3))
        for name, weights in raw[step].items():
            if weights.is_floating_point():
                expected = d * ema[previous][name] + (1 - d) * weights
                assert torch.allclose(ema[step][name], expected, atol=1e-6), (step, name)
                moved |= not torch.equal(ema[step][name], weights)
    assert moved  # the average is not the weights themselves
    best_step = json.loads((out / "best" / "metrics.json").read_text())["step"]
    best = load_file(out / "best" / "model.safetensors")
    assert all(torch.equal(best[name], ema[best_step][name]) for name in best)


def test_an_interrupted_ema_run_resumes_exactly(tiny_recipe_args, tmp_path, monkeypatch):
    options = ("ema_decay=0.9", "save_every=4")
    assert run(tiny_recipe_args("a", *options)) == 0
    restore = _sigint_after_step_5(monkeypatch)
    assert run(tiny_recipe_args("b", *options)) == 128 + signal.SIGINT
    restore()
    assert run(tiny_recipe_args("b", *options, "resume_from_checkpoint=latest")) == 0
    best_a, test_a, evaluations_a = _final_state(tmp_path / "a")
    best_b, test_b, evaluations_b = _final_state(tmp_path / "b")
    assert test_a == test_b and evaluations_a == evaluations_b
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


@pytest.mark.parametrize("frozen_stages", ["all", "2"], ids=["whole-tower", "stages-1-2"])
def test_cached_frozen_tower_gives_the_same_run_as_the_uncached_one(tiny_recipe_args, tmp_path, frozen_stages):
    """A fully frozen tower is cached as pooled scales; a partly frozen one also as the map its trained stages read."""
    frozen = (f"freeze_vision_stages={frozen_stages}", "augment=flips")
    assert run(tiny_recipe_args("cached", *frozen, "cache_frozen_vision=true")) == 0
    assert run(tiny_recipe_args("uncached", *frozen, "cache_frozen_vision=false")) == 0
    cache_files = list((tmp_path / "msa-train-cache" / "vision-features").glob("*.safetensors"))
    assert len(cache_files) == 1
    cached = load_file(cache_files[0])
    if frozen_stages == "all":
        assert sorted(cached) == ["scale_0", "scale_1", "scale_2", "scale_3"]
    else:  # 16 training images x 4 variants (flips); test_resnet's second stage is 8 px at 64 px input
        assert sorted(cached) == ["scale_0", "scale_1", "stage_map"]
        assert cached["stage_map"].shape[:2] == (4, 16) and cached["stage_map"].shape[-1] == 8
    best_cached, test_cached, evaluations_cached = _final_state(tmp_path / "cached")
    best_uncached, test_uncached, evaluations_uncached = _final_state(tmp_path / "uncached")
    # The cached features equal the in-loop ones up to rounding (another batch size, another
    # kernel), which Adam carries into the weights at rounding level, except for attention key
    # biases: their true gradient is zero (softmax ignores a constant added to every score of a
    # query), so Adam turns rounding noise there into full-size steps. They never change an output.
    for name, tensor in best_cached.items():
        expected = best_uncached[name]
        if name.endswith("in_proj_bias"):  # query, key, value biases: compare query and value
            third = tensor.numel() // 3
            tensor, expected = (torch.cat([t[:third], t[2 * third :]]) for t in (tensor, expected))
        elif name.endswith("attention.self.key.bias"):
            continue
        torch.testing.assert_close(tensor, expected, atol=1e-4, rtol=1e-3, msg=name)
    assert len(evaluations_cached) == len(evaluations_uncached)
    for cached, uncached in zip(evaluations_cached, evaluations_uncached):
        assert cached == pytest.approx(uncached, abs=1e-6)
    assert test_cached == pytest.approx(test_uncached, abs=1e-6)

    # Another image preprocessing is another cache entry, never the stale one.
    assert run(tiny_recipe_args("other", *frozen, "config_overrides={image_size: 32}")) == 0
    assert len(list(cache_files[0].parent.glob("*.safetensors"))) == 2


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_recipe_args, tmp_path, monkeypatch, capsys):
    train_step = Trainer.train_step

    def poisoned(self, batch):
        if self.state.global_step == 6:
            batch = {**batch, "pixel_values": batch["pixel_values"] * float("nan")}
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    assert run(tiny_recipe_args("nan", "save_every=3")) == 1
    assert "loss became non-finite at step 7" in capsys.readouterr().err
    checkpoints = sorted((tmp_path / "nan" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints][-1] == "step-000006"
    assert all(torch.isfinite(t).all() for t in load_file(checkpoints[-1] / "model.safetensors").values())


def _spoil_weights_after_step(monkeypatch, step: int, spoil) -> None:
    """Apply ``spoil`` to every weight right after optimizer step ``step`` (as a runaway update would)."""
    train_step = Trainer.train_step

    def spoiling(self, batch):
        terms = train_step(self, batch)
        if self.state.global_step == step - 1:
            with torch.no_grad():
                for parameter in self._unwrapped().parameters():
                    parameter.copy_(spoil(parameter))
        return terms

    monkeypatch.setattr(Trainer, "train_step", spoiling)


def test_non_finite_weights_are_never_saved(tiny_recipe_args, tmp_path, monkeypatch, capsys):
    _spoil_weights_after_step(monkeypatch, 3, lambda p: p * float("nan"))
    assert run(tiny_recipe_args("nan-weights", "save_every=1")) == 1
    err = capsys.readouterr().err
    checkpoints = tmp_path / "nan-weights" / "checkpoints"
    assert "weights became non-finite at step 3" in err and "not saved" in err
    assert f"the last good checkpoint is {checkpoints / 'step-000002'}" in err
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000001", "step-000002"]


def test_the_weights_that_gave_a_non_finite_loss_are_not_called_good(tiny_recipe_args, tmp_path, monkeypatch, capsys):
    _spoil_weights_after_step(monkeypatch, 3, lambda p: p * 1e30)  # finite, but every output overflows
    assert run(tiny_recipe_args("huge-weights", "save_every=1", "eval_every=100")) == 1
    err = capsys.readouterr().err
    checkpoints = tmp_path / "huge-weights" / "checkpoints"
    assert "loss became non-finite at step 4" in err and (checkpoints / "step-000003").is_dir()
    assert f"the last good checkpoint is {checkpoints / 'step-000002'}" in err


def test_a_full_disk_while_saving_best_is_one_line_and_loses_nothing(tiny_recipe_args, tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    save_pretrained = MSAModel.save_pretrained
    calls = []

    def full_disk(self, folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) == 1:
            return save_pretrained(self, folder, *args, **kwargs)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 100)  # what fitted before the disk filled
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(MSAModel, "save_pretrained", full_disk)
    assert run(tiny_recipe_args("full", "eval_every=1")) == 1
    err = capsys.readouterr().err
    out = tmp_path / "full"
    errors = [line for line in err.splitlines() if line.startswith("train.py:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"train.py: error: Could not write {out / 'best'} (Error while serializing")
    assert "No space left on device" in errors[0] and "Nothing was lost" in errors[0]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # the staging copy is gone
    assert json.loads((out / "best" / "metrics.json").read_text())["step"] == 1  # the previous best/ is whole
    assert AutoModel.from_pretrained(out / "best") is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_epoch=2"], "Unknown recipe key 'num_epoch' in the command line. Did you mean num_epochs?"),
        (["num_epochs=two"], "Recipe key 'num_epochs' must be int, got 'two'"),
        (["corpus=missing/dataset_rsicd.json"], "corpus 'missing/dataset_rsicd.json' does not exist"),
        (["model=msa-effnetlite0-minlm"], "did you mean msa-effnetlite0-minilm"),
        (["model=./no-such-folder"], "'./no-such-folder' is neither a saved model folder, a preset nor a Hub id"),
        (["lr_scheduler=cosin"], "did you mean cosine"),
        (["corpus_kwargs={n_images: 24, imagesize: 64}"], "corpus_kwargs ['imagesize'] are not options"),
        (["report_to=mlflow"], "report_to 'mlflow' is not supported"),
        (["config_overrides.same_text_positve=false"], "Unknown config_overrides key 'same_text_positve'"),
        (
            ["config_overrides.text_config.hiden_dropout_prob=0"],
            "config_overrides.text_config key 'hiden_dropout_prob'",
        ),
        (["max_grad_norm=-1"], "'max_grad_norm' must be a finite number in (0, inf) or null, got -1"),
        (["weight_decay=-5"], "'weight_decay' must be a finite number in [0, inf), got -5"),
        (["ema_decay=1"], "'ema_decay' must be a finite number in (0, 1) or null, got 1"),
        (["learning_rate=.nan"], "'learning_rate' must be a finite number in (0, inf), got nan"),
        (["learning_rate=.inf"], "'learning_rate' must be a finite number in (0, inf), got inf"),
    ],
)
def test_bad_recipes_fail_before_any_work_with_exit_code_2(tiny_recipe_args, tmp_path, capsys, overrides, message):
    assert run(tiny_recipe_args("bad", *overrides)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_a_refusal_during_setup_leaves_no_empty_output_dir(tiny_recipe_args, tmp_path, capsys):
    assert run(tiny_recipe_args("refused", "per_device_batch_size=1000")) == 2
    assert "fewer than one global batch" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_outputs_are_written_with_the_umask_mode(tiny_recipe_args, tmp_path):
    """Not mkstemp's or safetensors' private 0600: a finished run is shared as any other folder is."""
    old = os.umask(0o022)
    try:
        assert run(tiny_recipe_args("modes", "num_epochs=1", "freeze_vision_stages=all")) == 0
    finally:
        os.umask(old)
    out = tmp_path / "modes"
    cache_entries = list((tmp_path / "msa-train-cache" / "vision-features").glob("*.safetensors"))
    files = [out / "test_metrics.json", out / "best" / "model.safetensors", out / "metrics.jsonl", *cache_entries]
    assert cache_entries and {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {
        path.name: "0o644" for path in files
    }


def test_a_finished_run_is_not_overwritten_without_permission(tiny_recipe_args, tmp_path, capsys):
    out = tmp_path / "done"
    out.mkdir()
    (out / "test_metrics.json").write_text("{}")
    assert run(tiny_recipe_args("done")) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert (out / "test_metrics.json").read_text() == "{}"


def test_a_folder_of_user_files_is_not_called_an_unfinished_run(tiny_recipe_args, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    assert run(tiny_recipe_args("thesis")) == 2
    err = capsys.readouterr().err
    assert f"{out} is not empty and holds no training run (thesis.tex); choose a new or empty output_dir" in err
    assert "unfinished" not in err and [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_resume_of_a_run_killed_before_its_first_save_gives_advice_that_works(tiny_recipe_args, tmp_path, capsys):
    out = tmp_path / "killed"
    (out / "logs").mkdir(parents=True)  # what a run killed before its first checkpoint leaves
    assert run(tiny_recipe_args("killed", "resume_from_checkpoint=latest")) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and "without resume_from_checkpoint" in err
    assert "overwrite_output_dir=true" in err and "start without it" not in err
    assert run(tiny_recipe_args("killed")) == 2  # without resume: the same way out, not back to resume
    assert "set overwrite_output_dir=true to start over" in capsys.readouterr().err


def test_a_tokenizer_folder_without_tokenizer_files_is_named(tiny_recipe_args, tmp_path, capsys):
    empty = tmp_path / "no-tokenizer"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert run(tiny_recipe_args("tok", f"tokenizer={empty}")) == 2
    err = capsys.readouterr().err
    assert f"{empty} holds no tokenizer (none of tokenizer.json, vocab.txt" in err
    assert "sentencepiece or tiktoken installed" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_two_processes_with_torchrun(tiny_recipe_args, tmp_path):
    """The script runs unchanged as 2 gloo processes (Accelerate's MULTI_CPU)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(SCRIPT), *tiny_recipe_args("ddp", "per_device_batch_size=4", "num_epochs=1")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "of 4 × 2 process(es)" in result.stderr
    assert (tmp_path / "ddp" / "best" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())["test"]["mr"] >= 0


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_two_processes_train_exactly_like_one_with_the_doubled_batch(tiny_recipe_args, tmp_path):
    """End to end through the script: 2 gloo processes × batch 4 against 1 process × batch 8, 4 steps at lr 1e-2.

    What makes them equal: the same global batches (the sampler shards one order), features gathered
    with their gradients, dropout off (its masks are drawn per process) and a frozen image tower
    (BatchNorm normalises each process's batch on its own when it trains).
    """
    same = (
        "config_overrides.text_config.hidden_dropout_prob=0",
        "config_overrides.text_config.attention_probs_dropout_prob=0",
        "freeze_vision_stages=all",
        "max_steps=4",
        "learning_rate=1e-2",
    )
    assert run(tiny_recipe_args("one", *same, "per_device_batch_size=8")) == 0
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(SCRIPT), *tiny_recipe_args("two", *same, "per_device_batch_size=4")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Compared as functions: Adam turns rounding noise into full steps where the true gradient is zero
    # (attention key biases: softmax ignores a constant added to a query's scores), which no output sees.
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64) for _ in range(4)]
    captions = ["two planes parked beside the runway", "a river", "many cars in a parking lot", "ships in the port"]
    outputs = []
    for name in ("one", "two"):
        model = AutoModel.from_pretrained(tmp_path / name / "best").eval()
        assert json.loads((tmp_path / name / "best" / "metrics.json").read_text())["step"] == 4
        with torch.no_grad():
            batch = AutoProcessor.from_pretrained(tmp_path / name / "best")(images=images, text=captions)
            outputs.append(model(**batch, output_scale_logits=True))
    for name in ("image_embeds", "text_embeds", "scale_logits"):
        torch.testing.assert_close(getattr(outputs[1], name), getattr(outputs[0], name), atol=1e-5, rtol=0, msg=name)


def test_accumulation_clipping_checkpointing_and_bf16_train(tiny_recipe_args, tmp_path):
    """The optimisation options run together; steps count optimizer updates, not micro-batches."""
    options = ("gradient_accumulation_steps=2", "max_grad_norm=1.0", "gradient_checkpointing=true")
    # Its own process: Accelerate fixes the precision once per process.
    arguments = tiny_recipe_args("options", *options, "mixed_precision=bf16", "num_epochs=1")
    result = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "options" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 5  # 80 pairs / batch 8 = 10 micro-batches = 5 optimizer steps
    weights = load_file(tmp_path / "options" / "best" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_fp16_on_a_cpu_is_refused(tiny_recipe_args, capsys):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed where CUDA is")
    assert run(tiny_recipe_args("fp16", "mixed_precision=fp16")) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
