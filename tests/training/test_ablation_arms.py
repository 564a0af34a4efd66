"""Each arm of benchmarks/ablation.py builds exactly the loss it claims."""

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from msa_hf import MSAConfig, MSAModel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arm_model(ablation, arm: str) -> MSAModel:
    torch.manual_seed(0)
    return MSAModel(MSAConfig.from_preset("msa-tiny", **ablation.arm_overrides(arm, {}))).eval()


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[:, 9:] = 0  # padding, which arm d masks
    return {
        "pixel_values": torch.randn(4, 3, 64, 64, generator=generator),
        "input_ids": torch.randint(5, 120, (4, 16), generator=generator) * mask,
        "attention_mask": mask,
        "image_ids": torch.tensor([0, 0, 1, 2]),  # two captions of one image, which arm e treats as positives
        "return_loss": True,
    }


def test_arm_a_is_the_triplet_loss_alone_and_never_runs_mscmat(ablation, monkeypatch):
    model = arm_model(ablation, "a")
    monkeypatch.setattr(model.mscmat, "forward", lambda *a, **k: pytest.fail("MSCMAT ran in the triplet-only arm"))
    out = model(**batch())
    assert out.loss_mscma == 0 and out.loss_csmmc == 0 and out.scale_logits is None
    assert torch.equal(out.loss, out.loss_triplet)


def test_arm_b_drops_only_the_distillation(ablation):
    out = arm_model(ablation, "b")(**batch())
    full = arm_model(ablation, "c")(**batch())
    assert out.loss_mscma > 0 and torch.allclose(out.loss, out.loss_triplet + 15 * out.loss_mscma)
    assert torch.allclose(out.loss_mscma, full.loss_mscma) and full.loss_csmmc > 0
    assert torch.allclose(full.loss, full.loss_triplet + 15 * full.loss_mscma + 10 * full.loss_csmmc)


def test_arm_d_masks_padding_and_arm_e_spares_same_image_captions(ablation):
    full = arm_model(ablation, "c")(**batch())
    masked = arm_model(ablation, "d")(**batch())
    assert torch.allclose(masked.loss_triplet, full.loss_triplet)
    assert not torch.allclose(masked.scale_logits, full.scale_logits, atol=1e-4)
    spared = arm_model(ablation, "e")(**batch())
    assert not torch.allclose(spared.loss_triplet, full.loss_triplet)
    assert not torch.allclose(spared.loss_mscma, full.loss_mscma)


def test_arm_f_aligns_only_the_deepest_scale(ablation):
    model = arm_model(ablation, "f")
    full_model = arm_model(ablation, "c")
    assert len(model.mscmat.attentions) == 1
    assert model.mscmat.query_projections[0].in_features == full_model.mscmat.query_projections[-1].in_features
    out = model(**batch())
    assert out.scale_logits.shape[0] == 1 and out.loss_csmmc == 0 and out.loss_mscma > 0


def test_every_arm_is_a_valid_config_and_arms_differ(ablation):
    configs = {arm: MSAConfig.from_preset("msa-tiny", **ablation.arm_overrides(arm, {})) for arm in ablation.ARMS}
    assert len({config.to_json_string() for config in configs.values()}) == len(ablation.ARMS)
    assert ablation.arm_overrides("a", {"same_text_positives": True})["same_text_positives"] is True


def test_a_finished_run_of_the_same_command_is_reused_and_any_other_is_run(ablation, tmp_path, monkeypatch):
    args = argparse.Namespace(
        workdir=tmp_path, recipe=Path("recipe.yaml"), corpus="corpus.json", budget=["max_steps=3"]
    )
    calls = []

    def fake_train(command, **kwargs):
        calls.append(command)
        output_dir = Path(next(a for a in command if a.startswith("output_dir=")).split("=", 1)[1])
        (output_dir / "best").mkdir(parents=True)
        (output_dir / "best" / "metrics.json").write_text(json.dumps({"validation": {"mr": 1.0}, "epoch": 1.0}))
        recorded = shlex.join(["python", "training/train.py", *command[2:]])
        (output_dir / "test_metrics.json").write_text(json.dumps({"test": {"mr": 2.0}, "command": recorded}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(ablation.subprocess, "run", fake_train)
    first = ablation.run_arm("a", 0, args, {})
    again = ablation.run_arm("a", 0, args, {})
    assert len(calls) == 1 and not first["reused"] and again["reused"] and again["test"] == {"mr": 2.0}
    args.budget = ["max_steps=4"]  # another budget is another run, never the stale one
    shutil.rmtree(tmp_path / "a-seed0" / "best")
    (tmp_path / "a-seed0" / "test_metrics.json").unlink()
    assert not ablation.run_arm("a", 0, args, {})["reused"] and len(calls) == 2
    args.budget = ["max_steps=5"]
    assert not ablation.finished_run(tmp_path / "a-seed0", calls[0])
