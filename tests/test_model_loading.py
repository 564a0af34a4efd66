"""Loading MSA folders: strict by default, never uninitialised memory, clear messages for wrong folders."""

import logging

import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from msa_hf import CheckpointMismatchError, MSAConfig, MSAModel, create_model_and_processor
from msa_hf.sources import ModelLoadError


def save_without(model, folder, drop=(), add=None, replace=None):
    """Save ``model`` to ``folder``, then rewrite its weights without / with some tensors."""
    model.save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    state = {key: value for key, value in state.items() if not key.startswith(tuple(drop))}
    state.update(add or {})
    state.update(replace or {})
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def assert_sane(model):
    """Every tensor finite and of a plausible size; BatchNorm statistics as freshly initialised."""
    for name, tensor in model.state_dict().items():
        assert torch.isfinite(tensor.float()).all(), name
        assert tensor.float().abs().max() < 1e3, name
        if name.endswith("running_var"):
            assert torch.equal(tensor, torch.ones_like(tensor)), name
        if name.endswith("num_batches_tracked"):
            assert tensor.item() == 0, name


def test_missing_tower_tensors_are_refused_with_their_names(tiny_model, tmp_path):
    folder = save_without(tiny_model, tmp_path, drop=("vision_model.",))
    with pytest.raises(CheckpointMismatchError, match=r"tensors missing: vision_model\.backbone\.") as error:
        MSAModel.from_pretrained(folder)
    assert "allow_missing_heads" not in str(error.value)  # the towers cannot start fresh
    with pytest.raises(CheckpointMismatchError):
        MSAModel.from_pretrained(folder, allow_missing_heads=True)


def test_missing_heads_are_refused_unless_asked_for(tiny_model, tmp_path, caplog):
    folder = save_without(tiny_model, tmp_path, drop=("image_projection.", "mscmat."))
    with pytest.raises(
        CheckpointMismatchError, match=r"50 tensors missing: image_projection.*allow_missing_heads=True"
    ):
        MSAModel.from_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="msa_hf"):
        model = MSAModel.from_pretrained(folder, allow_missing_heads=True)
    assert "head tensors start fresh" in caplog.text and "image_projection.fc.weight" in caplog.text
    saved = tiny_model.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith(("vision_model.", "text_model.")):
            assert torch.equal(tensor, saved[name]), name
    assert_sane(model)


def test_unexpected_and_reshaped_tensors_are_refused(tiny_model, tmp_path):
    folder = save_without(tiny_model, tmp_path / "extra", add={"mscmat.not_a_weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected tensors: mscmat\.not_a_weight"):
        MSAModel.from_pretrained(folder)
    folder = save_without(tiny_model, tmp_path / "shape", replace={"image_projection.fc.bias": torch.zeros(3)})
    with pytest.raises(CheckpointMismatchError, match=r"1 with another shape .*image_projection\.fc\.bias"):
        MSAModel.from_pretrained(folder)
    model = MSAModel.from_pretrained(folder, ignore_mismatched_sizes=True)  # transformers' explicit opt-in
    assert model.image_projection.fc.bias.shape == (32,)
    assert_sane(model)


def test_loading_info_is_still_available(tiny_model, tmp_path):
    folder = save_without(tiny_model, tmp_path, drop=("mscmat.match_heads.0.weight",))
    model, info = MSAModel.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == {"mscmat.match_heads.0.weight"} or info["missing_keys"] == [
        "mscmat.match_heads.0.weight"
    ]
    assert torch.isfinite(model.mscmat.match_heads[0].weight).all()


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_a_timm_tower_gets_timm_initialisation_never_empty_memory(backbone):
    """transformers builds on the meta device and initialises what the checkpoint lacks."""
    config = MSAConfig.from_preset(
        "msa-tiny", vision_backbone=backbone, vision_out_indices=(1, 2, 3), vision_pooling=("max", "max", "avg")
    )
    models = [MSAModel.from_pretrained(None, config=config, state_dict={})]
    if transformers.__version__.startswith("5."):  # 4.57 marks every module initialised after the first pass
        with torch.device("meta"):
            models.append(MSAModel(config))
        models[-1].to_empty(device="cpu")
        models[-1].init_weights()
    # The values follow timm's own scheme (e.g. ResNet's zero-initialised last norm per block).
    fresh = timm.create_model(backbone, features_only=True, out_indices=(1, 2, 3)).state_dict()
    for model in models:
        assert_sane(model)
        tower = model.vision_model.backbone.state_dict()
        assert tower.keys() == fresh.keys()
        for name, tensor in fresh.items():
            if tensor.is_floating_point() and tensor.numel() > 1 and tensor.std() > 0:
                assert tower[name].std() == pytest.approx(tensor.std().item(), rel=0.5), name
            else:
                assert torch.equal(tower[name], tensor), name  # constants (norms, zero-init) match exactly


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory, tiny_vocab_dir):
    folder = tmp_path_factory.mktemp("plain-bert")
    BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)).save_pretrained(
        folder
    )
    return folder


def test_a_plain_bert_folder_is_not_an_msa_model(bert_folder):
    with pytest.raises(ValueError, match=r"holds a bert model, not an MSA model; build MSA on it with "):
        MSAModel.from_pretrained(bert_folder)
    with pytest.raises(ModelLoadError) as error:
        create_model_and_processor(bert_folder)
    message = str(error.value)
    assert "\n" not in message and "not an MSA model" in message and "MSAModel.from_backbones" in message


def test_a_folder_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no config\.json here"):
        MSAModel.from_pretrained(tmp_path)
