"""load_corpus on the real UCM-Captions corpus in ../shared (skipped, with a message, where absent)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from msa_hf.data import corpus_info, evaluation_view, load_corpus, training_view


@pytest.fixture
def ucm_json(shared_dir: Path) -> Path:
    # shared_dir (tests/conftest.py) is ../shared beside the repository root; it skips with a message where absent
    path = shared_dir / "data" / "ucm-captions" / "dataset_ucm.json"
    if not path.is_file():
        pytest.skip(f"UCM-Captions not found at {path}")
    return path


def test_ucm_captions_loads_with_the_official_splits(ucm_json: Path) -> None:
    start = time.perf_counter()
    corpus = load_corpus(ucm_json)  # decodes every image once to validate it
    elapsed = time.perf_counter() - start
    assert [corpus[s].num_rows for s in ("train", "validation", "test")] == [1680, 210, 210]
    assert all(
        info["derived_from_train"] is None and info["dropped_images"] == 0 for info in corpus_info(corpus).values()
    )
    view = evaluation_view(corpus["test"])
    assert view.num_captions == 1050
    assert view.caption_image_ids.tolist()[:10] == [0] * 5 + [1] * 5
    first = corpus["train"][0]
    assert first["file_name"] == "images/1.jpg" and first["captions"][0] == "There is a piece of farmland ."
    assert first["image"].size == (256, 256)
    assert training_view(corpus["train"]).num_rows == 8400
    ids = [i for s in corpus.values() for i in s["image_id"]]
    assert sorted(ids) == list(range(2100))  # the JSON's imgid is kept
    print(f"UCM-Captions load_corpus: {elapsed:.2f} s")
