"""MSA folders with CLIP and ViT image towers cross transformers majors, in both directions.

The fixtures (tests/fixtures/cross_version/transformers{4,5}/, written by make_folders.py there)
were saved under transformers 4.57 and 5.x; every one must load under the running version, with
msa_hf and as remote code without it, and give the embeddings it gave when it was saved. CI runs
this file in both stages, so a 5.x folder is loaded by 4.57 and a 4.57 folder by 5.x.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from without_msa_hf import BLOCK_MSA_HF

from msa_hf import MSAConfig, MSAModel

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cross_version"
FOLDERS = sorted(p.parent for p in FIXTURES.glob("transformers*/*/config.json"))
CHILD = (
    BLOCK_MSA_HF
    + r"""
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
inputs = load_file(f"{folder}/expected.safetensors")
with torch.no_grad():
    out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"])
save_file({"image_embeds": out.image_embeds, "text_embeds": out.text_embeds}, sys.argv[2])
print(type(model).__module__)
"""
)


def embeddings(model: MSAModel, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model.eval()(pixel_values=expected["pixel_values"], input_ids=expected["input_ids"])
    return {"image_embeds": out.image_embeds, "text_embeds": out.text_embeds}


def test_fixtures_cover_both_majors_and_both_towers():
    assert [f"{p.parent.name}/{p.name}" for p in FOLDERS] == [
        "transformers4/clip",
        "transformers4/vit",
        "transformers5/clip",
        "transformers5/vit",
    ]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_folder_loads_with_msa_hf(folder):
    expected = load_file(folder / "expected.safetensors")
    got = embeddings(MSAModel.from_pretrained(folder), expected)  # strict: a missing tensor raises
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_folder_loads_as_remote_code_without_msa_hf(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "folder")
    code = tmp_path / "code"  # the remote-code files of this checkout, as save_pretrained writes them
    MSAModel(MSAConfig.from_pretrained(folder)).save_pretrained(code)
    for path in code.glob("*.py"):
        shutil.copy(path, copy)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    outputs = tmp_path / "remote.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(copy), str(outputs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transformers_modules" in proc.stdout
    expected = load_file(folder / "expected.safetensors")
    for name, tensor in load_file(outputs).items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-5, msg=name)
    assert json.loads((copy / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_msa.MSAModel"
