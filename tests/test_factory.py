"""msa_hf.create_model_and_processor: one factory for presets, saved folders and Hub ids, with overrides and origin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer

import msa_hf
from msa_hf import MSAConfig, MSAModel, create_model_and_processor
from msa_hf.factory import ConfigOverrideError
from msa_hf.model_card import model_origin
from msa_hf.sources import resolve_device

TINY_VOCAB = Path(__file__).resolve().parents[1] / "src" / "msa_hf_train" / "tokenizers" / "msa-tiny"


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained(TINY_VOCAB)


def test_an_architecture_preset_takes_overrides_top_level_and_nested(tokenizer):
    model, processor, origin = create_model_and_processor(
        "msa-tiny", tokenizer=tokenizer, mscma_weight=3.0, text_config={"hidden_dropout_prob": 0.0}
    )
    assert isinstance(model, MSAModel) and processor.tokenizer is tokenizer
    assert model.config.mscma_weight == 3.0 and model.config.text_config.hidden_dropout_prob == 0.0
    assert model.config.text_config.hidden_size == MSAConfig.from_preset("msa-tiny").text_config.hidden_size
    assert origin.base_models == () and origin.vision_tower.endswith("(random)")


def test_an_architecture_preset_without_a_tokenizer_is_refused():
    with pytest.raises(
        ConfigOverrideError, match="'msa-tiny' is a randomly initialised architecture: pass `tokenizer`"
    ):
        create_model_and_processor("msa-tiny")


def test_a_saved_folder_loads_with_checked_overrides(tokenizer, tmp_path):
    torch.manual_seed(0)
    saved, processor, _ = create_model_and_processor("msa-tiny", tokenizer=tokenizer)
    saved.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model, _, origin = create_model_and_processor(str(tmp_path), csmmc_weight=0.5)
    assert model.config.csmmc_weight == 0.5
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    assert origin == model_origin(str(tmp_path), model.config) and origin.base_models == ()
    with pytest.raises(
        ConfigOverrideError, match="Unknown config_overrides key 'csmmc_weigth'. Did you mean csmmc_weight"
    ):
        create_model_and_processor(str(tmp_path), csmmc_weigth=0.5)


def test_a_pretrained_preset_names_its_towers_as_base_models():
    origin = model_origin("msa-effnetlite0-minilm", MSAConfig.from_preset("msa-tiny"))
    assert origin.base_models == ("timm/tf_efficientnet_lite0.in1k", "sentence-transformers/all-MiniLM-L6-v2")
    assert origin.title_towers == ("tf_efficientnet_lite0", "all-MiniLM-L6-v2")


def test_every_model_comes_in_eval_mode_on_the_device_asked(tokenizer, tmp_path):
    """The commands' --device (None: CUDA when available) and the trainer's CPU default go through one place."""
    built, processor, _ = create_model_and_processor("msa-tiny", tokenizer=tokenizer)
    assert not built.training and next(built.parameters()).device == torch.device("cpu")
    built.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _, _ = create_model_and_processor(tmp_path, device=None)
    assert not loaded.training and next(loaded.parameters()).device.type == resolve_device(None).type
    with pytest.raises(ValueError, match="`device` 'gpu' is not a torch device"):
        create_model_and_processor(tmp_path, device="gpu")


def test_the_factory_is_exported_lazily():
    assert "create_model_and_processor" in dir(msa_hf)
