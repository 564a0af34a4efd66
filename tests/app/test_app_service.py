"""SearchService: loads once, searches like msa-search, and turns bad input or setup into clear AppErrors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msa_hf.app.service import EMPTY_QUERY_MESSAGE, AppError, SearchService, parse_lines
from msa_hf.retrieval import ImageIndex, build_index, encode_images, encode_texts, zero_shot_classify


@pytest.fixture
def service(tiny_model, tiny_processor, synth_index_path) -> SearchService:
    return SearchService(tiny_model, tiny_processor, synth_index_path)


def test_text_search_is_the_index_search(service, synth_index, tiny_model, tiny_processor):
    present, missing = service.search_text("  two planes parked beside a runway ", k=5)
    expected = synth_index.search_text("two planes parked beside a runway", tiny_model, tiny_processor, k=5)[0]
    assert missing == []
    assert [(h.rank, h.relpath, h.row) for h in present] == [(h.rank, h.relpath, h.row) for h in expected]
    np.testing.assert_allclose([h.score for h in present], [h.score for h in expected], atol=1e-6)
    assert all(Path(h.path).is_file() for h in present)
    assert service.last_search_ms is not None and service.last_search_ms > 0


@pytest.mark.parametrize("query", ["", "   \n ", None])
def test_empty_query_is_refused_with_the_message(service, query):
    with pytest.raises(AppError) as info:
        service.search_text(query, k=5)
    assert str(info.value) == EMPTY_QUERY_MESSAGE
    assert service.last_search_ms is None


@pytest.mark.parametrize("k", [0, 101, "many", None])
def test_bad_k_is_refused(service, k):
    with pytest.raises(AppError, match="number of results"):
        service.search_text("planes", k=k)


def test_status_describes_model_index_and_freshness(service, synth_archive, tiny_model_dir):
    status = service.status()
    assert status["num_images"] == 12 and status["embedding_dim"] == service.index.embeddings.shape[1]
    assert status["stale"] is False and status["image_root"] == str(synth_archive.resolve())
    assert status["index_error"] is None and status["mismatch_error"] is None and status["model_error"] is None
    assert status["last_search_ms"] is None


def test_archive_image_query_leaves_itself_out(service, synth_index):
    row = 3
    result = service.search_image(archive_file=synth_index.files[row], k=4)
    assert len(result.hits) == 4 and row not in [h.row for h in result.hits]
    assert [h.rank for h in result.hits] == [1, 2, 3, 4]
    expected = [h for h in synth_index.search(synth_index.embeddings[row], k=5)[0] if h.row != row][:4]
    assert [h.row for h in result.hits] == [h.row for h in expected]
    assert result.query_image.size == (96, 96)


def test_uploaded_image_finds_itself_first(service, synth_archive, synth_index):
    result = service.search_image(upload=str(synth_archive / synth_index.files[5]), k=3)
    assert result.hits[0].relpath == synth_index.files[5]
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_non_image_upload_is_refused_by_name(service, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a picture")
    with pytest.raises(
        AppError, match=r"notes\.png is not an image that can be read.*Upload a PNG, JPEG or TIFF"
    ) as info:
        service.search_image(upload=str(fake))
    assert str(tmp_path) not in str(info.value)  # the server's upload folder is not the user's business


def test_unknown_archive_file_and_no_image(service):
    with pytest.raises(AppError, match=r"nowhere\.png is not in the index \(12 images"):
        service.search_image(archive_file="nowhere.png")
    with pytest.raises(AppError, match="Upload an image or pick one"):
        service.search_image()


def test_candidate_captions_ranked_by_cosine(service, synth_archive, synth_index, tiny_model, tiny_processor):
    captions = ["two planes are parked beside the runway", "", "a river crosses farmland", "many cars in a lot"]
    path = synth_archive / synth_index.files[0]
    result = service.search_image(upload=str(path), k=2, captions=captions)
    kept = [c for c in captions if c]
    image_emb = encode_images(tiny_model, tiny_processor, [path], progress=False)
    scores = (encode_texts(tiny_model, tiny_processor, kept, progress=False) @ image_emb.t()).squeeze(1)
    assert [c.caption for c in result.captions] == [kept[i] for i in torch.argsort(scores, descending=True)]
    assert [c.rank for c in result.captions] == [1, 2, 3]
    np.testing.assert_allclose([c.score for c in result.captions], sorted(scores.tolist(), reverse=True), atol=1e-6)


def test_classify_is_msa_classify(service, synth_archive, synth_index, tiny_model, tiny_processor):
    labels = ["airport", "farmland", "residential"]
    _, probs = service.classify(None, synth_index.files[2], labels, "a satellite photo of {}")
    expected = zero_shot_classify(
        [Image.open(synth_archive / synth_index.files[2])],
        labels,
        tiny_model,
        tiny_processor,
        templates="a satellite photo of {}",
        progress=False,
    )
    assert set(probs) == set(labels) and list(probs.values()) == sorted(probs.values(), reverse=True)
    for label, p in zip(expected.labels, expected.probs[0]):
        assert probs[label] == pytest.approx(float(p), abs=1e-6)
    assert sum(probs.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("labels", "template", "match"),
    [(["airport"], "", "at least two labels"), (["airport", "farmland"], "an image", "exactly one '{}'")],
)
def test_classify_bad_labels_or_template(service, synth_index, labels, template, match):
    with pytest.raises(AppError, match=match):
        service.classify(None, synth_index.files[0], labels, template)


def test_missing_index_is_a_message_and_classify_still_works(tiny_model, tiny_processor, tmp_path, synth_archive):
    service = SearchService(tiny_model, tiny_processor, tmp_path / "not-built.idx")
    status = service.status()
    assert status["num_images"] is None
    assert "does not exist" in status["index_error"] and "msa-index build" in status["index_error"]
    with pytest.raises(AppError, match="does not exist"):
        service.search_text("planes", k=3)
    _, probs = service.classify(str(next(synth_archive.glob("*.png"))), None, ["airport", "farmland"])
    assert len(probs) == 2


def test_interrupted_index_is_a_message(tiny_model, tiny_processor, tmp_path):
    (tmp_path / "half.idx").mkdir()
    service = SearchService(tiny_model, tiny_processor, tmp_path / "half.idx")
    assert "not an MSA image index" in service.status()["index_error"]


def test_damaged_index_is_a_message(tiny_model, tiny_processor, archive_copy):
    _, index = archive_copy
    manifest = index / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"files"', '"fills"'))
    service = SearchService(tiny_model, tiny_processor, index)
    assert "is damaged" in service.status()["index_error"] and "--overwrite" in service.status()["index_error"]


def test_reload_picks_up_an_index_built_later(tiny_model, tiny_processor, tmp_path, synth_archive):
    service = SearchService(tiny_model, tiny_processor, tmp_path / "later.idx")
    assert service.index is None
    build_index(synth_archive, tiny_model, tiny_processor, tmp_path / "later.idx", progress=False)
    service.reload_index()
    assert service.status()["num_images"] == 12 and service.status()["index_error"] is None
    assert len(service.search_text("planes", k=3)[0]) == 3


def test_stale_index_is_reported_and_deleted_files_are_set_apart(tiny_model, tiny_processor, archive_copy):
    images, index = archive_copy
    gone = sorted(images.glob("*.png"))[0]
    gone.unlink()
    shutil.copy(sorted(images.glob("*.png"))[0], images / "new.png")
    service = SearchService(tiny_model, tiny_processor, index)
    status = service.status()
    assert status["stale"] is True and status["stale_counts"] == {"added": 1, "removed": 1, "modified": 0}
    present, missing = service.search_text("planes", k=12)
    assert [h.relpath for h in missing] == [gone.name] and len(present) == 11


def test_mismatched_model_is_refused_with_the_fix(mismatched_model_dir, synth_index_path, tmp_path):
    service = SearchService.open(mismatched_model_dir, synth_index_path)
    assert service.model is not None and "was built with model" in service.status()["mismatch_error"]
    with pytest.raises(AppError, match="rebuild"):
        service.search_text("planes", k=3)
    image = tmp_path / "q.png"
    Image.new("RGB", (64, 64), (90, 120, 60)).save(image)
    assert len(service.classify(str(image), None, ["airport", "farmland"])[1]) == 2  # needs no index


def test_model_that_cannot_load_is_a_message(tmp_path, synth_index_path):
    (tmp_path / "empty-model").mkdir()
    service = SearchService.open(tmp_path / "empty-model", synth_index_path)
    assert service.model is None and "has no config.json" in service.status()["model_error"]
    with pytest.raises(AppError, match="has no config.json"):
        service.search_text("planes", k=3)
    with pytest.raises(AppError, match="has no config.json"):
        service.classify(None, None, ["a", "b"])


def test_moved_archive_needs_images_override(tiny_model, tiny_processor, archive_copy, tmp_path):
    images, index = archive_copy
    moved = tmp_path / "moved"
    images.rename(moved)
    lost = SearchService(tiny_model, tiny_processor, index)
    assert "--images" in lost.status()["stale_error"]
    found = SearchService(tiny_model, tiny_processor, index, images=moved)
    assert found.status()["stale"] is False
    present, missing = found.search_text("planes", k=3)
    assert missing == [] and all(Path(h.path).parent == moved for h in present)


def test_unknown_backend_is_refused(tiny_model, tiny_processor, synth_index_path):
    with pytest.raises(ValueError, match="backend"):
        SearchService(tiny_model, tiny_processor, synth_index_path, backend="annoy")


def test_faiss_backend_gives_the_same_hits(tiny_model, tiny_processor, synth_index_path):
    pytest.importorskip("faiss", reason="the faiss backend needs faiss-cpu (extra `index`)")
    torch_hits = SearchService(tiny_model, tiny_processor, synth_index_path).search_text("ships in a harbour", 6)[0]
    faiss_hits = SearchService(tiny_model, tiny_processor, synth_index_path, backend="faiss").search_text(
        "ships in a harbour", 6
    )[0]
    assert [h.row for h in faiss_hits] == [h.row for h in torch_hits]


def test_parse_lines():
    assert parse_lines("a\n\n b \n") == ["a", "b"]
    assert parse_lines(None) == []
    assert parse_lines("x, y\nz", commas=True) == ["x", "y", "z"]


def test_index_is_loaded_once(service, monkeypatch):
    def no_reload(*args, **kwargs):
        raise AssertionError("the index was loaded again for a query")

    monkeypatch.setattr(ImageIndex, "load", no_reload)
    service.search_text("planes", k=2)
    service.search_image(archive_file=service.archive_files[0], k=2)


def test_approximate_index_is_searched_with_the_settings_given(tiny_model, tiny_processor, synth_index_path, tmp_path):
    pytest.importorskip("faiss", reason="approximate search needs faiss-cpu (extra `index`)")
    from msa_hf.retrieval.index_ann import AnnSettings
    from msa_hf.retrieval.index_build import rebuild_ann

    index = tmp_path / "archive.idx"
    shutil.copytree(synth_index_path, index)
    rebuild_ann(index, AnnSettings("IVF2,Flat", nprobe=2))
    exact = SearchService(tiny_model, tiny_processor, index, backend="torch").search_text("ships", 12)[0]
    every_list = SearchService(tiny_model, tiny_processor, index)
    assert every_list.status()["backend"] == "ann"
    assert [h.row for h in every_list.search_text("ships", 12)[0]] == [h.row for h in exact]
    one_list = SearchService(tiny_model, tiny_processor, index, nprobe=1).search_text("ships", 12)[0]
    assert 0 < len(one_list) < 12 and {h.row for h in one_list} < {h.row for h in exact}
    wrong = SearchService(tiny_model, tiny_processor, index, ef_search=8)
    assert "--ef-search 8 does not apply to index factory 'IVF2,Flat'" in wrong.status()["index_error"]
    with pytest.raises(AppError, match="--ef-search 8 does not apply"):
        wrong.search_text("ships", 3)
