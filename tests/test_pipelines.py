"""transformers' pipelines on a saved MSA folder: the cards' pipeline_tag, with and without msa_hf.

Runs under transformers 5.x and in CI's 4.57 stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from without_msa_hf import BLOCK_MSA_HF

import msa_hf
from msa_hf import MSAForZeroShotImageClassification
from msa_hf.retrieval import encode_images, zero_shot_classify

LABELS = ["airport", "farmland", "harbor"]
TEMPLATE = "an aerial image of {}"
SRC = Path(msa_hf.__file__).resolve().parents[1]

CHILD = (
    BLOCK_MSA_HF
    + r"""
import json
from PIL import Image
from transformers import pipeline

folder, images, labels, template = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
results = [classifier(Image.open(path), candidate_labels=labels, hypothesis_template=template) for path in images]
print(json.dumps([{r["label"]: r["score"] for r in result} for result in results]))
"""
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = folder / f"{i}.png"
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def classify_reference(folder: Path, scenes: list[Path]) -> list[dict[str, float]]:
    """What msa-classify gives for the same images, labels and template."""
    model = msa_hf.MSAModel.from_pretrained(folder).eval()
    processor = msa_hf.MSAProcessor.from_pretrained(folder)
    result = zero_shot_classify([Image.open(p) for p in scenes], LABELS, model, processor, templates=TEMPLATE)
    return [dict(zip(result.labels, row.tolist())) for row in result.probs]


def test_zero_shot_pipeline_matches_msa_classify(tiny_model_dir, scenes):
    classifier = pipeline("zero-shot-image-classification", model=str(tiny_model_dir))
    assert isinstance(classifier.model, MSAForZeroShotImageClassification)
    expected = classify_reference(tiny_model_dir, scenes)
    for path, reference in zip(scenes, expected):
        result = classifier(Image.open(path), candidate_labels=LABELS, hypothesis_template=TEMPLATE)
        assert {r["label"]: r["score"] for r in result} == pytest.approx(reference, abs=1e-5)


def test_zero_shot_pipeline_runs_as_remote_code_without_msa_hf(tiny_model_dir, scenes, tmp_path):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == (
        "modeling_msa.MSAForZeroShotImageClassification"
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_model_dir), json.dumps([str(p) for p in scenes]), json.dumps(LABELS)]
        + [TEMPLATE],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for result, reference in zip(got, classify_reference(tiny_model_dir, scenes)):
        assert result == pytest.approx(reference, abs=1e-5)


def test_image_feature_extraction_pipeline_returns_the_retrieval_embedding(tiny_model_dir, scenes):
    extractor = pipeline("image-feature-extraction", model=str(tiny_model_dir))
    model = msa_hf.MSAModel.from_pretrained(tiny_model_dir).eval()
    processor = msa_hf.MSAProcessor.from_pretrained(tiny_model_dir)
    expected = encode_images(model, processor, [Image.open(p) for p in scenes], progress=False)
    got = torch.tensor([extractor(Image.open(p), return_tensors=False)[0] for p in scenes])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_token_type_ids_from_a_bert_tokenizer_are_accepted(tiny_model, tiny_tokenizer):
    text = tiny_tokenizer(["two planes parked beside the runway", "a river"], padding=True, return_tensors="pt")
    assert "token_type_ids" in text
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with_types = tiny_model(**text, pixel_values=pixel_values).logits_per_image
        without = tiny_model(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixel_values
        ).logits_per_image
    torch.testing.assert_close(with_types, without)
