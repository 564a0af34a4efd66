"""Shared fixtures: a tiny MSA model and a real processor, built offline in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tower_folders import write_clip_folder
from transformers import BertTokenizer

from msa_hf import MSAConfig, MSAModel, MSAProcessor

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "a",
    "an",
    "the",
    "one",
    "two",
    "three",
    "four",
    "five",
    "many",
    "some",
    "several",
    "white",
    "red",
    "blue",
    "gray",
    "green",
    "large",
    "small",
    "plane",
    "planes",
    "airplane",
    "runway",
    "airport",
    "ship",
    "ships",
    "boat",
    "harbor",
    "harbour",
    "port",
    "river",
    "lake",
    "sea",
    "coast",
    "water",
    "car",
    "cars",
    "parking",
    "lot",
    "road",
    "roads",
    "bridge",
    "building",
    "buildings",
    "house",
    "houses",
    "residential",
    "dense",
    "sparse",
    "farmland",
    "field",
    "fields",
    "forest",
    "trees",
    "desert",
    "bare",
    "land",
    "tank",
    "tanks",
    "storage",
    "stadium",
    "playground",
    "court",
    "is",
    "are",
    "parked",
    "near",
    "beside",
    "next",
    "to",
    "in",
    "on",
    "of",
    "with",
    "and",
    "crosses",
    "along",
    "between",
    "around",
    "there",
    "here",
    "it",
    "this",
    "image",
    "area",
    "scene",
    "aerial",
    "view",
]

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def write_vocab(folder: Path) -> Path:
    """A BERT WordPiece vocab covering typical RS caption words, written by the test."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + WORDS) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only ``vocab.txt``: what BERT tokenizers load from."""
    return write_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_vocab_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(tiny_vocab_dir)


@pytest.fixture(scope="session")
def tiny_config() -> MSAConfig:
    return MSAConfig.from_preset("msa-tiny")


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer: BertTokenizer, tiny_config: MSAConfig) -> MSAProcessor:
    return MSAProcessor.from_config(tiny_config, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model(tiny_config: MSAConfig) -> MSAModel:
    torch.manual_seed(0)
    return MSAModel(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: MSAModel, tiny_processor: MSAProcessor
) -> Path:
    folder = tmp_path_factory.mktemp("tiny-msa")
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory, tiny_vocab_dir: Path) -> Path:
    return write_clip_folder(tmp_path_factory.mktemp("clip"), tiny_vocab_dir)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared is absent ({SHARED_DIR}); it holds the real corpora and spec files")
    return SHARED_DIR
