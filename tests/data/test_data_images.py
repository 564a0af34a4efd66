"""The one image loader: decoding errors name the file, and huge scenes are decoded small."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from msa_hf.data.images import ImageLoadError, list_image_files, load_image


def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (size[1] // 50, size[0] // 50, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize(size, Image.BILINEAR).save(buffer, fmt)
    return buffer.getvalue()


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = _encoded((4000, 3000), "JPEG")
    assert load_image(data).size == (4000, 3000)  # no target: full decode
    # 1/4 scale keeps both sides >= 2 * 224; 1/8 (500 x 375) would not.
    assert load_image(data, target_size=224).size == (1000, 750)
    assert load_image(data, target_size=1024).size == (4000, 3000)


def test_large_png_is_box_reduced_after_decoding() -> None:
    data = _encoded((2000, 1000), "PNG")
    assert load_image(data, target_size=224).size == (1000, 500)  # factor 1000 // 448 = 2
    assert load_image(data, target_size=100).size == (400, 200)  # factor 5


def test_reduced_decode_stays_close_to_a_full_decode(tiny_processor) -> None:
    data = _encoded((2400, 1800), "JPEG")
    size = tiny_processor.image_processor.image_size
    full = tiny_processor(images=[load_image(data)], return_tensors="pt")["pixel_values"]
    reduced = tiny_processor(images=[load_image(data, target_size=size)], return_tensors="pt")["pixel_values"]
    assert (full - reduced).abs().mean() < 0.02  # normalised units; the full range is about 4.5


def test_sixteen_bit_and_palette_images_are_kept_as_they_are() -> None:
    gray16 = Image.fromarray(np.arange(600 * 600, dtype=np.uint16).reshape(600, 600))
    buffer = io.BytesIO()
    gray16.save(buffer, "PNG")
    loaded = load_image(buffer.getvalue(), target_size=64)
    assert loaded.mode in ("I;16", "I") and max(loaded.size) <= 600


def test_corrupt_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*bad\.jpg"):
        load_image(bad)
    with pytest.raises(ImageLoadError, match="scene.tif"):
        load_image(b"garbage", name="scene.tif")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_list_image_files_sorts_and_skips(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/z.PNG", "a.jpg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    images, skipped = list_image_files(tmp_path)
    assert [p.as_posix() for p in images] == ["a.jpg", "b/z.PNG"]
    assert [s.path for s in skipped] == ["notes.txt"]


@pytest.mark.parametrize(
    ("array", "planar", "layout"),
    [
        (np.zeros((16, 16, 3), np.float32), None, "3 band(s) of 32-bit floating-point samples"),
        (np.zeros((4, 16, 16), np.uint16), "separate", "4 band(s) of 16-bit unsigned integer samples, planar"),
        (np.zeros((4, 16, 16), np.uint8), "separate", "4 band(s) of 8-bit unsigned integer samples, planar"),
    ],
)
def test_valid_tiffs_pil_cannot_decode_are_not_called_corrupt(tmp_path, array, planar, layout) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, array, planarconfig=planar or "contig", photometric="minisblack" if planar else "rgb")
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageLoadError) as error:
            load_image(source)
        message = str(error.value)
        assert f"a TIFF of {layout}" in message and "PIL does not decode" in message and "corrupt" not in message
    (tmp_path / "damaged.tif").write_bytes(b"II*\x00" + bytes(40))  # a TIFF header and nothing readable
    with pytest.raises(ImageLoadError, match=r"not in an image format PIL reads \(corrupt\?\)"):
        load_image(tmp_path / "damaged.tif")
