"""Load a saved MSA folder as Hub remote code in a fresh interpreter where msa_hf cannot be imported.

The child blocks every ``msa_hf`` import, keeps its own transformers modules cache, and loads
the model before the processor (the order that broke transformers 4.57); its preprocessing must
equal the package's exactly and its outputs to 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from without_msa_hf import BLOCK_MSA_HF

from msa_hf import MSAModel, MSAProcessor

CAPTIONS = ["two planes parked beside the runway", "a river crosses green farmland", "many cars in a parking lot"]
CHILD = (
    BLOCK_MSA_HF
    + r"""
import json
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor

folder, inputs, outputs, captions = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))  # the parent's: same kernels, same summation order
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()  # the model before the processor
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
images = list(load_file(inputs)["images"].numpy())
batch = processor(images=images, text=captions)
with torch.no_grad():
    out = model(**batch, return_loss=True, output_scale_logits=True)
assert not [name for name in sys.modules if name.split(".")[0] == "msa_hf"]
save_file(
    {
        "pixel_values": batch["pixel_values"],
        "input_ids": batch["input_ids"],
        "image_embeds": out.image_embeds,
        "text_embeds": out.text_embeds,
        "scale_logits": out.scale_logits,
        "loss": out.loss.reshape(1),
    },
    outputs,
)
print(type(model).__module__, type(processor).__module__)
"""
)


def images_file(folder: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "images.safetensors"
    save_file({"images": torch.from_numpy(rng.integers(0, 256, (3, size + 7, size + 3, 3), dtype=np.uint8))}, path)
    return path


def assert_loads_without_package(folder: Path, tmp_path: Path, image_size: int = 40) -> None:
    """Remote-code outputs equal the package's (to 1e-6: another process may sum in another order)."""
    inputs = images_file(tmp_path, image_size)
    outputs = tmp_path / "remote.safetensors"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(folder),
            str(inputs),
            str(outputs),
            json.dumps(CAPTIONS),
            str(torch.get_num_threads()),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout  # the classes came from the folder, not from msa_hf
    remote = load_file(outputs)
    model = MSAModel.from_pretrained(folder).eval()
    processor = MSAProcessor.from_pretrained(folder)
    batch = processor(images=list(load_file(inputs)["images"].numpy()), text=CAPTIONS)
    with torch.no_grad():
        out = model(**batch, return_loss=True, output_scale_logits=True)
    assert torch.equal(remote["pixel_values"], batch["pixel_values"])
    assert torch.equal(remote["input_ids"], batch["input_ids"])
    for name in ("image_embeds", "text_embeds", "scale_logits"):  # same code, same weights: float noise at most
        torch.testing.assert_close(remote[name], getattr(out, name), rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(remote["loss"], out.loss.reshape(1), rtol=0, atol=1e-6)
