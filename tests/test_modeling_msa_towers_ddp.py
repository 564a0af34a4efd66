"""Transformers image towers whose scales stop below the top layer: the layers above are dropped, so DDP accepts them."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from transformers import BertTokenizer, ViTConfig, ViTModel

from msa_hf import MSAModel

OUT_INDICES = {"vision_out_indices": [1, 2], "vision_pooling": ["cls", "cls"]}  # of 4 layers


def write_vit_folder(folder: Path, vocab_dir: Path) -> Path:
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    torch.manual_seed(4)
    ViTModel(config).save_pretrained(folder)
    BertTokenizer.from_pretrained(vocab_dir).save_pretrained(folder)
    return folder


def build(vision: str, text: str) -> MSAModel:
    torch.manual_seed(0)
    model, _ = MSAModel.from_backbones(vision, text, **OUT_INDICES)
    return model.train()


def num_layers(model: MSAModel) -> int:
    """The image tower's layer count (CLIP: ``encoder.layers``; ViT: ``encoder.layer``, or ``layers`` in transformers 5)."""
    lists = [m for n, m in model.vision_model.backbone.named_modules() if n.split(".")[-1] in ("layer", "layers")]
    return len(lists[0])


def train_steps(model: torch.nn.Module, steps: int = 2) -> None:
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):  # DDP reports parameters without gradient at the step after the one that left them out
        batch = {
            "pixel_values": torch.randn(3, 3, 32, 32, generator=generator),
            "input_ids": torch.randint(5, 120, (3, 8), generator=generator),
        }
        optimizer.zero_grad()
        model(**batch, return_loss=True).loss.backward()
        optimizer.step()


def worker(rank: int, port: int, folders: list[str]) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for vision in folders:  # a CLIP and a ViT image tower, each with CLIP's text tower
            train_steps(DistributedDataParallel(build(vision, folders[0])))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory, tiny_vocab_dir) -> Path:
    return write_vit_folder(tmp_path_factory.mktemp("vit"), tiny_vocab_dir)


@pytest.mark.parametrize("tower", ["clip", "vit"])
def test_layers_above_the_last_scale_are_dropped_and_every_parameter_trains(tower, clip_folder, vit_folder):
    model = build(str(clip_folder if tower == "clip" else vit_folder), str(clip_folder))
    assert num_layers(model) == 2
    train_steps(model, steps=1)
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_a_checkpoint_with_the_dropped_layers_still_loads(clip_folder, tmp_path):
    """A folder saved before the unused layers were dropped holds layers 2 and 3 as well: they are ignored."""
    model = build(str(clip_folder), str(clip_folder)).eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    extra = {
        re.sub(r"layers\.1\.", f"layers.{i}.", name): tensor.clone()
        for name, tensor in state.items()
        if name.startswith("vision_model.") and "layers.1." in name
        for i in (2, 3)
    }
    save_file({**state, **extra}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = MSAModel.from_pretrained(tmp_path)
    assert num_layers(loaded) == 2
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed with gloo")
def test_two_process_ddp_trains_truncated_clip_and_vit_towers(clip_folder, vit_folder):
    """Plain DDP (no find_unused_parameters), 2 gloo processes, two steps each: no "Expected to have finished reduction"."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(worker, args=(free_port(), [str(clip_folder), str(vit_folder)]), nprocs=2, start_method="spawn")
