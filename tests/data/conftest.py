"""Tiny corpus fixtures for the data tests, written by the tests themselves (a few KB each)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORDS = ["plane", "ship", "river", "farmland", "forest", "road", "car", "tank", "harbour", "building"]


def caption_for(i: int, k: int) -> str:
    return f"{['one', 'two', 'three', 'four', 'five'][k % 5]} {WORDS[i % len(WORDS)]} near the {WORDS[(i + k) % len(WORDS)]} {i}"


def rgb_image(i: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8), "RGB")


def write_karpathy(
    root: Path,
    splits: Sequence[str],
    *,
    ext: str = "jpg",
    filepath: str | None = "images",
    captions: int = 5,
    name: str = "dataset_test.json",
    sixteen_bit: Sequence[int] = (),
) -> Path:
    """A Karpathy-style corpus: ``root/name`` + images under ``root/filepath``."""
    folder = root / filepath if filepath else root
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, split in enumerate(splits):
        filename = f"{i + 1}.{ext}"
        if i in sixteen_bit:
            array = (np.random.default_rng(i).random((32, 32)) * 4000).astype(np.uint16)
            Image.fromarray(array).save(folder / filename)  # mode I;16
        else:
            rgb_image(i).save(folder / filename)
        entry = {
            "filename": filename,
            "imgid": i,
            "split": split,
            "sentences": [
                {"raw": caption_for(i, k), "tokens": caption_for(i, k).split(), "imgid": i, "sentid": 5 * i + k}
                for k in range(captions)
            ],
        }
        if filepath:
            entry["filepath"] = filepath
        images.append(entry)
    path = root / name
    path.write_text(json.dumps({"images": images, "dataset": "test"}))
    return path


@pytest.fixture
def caption_of() -> Callable[[int, int], str]:
    """The caption the fixtures write for image ``i``, caption ``k``."""
    return caption_for


@pytest.fixture
def karpathy_corpus(tmp_path: Path) -> Path:
    """12 jpgs, 8 train / 2 val / 2 test, 5 captions each."""
    return write_karpathy(tmp_path / "kp", ["train"] * 8 + ["val"] * 2 + ["test"] * 2)


@pytest.fixture
def make_karpathy(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(splits: Sequence[str], **kwargs) -> Path:
        return write_karpathy(tmp_path / f"kp{next(counter)}", splits, **kwargs)

    return make
