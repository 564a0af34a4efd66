"""Recipes: YAML keys and key=value overrides, typed and checked before any work."""

from pathlib import Path

import pytest
import torch

from msa_hf import PRESETS, MSAConfig, MSAModel
from msa_hf.factory import ConfigOverrideError, merge_config_overrides
from msa_hf_train.recipe import (
    KEYS,
    RANGES,
    Recipe,
    RecipeError,
    build_recipe,
    describe_range,
    load_recipe,
)
from msa_hf_train.trainer import apply_freezing, build_model, cacheable_vision_stages, check_recipe


def test_the_issue_keys_exist():
    required = [
        "model",
        "corpus",
        "corpus_kwargs",
        "output_dir",
        "seed",
        "num_epochs",
        "max_steps",
        "per_device_batch_size",
        "learning_rate",
        "vision_lr",
        "text_lr",
        "weight_decay",
        "warmup_steps",
        "lr_scheduler",
        "gradient_accumulation_steps",
        "max_grad_norm",
        "mixed_precision",
        "gradient_checkpointing",
        "freeze_vision_stages",
        "freeze_text_layers",
        "eval_every",
        "save_every",
        "keep_last",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "report_to",
        "config_overrides",
    ]
    assert set(required) <= set(KEYS)


def test_overrides_are_typed_as_yaml_and_nested_by_dots(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "num_epochs: 3\ncorpus_kwargs: {n_images: 100, seed: 1}\nconfig_overrides: {same_image_positives: true}\n"
    )
    recipe = load_recipe(path, ["corpus_kwargs.n_images=40", "learning_rate=2e-4", "eval_every=25", "report_to=[]"])
    assert recipe.num_epochs == 3
    assert recipe.corpus_kwargs == {"n_images": 40, "seed": 1}
    assert recipe.learning_rate == pytest.approx(2e-4) and recipe.eval_every == 25 and recipe.report_to == []
    assert recipe.config_overrides == {"same_image_positives": True}
    assert build_recipe({}, ["freeze_vision_stages=all"]).freeze_vision_stages == "all"
    assert build_recipe({}, ["max_grad_norm=1"]).max_grad_norm == 1


@pytest.mark.parametrize(
    ("values", "overrides", "message"),
    [
        ({"lerning_rate": 1}, [], "Unknown recipe key 'lerning_rate' in the recipe. Did you mean learning_rate?"),
        ({}, ["mixed_precision=fp8"], "must be 'no' or 'bf16' or 'fp16', got 'fp8'"),
        ({}, ["seed"], "is not key=value"),
        ({}, ["num_epochs=0"], "'num_epochs' must be a whole number in [1, inf), got 0"),
        ({}, ["eval_every=0"], "'eval_every' must be a whole number in [1, inf) or 'epoch', got 0"),
        ({}, ["push_to_hub=true"], "needs hub_repo_id"),
        ({"num_epochs": 2}, ["num_epochs.x=1"], "'num_epochs' is not a mapping"),
        ({}, ["freeze_vision_stages=some"], "'freeze_vision_stages' must be int or 'all' or null"),
    ],
)
def test_bad_values_are_named(values, overrides, message):
    with pytest.raises(RecipeError) as error:
        build_recipe(values, overrides)
    assert message in str(error.value)


def test_missing_or_broken_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("num_epochs: [1,\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must hold a mapping"):
        load_recipe(listing)


def test_the_resolved_recipe_round_trips_through_yaml(tmp_path):
    recipe = build_recipe({}, ["num_epochs=4", "corpus_kwargs.n_images=10"])
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path) == recipe
    assert Recipe() == build_recipe({})


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_every_shipped_recipe_loads_and_builds_a_valid_config(path):
    recipe = load_recipe(path)
    assert recipe.model in PRESETS
    config = MSAConfig.from_preset("msa-tiny", **recipe.config_overrides)
    assert config.mscma_weight == 15 and config.csmmc_weight == 10  # MSA's losses stay on
    model = MSAModel(config)
    apply_freezing(model, recipe)
    assert recipe.cache_frozen_vision
    assert cacheable_vision_stages(model, recipe) == recipe.freeze_vision_stages  # the frozen image part is cached


def test_the_ucm_recipe_reads_the_shared_corpus_by_a_relative_path():
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "training" / "configs" / "ucm_captions.yaml")
    assert recipe.corpus == "../shared/data/ucm-captions/dataset_ucm.json"
    assert recipe.model == "msa-effnetlite2-minilm" and recipe.config_overrides["same_text_positives"]
    assert recipe.freeze_vision_stages == 3 and recipe.vision_lr > 0  # the last image stage trains


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_grad_norm=-1", "'max_grad_norm' must be a finite number in (0, inf) or null, got -1"),
        ("weight_decay=-5", "'weight_decay' must be a finite number in [0, inf), got -5"),
        ("learning_rate=.nan", "'learning_rate' must be a finite number in (0, inf), got nan"),
        ("learning_rate=.inf", "'learning_rate' must be a finite number in (0, inf), got inf"),
        ("text_lr=-1e-5", "'text_lr' must be a finite number in [0, inf) or null"),
        ("adam_beta2=1", "'adam_beta2' must be a finite number in [0, 1), got 1"),
        ("adam_epsilon=0", "'adam_epsilon' must be a finite number in (0, inf), got 0"),
        ("seed=-1", "'seed' must be a whole number in [0, 4294967295], got -1"),
        ("freeze_vision_stages=-2", "'freeze_vision_stages' must be a whole number in [0, inf) or 'all' or null"),
    ],
)
def test_numbers_that_would_train_backwards_or_not_at_all_are_refused(override, message):
    with pytest.raises(RecipeError) as error:
        build_recipe({}, [override])
    assert message in str(error.value)


def test_docs_list_the_valid_range_of_every_numeric_key():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    for key in RANGES:
        row = next((line for line in docs.splitlines() if line.startswith(f"| `{key}`")), "")
        assert describe_range(key) in row, key


def test_mixed_precision_no_is_accelerates_spelling_not_yaml_false():
    assert build_recipe({}, ["mixed_precision=no"]).mixed_precision == "no"
    assert build_recipe({"mixed_precision": False}).mixed_precision == "no"


def test_config_overrides_merge_nested_keys_and_refuse_unknown_ones():
    base = MSAConfig.from_preset("msa-tiny").to_dict()
    merged = merge_config_overrides(base, {"same_text_positives": True, "text_config": {"hidden_dropout_prob": 0.0}})
    assert merged["same_text_positives"] and merged["text_config"]["hidden_dropout_prob"] == 0.0
    assert merged["text_config"]["hidden_size"] == base["text_config"]["hidden_size"]  # the rest is kept
    with pytest.raises(
        ConfigOverrideError, match=r"Unknown config_overrides key 'same_text_positve'\. Did you mean same_text"
    ):
        merge_config_overrides(base, {"same_text_positve": False})
    with pytest.raises(
        ConfigOverrideError, match=r"config_overrides.text_config key 'hiden_dropout_prob'.*hidden_dropout_prob"
    ):
        merge_config_overrides(base, {"text_config": {"hiden_dropout_prob": 0.0}})
    with pytest.raises(ConfigOverrideError, match=r"config_overrides.mscma_weight must be a finite number, got nan"):
        merge_config_overrides(base, {"mscma_weight": float("nan")})


def test_nested_config_overrides_really_change_the_built_model():
    recipe = build_recipe(
        {"model": "msa-tiny"},
        [
            "config_overrides.text_config.hidden_dropout_prob=0",
            "config_overrides.text_config.attention_probs_dropout_prob=0",
        ],
    )
    check_recipe(recipe)
    model = build_model(recipe).model
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {0.0}
    assert model.config.text_config.hidden_size == 32  # the preset's other settings stay


def test_msa_tiny_ships_a_tokenizer_that_fits_its_vocabulary():
    recipe = build_recipe({"model": "msa-tiny"})
    check_recipe(recipe)  # no `tokenizer` needed
    built = build_model(recipe)
    tokenizer = built.processor.tokenizer
    assert len(tokenizer) <= built.model.config.text_config.vocab_size
    ids = tokenizer("Two planes are parked beside the runway, near an xylophone.")["input_ids"]
    assert tokenizer.unk_token_id not in ids  # letters as word pieces: any lowercase word is spelled out
