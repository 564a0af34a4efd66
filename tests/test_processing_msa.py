"""MSAImageProcessor / MSAProcessor: image-type rules, tokenisation, save/load round trip."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

from msa_hf import MSAImageProcessor, MSAProcessor, to_float_rgb


def test_uint8_rgb_is_divided_by_255():
    array = np.array([[[0, 51, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(to_float_rgb(array), [[[0.0, 0.2, 1.0]]], rtol=1e-6)
    np.testing.assert_allclose(to_float_rgb(Image.fromarray(array)), [[[0.0, 0.2, 1.0]]], rtol=1e-6)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_pil_modes_become_rgb(mode):
    image = Image.new("RGB", (7, 5), (200, 100, 50)).convert(mode)
    out = to_float_rgb(image)
    assert out.shape == (5, 7, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, np.asarray(image.convert("RGB"), dtype=np.float32) / 255)


def test_sixteen_bit_array_is_stretched_between_percentiles():
    values = np.linspace(0, 4000, 101, dtype=np.float64)  # a 12-bit band stored as uint16
    band = np.tile(values.astype(np.uint16), (3, 1))[:, None, :]  # C×H×W
    out = to_float_rgb(band)
    assert out.shape == (1, 101, 3)
    low, high = np.percentile(band.astype(np.float64), (2, 98))
    expected = np.clip((values - low) / (high - low), 0, 1)
    np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-6)
    assert out.max() == 1.0 and out.min() == 0.0  # not the dark 4000/65535 of a plain division


def test_pil_sixteen_bit_and_float_modes():
    band = np.arange(64, dtype=np.uint16).reshape(8, 8) * 60
    out = to_float_rgb(Image.fromarray(band))  # mode I;16
    assert out.shape == (8, 8, 3) and np.allclose(out[..., 0], out[..., 2])
    assert out.min() == 0.0 and out.max() == 1.0
    floats = Image.fromarray(band.astype(np.float32) / 100)  # mode F, outside [0, 1]
    assert to_float_rgb(floats).max() == 1.0


def test_float_in_unit_range_is_kept_and_constant_image_is_safe():
    array = np.full((4, 4, 3), 0.25, dtype=np.float32)
    np.testing.assert_array_equal(to_float_rgb(array), array)
    assert np.all(to_float_rgb(np.full((4, 4), 1000, dtype=np.uint16)) == 0.0)


def test_tensor_is_channels_first_and_rgba_drops_alpha():
    tensor = torch.rand(4, 6, 5)
    out = to_float_rgb(tensor)
    np.testing.assert_allclose(out, tensor[:3].permute(1, 2, 0).numpy())


def test_bad_images_name_the_problem():
    with pytest.raises(ValueError, match=r"images\[0\].*5 channels|expected 1 \(gray\)"):
        MSAImageProcessor(image_size=8)([np.zeros((5, 5, 5), dtype=np.uint8)])
    with pytest.raises(ValueError, match="PIL image, numpy array or torch tensor"):
        to_float_rgb("a.png")
    with pytest.raises(ValueError, match="empty"):
        MSAImageProcessor(image_size=8)([])


def test_image_processor_resizes_and_normalises():
    processor = MSAImageProcessor(image_size=32, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    white = Image.new("RGB", (100, 60), (255, 255, 255))
    pixel_values = processor([white, np.zeros((20, 20), dtype=np.uint8)])["pixel_values"]
    assert pixel_values.shape == (2, 3, 32, 32)
    torch.testing.assert_close(pixel_values[0], torch.ones(3, 32, 32))
    torch.testing.assert_close(pixel_values[1], -torch.ones(3, 32, 32))
    batch4d = np.zeros((2, 3, 10, 10), dtype=np.float32)
    assert processor(batch4d)["pixel_values"].shape == (2, 3, 32, 32)


def test_processor_pads_and_truncates_text(tiny_processor):
    long_caption = " ".join(["planes"] * 100)
    batch = tiny_processor(text=["two white planes", long_caption])
    length = tiny_processor.text_max_length
    assert batch["input_ids"].shape == (2, length)
    assert batch["attention_mask"][0].sum() == 5  # [CLS] two white planes [SEP]
    assert batch["attention_mask"][1].sum() == length
    assert batch["input_ids"][1, -1] == tiny_processor.tokenizer.sep_token_id
    assert "token_type_ids" not in batch


def test_processor_both_modalities_feed_the_model(tiny_processor, tiny_model):
    batch = tiny_processor(images=[Image.new("RGB", (90, 90))] * 2, text=["a river", "many cars"])
    assert sorted(batch) == ["attention_mask", "input_ids", "pixel_values"]
    with torch.no_grad():
        assert tiny_model(**batch).logits_per_image.shape == (2, 2)
    with pytest.raises(ValueError, match="Give `images`, `text` or both"):
        tiny_processor()
    with pytest.raises(ValueError, match="strings"):
        tiny_processor(text=["ok", 3])


def test_processor_round_trip(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MSAProcessor
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MSAImageProcessor
    assert loaded.text_max_length == tiny_processor.text_max_length
    assert loaded.image_processor.image_size == tiny_processor.image_processor.image_size
    images = [np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)]
    a = tiny_processor(images=images, text=["ships in the harbor"])
    b = loaded(images=images, text=["ships in the harbor"])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_nodata_is_filled_with_the_channel_mean_before_the_stretch():
    band = np.linspace(0.0, 3000.0, 36, dtype=np.float32).reshape(6, 6)  # a float GeoTIFF band, outside [0, 1]
    image = np.stack([band, band * 2, band + 7], axis=-1)
    image[0, :3] = np.nan  # nodata border
    image[5, 5, 1] = np.inf
    out = to_float_rgb(image)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    filled = image.astype(np.float64).copy()
    for channel in range(3):
        values = filled[..., channel]
        values[~np.isfinite(values)] = values[np.isfinite(values)].mean()
    np.testing.assert_allclose(out, to_float_rgb(filled), atol=1e-6)
    pixel_values = MSAImageProcessor(image_size=8)([image, torch.from_numpy(image).permute(2, 0, 1)])["pixel_values"]
    assert torch.isfinite(pixel_values).all()
    unit = np.full((4, 4, 3), 0.5, dtype=np.float32)
    unit[0, 0] = np.nan
    np.testing.assert_allclose(to_float_rgb(unit), np.full((4, 4, 3), 0.5), rtol=1e-6)  # still in [0, 1]: kept


def test_all_nodata_image_is_a_clear_error():
    with pytest.raises(ValueError, match=r"images\[1\] has no finite pixel values"):
        MSAImageProcessor(image_size=8)([np.zeros((4, 4, 3), np.float32), np.full((4, 4), np.nan, np.float32)])
    one_band_missing = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32) * 5
    one_band_missing[..., 2] = np.nan
    assert np.isfinite(to_float_rgb(one_band_missing)).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ([], "empty list"),
        (b"two planes", "is bytes, not a string; decode it first"),
        ([b"two planes"], "entry 0 is a bytes; decode bytes first"),
        (5, "a string or a list of strings, got int"),
    ],
)
def test_bad_text_is_a_clear_error(tiny_processor, text, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor(text=text)
