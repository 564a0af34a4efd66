"""The frozen-tower feature cache: whole-tower and partial (lower stages cached, upper stages trained) entries."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from msa_hf import image_view
from msa_hf_train.feature_cache import compute_scale_features, feature_cache_key, load_or_compute_scale_features

VARIANTS = (0, 5)


@pytest.fixture
def split() -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(5)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.Sequence(datasets.Value("string")),
            "image_id": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "captions": [[f"caption {i}"] for i in range(5)], "image_id": list(range(5))},
        features=features,
    )


def _compute(model, processor, split, frozen_stages):
    return compute_scale_features(
        model,
        processor,
        split,
        VARIANTS,
        batch_size=2,
        num_workers=0,
        progress=False,
        device=torch.device("cpu"),
        frozen_stages=frozen_stages,
    )


def _pixels(processor, split) -> torch.Tensor:
    return processor(images=[image.convert("RGB") for image in split["image"]], return_tensors="pt")["pixel_values"]


def test_a_partial_entry_holds_the_lower_scales_and_the_map_the_upper_stages_read(tiny_model, tiny_processor, split):
    cached = _compute(tiny_model, tiny_processor, split, frozen_stages=2)
    assert len(cached.scales) == 2 and cached.stage_map is not None
    pixels = _pixels(tiny_processor, split)
    with torch.no_grad():
        for slot, variant in enumerate(VARIANTS):
            outputs = tiny_model.vision_model(image_view(pixels, variant), output_hidden_states=True)
            for k in range(2):
                torch.testing.assert_close(cached.scales[k][slot], outputs.scale_features[k], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(cached.stage_map[slot], outputs.hidden_states[1], rtol=1e-5, atol=1e-6)
    batch = cached.select(torch.tensor([1, 0]), torch.tensor([4, 2]))
    assert sorted(batch) == ["scale_features", "stage_hidden_state"]
    torch.testing.assert_close(batch["stage_hidden_state"][0], cached.stage_map[1, 4], rtol=0, atol=0)


def test_a_whole_tower_entry_holds_every_pooled_scale_and_no_map(tiny_model, tiny_processor, split):
    cached = _compute(tiny_model, tiny_processor, split, frozen_stages="all")
    assert len(cached.scales) == tiny_model.config.num_scales and cached.stage_map is None
    assert sorted(cached.select(torch.tensor([0]), torch.tensor([3]))) == ["scale_features"]


def test_a_tower_that_resumes_wrongly_stops_the_caching(tiny_model, tiny_processor, split, monkeypatch):
    tower = tiny_model.vision_model
    monkeypatch.setattr(tower, "forward_from_stage", lambda hidden, stage: [torch.zeros(len(hidden), 1)] * 2)
    with pytest.raises(
        RuntimeError,
        match=r"'test_resnet' \(FeatureListNet\) cannot be split at stage 2: scale 3 .*cache_frozen_vision=false",
    ):
        _compute(tiny_model, tiny_processor, split, frozen_stages=2)


def test_each_frozen_part_is_its_own_entry_and_is_read_back(tiny_model, tiny_processor, split, tmp_path):
    keys = {stages: feature_cache_key(tiny_model, tiny_processor, split, VARIANTS, stages) for stages in (None, 1, 2)}
    assert len(set(keys.values())) == 3
    kwargs = {"batch_size": 2, "num_workers": 0, "progress": False, "device": torch.device("cpu"), "frozen_stages": 2}
    written = load_or_compute_scale_features(tiny_model, tiny_processor, split, VARIANTS, tmp_path, **kwargs)
    read = load_or_compute_scale_features(
        tiny_model, tiny_processor, split, VARIANTS, tmp_path, compute=False, **kwargs
    )
    assert len(list((tmp_path / "vision-features").glob("*.safetensors"))) == 1
    assert len(read.scales) == 2
    assert all(torch.equal(a, b) for a, b in zip(read.scales, written.scales))
    assert torch.equal(read.stage_map, written.stage_map)


def _split_from_files(folder, images) -> datasets.Dataset:
    folder.mkdir()
    paths = []
    for i, image in enumerate(images):
        image.save(folder / f"{i}.bmp")
        paths.append(str(folder / f"{i}.bmp"))
    return datasets.Dataset.from_dict({"image": paths}, features=datasets.Features({"image": datasets.Image()}))


def test_the_key_follows_the_image_bytes_not_the_files_place_or_time(tiny_model, tiny_processor, split, tmp_path):
    images = split["image"]
    original = _split_from_files(tmp_path / "original", images)
    copied = _split_from_files(tmp_path / "copied", images)  # written later: other paths and mtimes
    changed_images = list(images)
    pixels = np.array(changed_images[3])
    pixels[0, 0, 0] ^= 1
    changed_images[3] = Image.fromarray(pixels)
    changed = _split_from_files(tmp_path / "changed", changed_images)
    sizes = {(tmp_path / folder / "3.bmp").stat().st_size for folder in ("original", "changed")}
    assert len(sizes) == 1  # BMP is uncompressed: only the bytes tell the two apart

    def key(s):
        return feature_cache_key(tiny_model, tiny_processor, s, VARIANTS, 2)

    assert key(original) == key(copied)
    assert key(changed) != key(original)
