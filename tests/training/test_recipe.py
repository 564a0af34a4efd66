"""Recipes: YAML keys and key=value overrides, typed and checked before any work."""

from pathlib import Path

import pytest

from msa_hf import PRESETS, MSAConfig, MSAModel
from msa_hf_train.recipe import KEYS, Recipe, RecipeError, build_recipe, load_recipe
from msa_hf_train.trainer import apply_freezing, cacheable_vision_stages


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
        ({}, ["num_epochs=0"], "'num_epochs' must be >= 1"),
        ({}, ["eval_every=0"], "'eval_every' must be 'epoch' or a number of steps >= 1"),
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
