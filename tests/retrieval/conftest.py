"""Fixtures for the retrieval tools: generated image folders and a second, different model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def _image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def write_images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _image(seed + i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def make_images():
    """``make_images(folder, names, seed=0)`` writes small distinct images (a fixture, not an
    import, because ``from conftest import ...`` is ambiguous with the repo's tests/conftest.py)."""
    return write_images


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Six decodable images (PNG and JPEG, one subfolder), a text file and a corrupt JPEG."""
    folder = tmp_path / "archive"
    write_images(folder, ["a.png", "b.jpg", "c.png", "tiles/d.png", "tiles/e.jpg", "tiles/f.tif"])
    (folder / "README.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """A folder organised by class: two images per class folder."""
    folder = tmp_path / "scenes"
    write_images(folder, ["airport/1.png", "airport/2.png", "farmland/1.png", "Dense_Residential/1.png"], seed=10)
    return folder


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config, tiny_processor) -> Path:
    """Same architecture and processor as ``tiny_model_dir`` but different weights."""
    from msa_hf import MSAModel

    torch.manual_seed(1234)
    model = MSAModel(tiny_config).eval()
    folder = tmp_path_factory.mktemp("other-msa")
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder
