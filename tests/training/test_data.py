"""Batch order, sharding, augmentation and text ids of the training data."""

import json

import pytest
from PIL import Image

from msa_hf import IMAGE_VIEW_GROUPS
from msa_hf_train.data import (
    AUGMENTATIONS,
    EpochBatchSampler,
    load_training_corpus,
    normalise_caption,
)
from msa_hf_train.recipe import Recipe, RecipeError


def keys(sampler):
    return [index for batch in sampler for _, index in batch]


def test_shards_of_two_processes_interleave_into_the_one_process_order():
    one = EpochBatchSampler(50, 4, seed=3)
    shards = [EpochBatchSampler(50, 4, seed=3, world_size=2, rank=r) for r in (0, 1)]
    for sampler in (one, *shards):
        sampler.start(epoch=2)
    batches = [list(s) for s in shards]
    assert len(batches[0]) == len(batches[1]) == 50 // 8
    interleaved = [index for pair in zip(*batches) for batch in pair for _, index in batch]
    assert interleaved == keys(one)[: len(interleaved)]
    assert len(set(interleaved)) == len(interleaved)


def test_each_epoch_has_its_own_fixed_order_and_skipping_resumes_it():
    sampler = EpochBatchSampler(40, 4, seed=0)
    sampler.start(0)
    first = keys(sampler)
    sampler.start(1)
    second = keys(sampler)
    assert sorted(first) == sorted(second) == list(range(40)) and first != second
    sampler.start(1, skip=3)
    assert keys(sampler) == second[12:]
    assert all(epoch == 1 for batch in sampler for epoch, _ in batch)


def test_a_split_smaller_than_one_global_batch_is_refused():
    with pytest.raises(RecipeError, match="fewer than one global batch of 16"):
        EpochBatchSampler(10, 8, seed=0, world_size=2)


def test_augmentations_draw_from_the_model_view_groups():
    assert AUGMENTATIONS["none"] == (0,)
    assert AUGMENTATIONS["flips"] == IMAGE_VIEW_GROUPS["flips"] and AUGMENTATIONS["dihedral"] == tuple(range(8))


def test_caption_normalisation_ignores_case_spacing_and_the_final_period():
    assert normalise_caption("  Many  Planes are parked. ") == normalise_caption("many planes are parked")
    assert normalise_caption("a plane") != normalise_caption("two planes")


def test_a_refused_corpus_names_the_recipe_keys_that_get_past_it(tmp_path):
    import json

    from msa_hf.data import CorpusValidationError, generate_synth_corpus
    from msa_hf_train.data import load_training_corpus
    from msa_hf_train.recipe import build_recipe

    path = generate_synth_corpus(tmp_path / "corpus", n_images=8, image_size=16)
    meta = json.loads(path.read_text())
    meta["images"][0]["filename"] = "../../x.png"
    meta["images"][1]["sentences"] = None
    path.write_text(json.dumps(meta))
    with pytest.raises(CorpusValidationError) as refused:
        load_training_corpus(build_recipe({"corpus": str(path)}), tmp_path, progress=False)
    advice = str(refused.value).splitlines()[-1]
    assert "corpus_kwargs.on_bad=drop" in advice and "corpus_kwargs.allow_outside_root=true" in advice
    assert "load_corpus" not in advice


def test_a_json_corpus_is_named_by_its_folder_not_the_file_stem(tmp_path):
    """Cards and reports name a Karpathy JSON corpus by its folder (``ucm-captions``), not ``dataset_ucm``."""
    root = tmp_path / "ucm-captions"
    root.mkdir()
    images = []
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(root / f"{i}.png")
        sentences = [{"raw": f"scene {i} view {k}"} for k in range(2)]
        images.append({"filename": f"{i}.png", "imgid": i, "split": split, "sentences": sentences})
    (root / "dataset_ucm.json").write_text(json.dumps({"images": images}))
    recipe = Recipe(model="msa-tiny", corpus=str(root / "dataset_ucm.json"))
    assert load_training_corpus(recipe, tmp_path / "cache", progress=False)[1] == "ucm-captions"
