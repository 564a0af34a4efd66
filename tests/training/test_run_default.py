"""The default job end to end on a small rs-synth corpus (needs the offline weight packages)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor

from msa_hf.pretrained_towers import INSTALL_HINT, offline_preset_available

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "run_default.py"

pytestmark = pytest.mark.skipif(not offline_preset_available(), reason=f"offline towers not installed ({INSTALL_HINT})")


def load_script():
    spec = importlib.util.spec_from_file_location("run_default", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_job_writes_a_loadable_model_and_honest_metrics(tmp_path, capsys):
    job = load_script()
    assert job.main(["--workdir", str(tmp_path), "--n-images", "40", "--image-size", "64", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = report["metrics"]
    assert report["preset"] == "msa-effnetlite0-minilm"
    assert f"mR = {metrics['mr']:.2f}" in printed
    assert (tmp_path / "eval" / "retrieval_examples.png").stat().st_size > 0
    model_dir = tmp_path / "model"
    assert f"| rs-synth | test | {metrics['i2t_r1']:.2f} |" in (model_dir / "README.md").read_text()

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    batch = processor(images=[torch.rand(3, 64, 64)], text=["two white planes are parked beside the runway"])
    with torch.no_grad():
        out = model(**batch)
    assert out.image_embeds.shape == (1, 384) and torch.isfinite(out.logits_per_image).all()


def test_same_seed_same_numbers(tmp_path):
    job = load_script()
    runs = []
    for name in ("a", "b"):
        job.main(["--workdir", str(tmp_path / name), "--n-images", "40", "--image-size", "64", "--no-progress"])
        runs.append(json.loads((tmp_path / name / "eval" / "metrics.json").read_text())["metrics"])
    assert runs[0] == runs[1]
