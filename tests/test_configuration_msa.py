"""MSAConfig: presets, validation, serialisation."""

import pytest
from transformers import AutoConfig, BertConfig

from msa_hf import PRESETS, MSAConfig, MSAModel


def test_presets():
    paper = MSAConfig.from_preset("msa-resnet50-bert-base")
    assert paper.vision_backbone == "resnet50" and paper.text_config.hidden_size == 768
    assert paper.vision_pooling == ["max", "max", "max", "avg"] and paper.text_max_length == 31
    assert (paper.triplet_margin, paper.mscma_weight, paper.csmmc_weight, paper.csmmc_temperature) == (
        0.5,
        15.0,
        10.0,
        2.0,
    )
    with pytest.raises(ValueError, match="Unknown MSA preset"):
        MSAConfig.from_preset("nope")


def test_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError, match="not divisible by `mscmat_num_heads`=5"):
        MSAConfig.from_preset("msa-tiny", mscmat_num_heads=5)


def test_pooling_length_must_match_scales():
    with pytest.raises(ValueError, match="`vision_pooling` has 3 entries"):
        MSAConfig(vision_pooling=("max", "max", "avg"))


def test_unknown_pooling_name():
    with pytest.raises(ValueError, match="Unknown `vision_pooling` \\['median'\\]"):
        MSAConfig(vision_pooling=("max", "max", "max", "median"))


def test_round_trip_keeps_sub_configs(tmp_path):
    vision = {
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "image_size": 32,
        "patch_size": 8,
    }
    config = MSAConfig.from_preset(
        "msa-tiny",
        vision_config=vision,
        vision_out_indices=(1, 2),
        vision_pooling=("cls", "mean"),
        mscmat_mask_padding=True,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MSAConfig) and isinstance(loaded.text_config, BertConfig)
    assert loaded.vision_config.model_type == "vit" and loaded.vision_config.patch_size == 8
    assert {**loaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    assert loaded.num_scales == 2 and loaded.mscmat_mask_padding is True


def test_defaults_are_the_paper():
    config = MSAConfig()
    assert config.projection_dim == 768 and config.text_config.model_type == "bert"
    assert (config.image_size, config.text_max_length, config.mscmat_num_heads) == (224, 31, 12)
    assert config.mscmat_mask_padding is False and config.same_image_positives is False


def test_unknown_image_averaging_views_are_refused_with_the_choices():
    with pytest.raises(
        ValueError, match=r"`image_averaging_views` must be one of \['dihedral', 'flips'\], got 'rotations'"
    ):
        MSAConfig(image_averaging_views="rotations")


def test_bad_text_config_and_pooling():
    with pytest.raises(ValueError, match="needs a `model_type`"):
        MSAConfig(text_config={"hidden_size": 32})
    with pytest.raises(ValueError, match="Unknown `text_pooling`"):
        MSAConfig(text_pooling="last")


def test_one_registry_one_meaning_per_name():
    assert PRESETS["msa-resnet50-bert-base"].pretrained and not PRESETS["msa-tiny"].pretrained
    assert PRESETS["msa-effnetlite0-minilm"].vision == "tf_efficientnet_lite0"
    for name, preset in PRESETS.items():
        config = MSAConfig.from_preset(name)  # every preset has an architecture
        assert config.vision_backbone == preset.config["vision_backbone"], name
    with pytest.raises(ValueError, match=r"msa-resnet50-bert-base \(pretrained\).*msa-tiny \(random\)"):
        MSAConfig.from_preset("nope")
    with pytest.raises(ValueError, match=r"no pretrained towers; build a random model with MSAModel\(MSAConfig"):
        MSAModel.from_preset("msa-tiny")


def test_config_of_another_model_is_refused(tmp_path):
    BertConfig(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="holds a bert model, not an MSA model"):
        MSAConfig.from_pretrained(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json here"):
        MSAConfig.from_pretrained(tmp_path / "empty")
