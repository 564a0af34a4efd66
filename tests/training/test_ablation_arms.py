"""Each arm of benchmarks/ablation.py builds exactly the loss it claims; the summary pairs seeds."""

import argparse
import importlib.util
import json
import math
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from msa_hf import MSAConfig, MSAModel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"
RECIPE_BASE = {"same_text_positives": True, "text_pooling": "mean", "contrastive_weight": 10.0}


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arm_model(ablation, arm: str) -> MSAModel:
    torch.manual_seed(0)
    return MSAModel(MSAConfig.from_preset("msa-tiny", **ablation.arm_overrides(arm, RECIPE_BASE))).eval()


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[:, 9:] = 0
    return {
        "pixel_values": torch.randn(4, 3, 64, 64, generator=generator),
        "input_ids": torch.randint(5, 120, (4, 16), generator=generator) * mask,
        "attention_mask": mask,
        "return_loss": True,
    }


def forbid_mscmat(model, monkeypatch):
    monkeypatch.setattr(model.mscmat, "forward", lambda *a, **k: pytest.fail("MSCMAT ran in an arm without it"))


def test_infonce_arm_is_the_contrastive_loss_alone_and_never_runs_mscmat(ablation, monkeypatch):
    model = arm_model(ablation, "infonce")
    forbid_mscmat(model, monkeypatch)
    out = model(**batch())
    assert out.loss_triplet > 0 and out.loss_contrastive > 0 and out.scale_logits is None
    assert torch.allclose(out.loss, 10 * out.loss_contrastive)


def test_triplet_arm_is_the_triplet_loss_alone(ablation, monkeypatch):
    model = arm_model(ablation, "triplet")
    forbid_mscmat(model, monkeypatch)
    out = model(**batch())
    assert out.loss_contrastive is None and torch.equal(out.loss, out.loss_triplet)


def test_mscma_arms_add_their_terms_in_order(ablation):
    with_mscma = arm_model(ablation, "triplet+mscma")(**batch())
    msa = arm_model(ablation, "msa")(**batch())
    recipe = arm_model(ablation, "msa+infonce")(**batch())
    assert with_mscma.loss_contrastive is None and with_mscma.loss_mscma > 0
    assert torch.allclose(with_mscma.loss, with_mscma.loss_triplet + 15 * with_mscma.loss_mscma)
    assert msa.loss_csmmc > 0 and torch.allclose(msa.loss, msa.loss_triplet + 15 * msa.loss_mscma + 10 * msa.loss_csmmc)
    assert torch.allclose(recipe.loss, msa.loss + 10 * recipe.loss_contrastive)


def test_upper_arm_aligns_only_the_deepest_scale(ablation):
    model = arm_model(ablation, "msa+infonce-upper")
    assert len(model.mscmat.attentions) == 1
    out = model(**batch())
    assert out.scale_logits.shape[0] == 1 and out.loss_csmmc == 0 and out.loss_mscma > 0


def test_every_arm_is_a_distinct_valid_config_and_infonce_needs_a_weight(ablation):
    configs = {
        arm: MSAConfig.from_preset("msa-tiny", **ablation.arm_overrides(arm, RECIPE_BASE)) for arm in ablation.ARMS
    }
    assert len({config.to_json_string() for config in configs.values()}) == len(ablation.ARMS)
    assert ablation.REFERENCE_ARM in ablation.DEFAULT_ARMS and "infonce" in ablation.REFERENCE_ARM
    with pytest.raises(ValueError, match="contrastive_weight"):
        ablation.arm_overrides("infonce", {})


def fake_run(arm: str, seed: int, test_mr: float, validation_mr: float) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "validation": {"mr": validation_mr - 5},
        "validation_argsort": validation_mr,
        "test": {"mr": test_mr - 5},
        "test_argsort": {"mr": test_mr},
        "curve": [{"step": 10, "mr": 1.0, "argsort_mr": validation_mr}],
    }


def test_summary_pairs_seeds_against_infonce_with_a_t_interval(ablation):
    runs = [fake_run("infonce", s, 40.0 + s, 30.0) for s in range(3)]
    runs += [fake_run("msa", s, 41.0 + s + d, 31.0) for s, d in zip(range(3), (0.0, 1.0, 2.0))]
    summary = ablation.summarise(runs)
    test = summary["msa"]["test_minus_infonce"]
    assert test["mean"] == pytest.approx(2.0) and test["seeds"] == 3
    half = 4.303 * 1.0 / math.sqrt(3)  # sd of (1, 2, 3) is 1; t(0.975, 2 df) = 4.303
    assert test["ci95_low"] == pytest.approx(2.0 - half) and test["ci95_high"] == pytest.approx(2.0 + half)
    assert summary["msa"]["validation_minus_infonce"]["mean"] == pytest.approx(1.0)
    assert summary["infonce"]["test_mr_mean"] == pytest.approx(41.0) and "test_minus_infonce" not in summary["infonce"]
    header = {
        "corpus": "ucm",
        "command": "c",
        "date": "d",
        "machine": "m",
        "minutes": 1.0,
        "recipe": "r",
        "budget": ["max_steps=3"],
        "seeds": [0, 1, 2],
        "base_overrides": {},
        "reference_arm": "infonce",
    }
    table = ablation.markdown(summary, runs, header)
    assert "+2.00 [" in table and "| msa | 31.00" in table and "step 10" in table


def test_contrasts_pair_each_part_with_the_arm_without_it_over_shared_seeds(ablation):
    runs = [fake_run("triplet", s, 20.0 + s, 20.0) for s in range(3)]
    runs += [fake_run("triplet+mscma", s, 23.0 + s + 0.5 * s, 21.0) for s in range(2)]  # seed 2 missing
    (row,) = ablation.contrasts(runs)
    assert (row["arm"], row["minus"], row["part"]) == ("triplet+mscma", "triplet", "MSCMA added to the triplet loss")
    assert row["test"]["seeds"] == 2 and row["test"]["mean"] == pytest.approx(3.25)
    assert row["validation"]["mean"] == pytest.approx(1.0)
    assert {arm for contrast in ablation.CONTRASTS for arm in contrast[:2]} <= set(ablation.ARMS)


def test_a_finished_run_of_the_same_command_is_reused_and_any_other_is_run(ablation, tmp_path, monkeypatch):
    args = argparse.Namespace(
        workdir=tmp_path, recipe=Path("recipe.yaml"), corpus="corpus.json", budget=["max_steps=3"]
    )
    calls = []

    def fake_train(command, **kwargs):
        calls.append(command)
        output_dir = Path(next(a for a in command if a.startswith("output_dir=")).split("=", 1)[1])
        (output_dir / "best").mkdir(parents=True)
        (output_dir / "best" / "metrics.json").write_text(
            json.dumps({"validation": {"mr": 1.0}, "epoch": 1.0, "step": 3})
        )
        record = {
            "step": 3,
            "split": "validation",
            "metrics": {"mr": 1.0},
            "metrics_by_tie_rule": {"argsort": {"mr": 1.5}},
        }
        (output_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        recorded = shlex.join(["python", "training/train.py", *command[2:]])
        (output_dir / "test_metrics.json").write_text(
            json.dumps({"test": {"mr": 2.0}, "test_argsort_ties": {"mr": 2.5}, "command": recorded})
        )
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(ablation.subprocess, "run", fake_train)
    first = ablation.run_arm("msa", 0, args, {})
    again = ablation.run_arm("msa", 0, args, {})
    assert len(calls) == 1 and not first["reused"] and again["reused"]
    assert ablation.test_mr(again) == 2.5 and ablation.validation_mr(again) == 1.5
    assert again["curve"] == [{"step": 3, "mr": 1.0, "argsort_mr": 1.5}]
    args.budget = ["max_steps=4"]  # another budget is another run, never the stale one
    shutil.rmtree(tmp_path / "msa-seed0" / "best")
    (tmp_path / "msa-seed0" / "test_metrics.json").unlink()
    assert not ablation.run_arm("msa", 0, args, {})["reused"] and len(calls) == 2
    args.budget = ["max_steps=5"]
    assert not ablation.finished_run(tmp_path / "msa-seed0", calls[0])


def test_a_summary_says_how_many_runs_an_earlier_invocation_timed(ablation):
    runs = [{"reused": True}, {"reused": False}, {"reused": True}]
    assert ablation.reused_note(runs) == " (2 of 3 runs finished by an earlier invocation, not included)"
    assert ablation.reused_note([{"reused": False}]) == ""
