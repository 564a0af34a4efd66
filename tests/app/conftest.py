"""Fixtures for the search app: a small rs-synth archive indexed with the tiny model, and a mismatched model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from msa_hf import MSAModel
from msa_hf.data import generate_synth_corpus
from msa_hf.retrieval import ImageIndex, build_index

NUM_IMAGES = 12


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image folder of a 12-image rs-synth corpus (96 px)."""
    json_path = generate_synth_corpus(tmp_path_factory.mktemp("synth") / "rs-synth", n_images=NUM_IMAGES, image_size=96)
    return json_path.parent / "images"


@pytest.fixture(scope="session")
def synth_index_path(tmp_path_factory: pytest.TempPathFactory, synth_archive: Path, tiny_model, tiny_processor) -> Path:
    """An index of :func:`synth_archive` built with the tiny model (the session's pristine copy)."""
    out = tmp_path_factory.mktemp("index") / "archive.idx"
    build_index(synth_archive, tiny_model, tiny_processor, out, batch_size=8, progress=False)
    return out


@pytest.fixture
def archive_copy(tmp_path: Path, synth_archive: Path, tiny_model, tiny_processor) -> tuple[Path, Path]:
    """A private (image folder, index) pair a test may modify: a fresh copy of the archive, indexed."""
    images = tmp_path / "images"
    shutil.copytree(synth_archive, images)
    index = tmp_path / "archive.idx"
    build_index(images, tiny_model, tiny_processor, index, batch_size=8, progress=False)
    return images, index


@pytest.fixture(scope="session")
def synth_index(synth_index_path: Path) -> ImageIndex:
    return ImageIndex.load(synth_index_path)


@pytest.fixture(scope="session")
def mismatched_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config, tiny_processor) -> Path:
    """Same architecture and processor as ``tiny_model_dir``, other weights: its embeddings are not comparable."""
    torch.manual_seed(4321)
    folder = tmp_path_factory.mktemp("mismatched-msa")
    MSAModel(tiny_config).eval().save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder
