"""Saved folders load as Hub remote code without msa_hf, and carry nothing machine-specific.

Run this file under each supported transformers major (CI does: 5.x and 4.57). Converted
checkpoints are checked the same way in test_convert_original.py.
"""

from __future__ import annotations

import ast
import json
import shutil

import pytest
import torch
from remote_code_check import assert_loads_without_package
from safetensors.torch import load_file, save_file
from tower_folders import write_clip_folder
from transformers import BertConfig

from msa_hf import MSAConfig, MSAModel


def test_timm_tower_folder_loads_as_remote_code(tiny_model_dir, tmp_path):
    assert_loads_without_package(tiny_model_dir, tmp_path)


def test_transformers_tower_folder_loads_as_remote_code(clip_folder, tmp_path):
    model, processor = MSAModel.from_backbones(str(clip_folder), str(clip_folder), text_max_length=12)
    folder = tmp_path / "msa-clip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert_loads_without_package(folder, tmp_path)


def test_saved_folders_are_portable(clip_folder, tmp_path):
    """Nothing machine-specific is saved: the folder copied elsewhere loads the same."""
    model, processor = MSAModel.from_backbones(str(clip_folder), str(clip_folder), text_max_length=12)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for path in folder.glob("*.json"):
        text = path.read_text()
        assert str(clip_folder) not in text and str(tmp_path) not in text, path.name
    assert json.loads((folder / "config.json").read_text())["text_config"].get("_name_or_path", "") == ""
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "copy")
    shutil.rmtree(folder)
    pixel_values = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(MSAModel.from_pretrained(moved).embed_images(pixel_values), model.embed_images(pixel_values))


def test_model_files_import_only_their_flat_set_at_top_level(tiny_model_dir):
    """transformers copies the folder's .py files; anything else they import must be a library."""
    shipped = {path.stem for path in tiny_model_dir.glob("*.py")}
    assert {"modeling_msa", "configuration_msa", "processing_msa"} <= shipped
    for path in tiny_model_dir.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert id(node) in top_level, f"{path.name}:{node.lineno} imports .{node.module} inside a function"
                assert node.module in shipped, f"{path.name} imports .{node.module}, which the folder lacks"
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            assert not any(name.split(".")[0] == "msa_hf" for name in names), f"{path.name} imports msa_hf"
    modeling = ast.parse((tiny_model_dir / "modeling_msa.py").read_text())
    direct = {node.module for node in modeling.body if isinstance(node, ast.ImportFrom) and node.level}
    assert direct == shipped - {"modeling_msa"}  # transformers 4.57 copies only the direct ones


@pytest.fixture(scope="module")
def clip_vit_b_width_folder(tmp_path_factory, tiny_vocab_dir):
    """CLIP ViT-B's text width (512) in a small random CLIP."""
    return write_clip_folder(tmp_path_factory.mktemp("clip512"), tiny_vocab_dir, text_width=512, vision_layers=2)


def test_clip_vit_b_width_builds_with_the_default_head_count(clip_vit_b_width_folder, caplog):
    with caplog.at_level("WARNING", logger="msa_hf"):
        model, processor = MSAModel.from_backbones(str(clip_vit_b_width_folder), str(clip_vit_b_width_folder))
    assert model.config.mscmat_num_heads == 8  # the largest count <= 12 dividing 512
    assert "8 MSCMAT heads (largest count <= 12 dividing the text width 512" in caplog.text
    batch = processor(images=[torch.rand(3, 40, 40)] * 2, text=["a harbor", "a forest"])
    assert model(**batch, return_loss=True).loss.isfinite()


def test_a_clip_folder_loads_each_tower_quietly(clip_folder, capfd, caplog):
    """One line per tower says what was used and left, instead of per-tensor tables."""
    with caplog.at_level("INFO", logger="msa_hf"):
        MSAModel.from_backbones(str(clip_folder), str(clip_folder), mscmat_num_heads=4)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "were not used when initializing" not in err and "UNEXPECTED" not in err
    assert "image tower: CLIPVisionModel from" in caplog.text and "left unused (logit_scale.* (1), text_model.*" in (
        caplog.text
    )
    assert "text tower: CLIPTextModel from" in caplog.text and "vision_model.*" in caplog.text


def test_a_tower_folder_without_its_weights_is_refused(clip_folder, tmp_path):
    folder = shutil.copytree(clip_folder, tmp_path / "clip")
    state = load_file(folder / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if not k.startswith("text_model.encoder.layers.1.")},
        folder / "model.safetensors",
    )
    with pytest.raises(ValueError, match=r"text tower .* lacks 16 weights of CLIPTextModel"):
        MSAModel.from_backbones(str(folder), str(folder), mscmat_num_heads=4)


def test_default_heads_follow_the_text_width():
    for width, heads in [(768, 12), (512, 8), (384, 12), (1024, 8), (32, 8)]:
        text = BertConfig(hidden_size=width, num_attention_heads=4 if width == 32 else 8).to_dict()
        assert MSAConfig(text_config=text).mscmat_num_heads == heads, width
    assert MSAConfig(text_config=BertConfig(hidden_size=512).to_dict(), mscmat_num_heads=4).mscmat_num_heads == 4
