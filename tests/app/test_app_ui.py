"""The page's handlers, called directly: results for good input, a message (never an exception) for bad."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from msa_hf.app.service import EMPTY_QUERY_MESSAGE, SearchService
from msa_hf.retrieval import build_index

pytest.importorskip("pandas", reason="the page's tables and bar chart need pandas (installed with gradio)")

from msa_hf.app.ui import SearchPage, format_status

CAPTION = re.compile(r"^#(\d+) · (-?\d\.\d{3}) · (\S+)$")


@pytest.fixture
def page(tiny_model, tiny_processor, synth_index_path) -> SearchPage:
    return SearchPage(SearchService(tiny_model, tiny_processor, synth_index_path))


def test_text_search_fills_gallery_with_rank_score_and_name(page, synth_index, tiny_model, tiny_processor):
    items, hits, message, status = page.text_search("two planes parked beside a runway", 5)
    expected = synth_index.search_text("two planes parked beside a runway", tiny_model, tiny_processor, k=5)[0]
    assert message == "" and len(items) == 5 and len(hits) == 5
    for (image, caption), hit in zip(items, expected):
        rank, score, name = CAPTION.match(caption).groups()
        assert (int(rank), name) == (hit.rank, hit.relpath) and float(score) == pytest.approx(hit.score, abs=6e-4)
        assert image.endswith(hit.relpath)  # PNG: sent to the browser as a file
    assert re.search(r"\*\*Last search\*\* \d+\.\d ms \(torch\)", status)
    assert "12 images" in status and "up to date" in status


def test_empty_query_shows_the_message(page):
    items, hits, message, _ = page.text_search("", 5)
    assert (items, hits) == ([], []) and message == f"⚠ {EMPTY_QUERY_MESSAGE}"


def test_unexpected_failure_is_one_line_and_the_page_keeps_working(page, monkeypatch, caplog):
    def boom(query, k):
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(page.service, "search_text", boom)
        items, _, message, status = page.text_search("planes", 3)
    assert items == [] and "Something went wrong (RuntimeError: disk on fire)" in message
    assert "Traceback" not in message and "Model" in status
    assert "Traceback" in caplog.text  # the server log keeps the details
    items, _, message, _ = page.text_search("planes", 3)
    assert len(items) == 3 and message == ""


def test_click_shows_image_large_with_its_path(page):
    _, hits, _, _ = page.text_search("ships in a harbour", 4)
    image, path, info = page.show_hit(hits, 2)
    assert path == hits[2]["path"] and image == path and f"Rank 3 · cosine {hits[2]['score']:.4f}" in info
    assert page.show_hit(hits, 9) == (None, "", "") and page.show_hit([], None) == (None, "", "")


def test_image_search_with_captions(page, synth_index):
    query, items, hits, table, message, _ = page.image_search(
        None, synth_index.files[1], 3, "a river crosses farmland\n\ntwo planes are parked beside the runway"
    )
    assert isinstance(query, Image.Image) and len(items) == 3 and message == ""
    assert synth_index.files[1] not in [h["relpath"] for h in hits]
    assert list(table.columns) == ["rank", "cosine", "caption"] and table["rank"].tolist() == [1, 2]
    assert table["cosine"].is_monotonic_decreasing


def test_non_image_upload_shows_the_message(page, tmp_path):
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"%PDF-1.4 not an image")
    query, items, _, table, message, _ = page.image_search(str(fake), None, 3, "")
    assert query is None and items == [] and table.empty
    assert message.startswith("⚠ The uploaded file report.pdf is not an image")


def test_classify_gives_a_bar_chart_frame(page, synth_index):
    image, frame, message, _ = page.classify(None, synth_index.files[0], "airport, farmland,\nharbor", "")
    assert isinstance(image, Image.Image) and list(frame.columns) == ["label", "probability"]
    assert sorted(frame["label"]) == ["airport", "farmland", "harbor"]
    assert frame["probability"].sum() == pytest.approx(1.0) and frame["probability"].is_monotonic_decreasing
    assert message.startswith(f"Most likely: **{frame['label'][0]}**")
    _, frame, message, _ = page.classify(None, synth_index.files[0], "airport", "")
    assert frame.empty and "at least two labels" in message


def test_tiff_archives_are_sent_as_thumbnails(tiny_model, tiny_processor, tmp_path):
    folder = tmp_path / "tiffs"
    folder.mkdir()
    Image.new("RGB", (900, 600), (30, 90, 160)).save(folder / "coast.tif")
    Image.new("RGB", (64, 64), (200, 180, 90)).save(folder / "desert.png")
    build_index(folder, tiny_model, tiny_processor, tmp_path / "t.idx", progress=False)
    page = SearchPage(SearchService(tiny_model, tiny_processor, tmp_path / "t.idx"))
    items, _, _, _ = page.text_search("sea", 2)
    shown = {caption.rsplit(" · ", 1)[1]: image for image, caption in items}
    assert isinstance(shown["coast.tif"], Image.Image) and max(shown["coast.tif"].size) == 512
    assert shown["desert.png"] == str(folder / "desert.png")


def test_deleted_result_files_are_noted(tiny_model, tiny_processor, archive_copy):
    images, index = archive_copy
    (images / "00004.png").unlink()
    page = SearchPage(SearchService(tiny_model, tiny_processor, index))
    items, hits, message, status = page.text_search("planes", 12)
    assert len(items) == 11 and "00004.png" not in [h["relpath"] for h in hits]
    assert "1 result(s) cannot be read from disk (`00004.png`)" in message
    assert "⚠ **stale**: 0 new, 1 removed, 0 modified" in status and "msa-index build" in status


def test_status_lists_problems(tiny_model, tiny_processor, tmp_path):
    page = SearchPage(SearchService(tiny_model, tiny_processor, tmp_path / "missing.idx"))
    text = page.status_markdown()
    assert "**Index**" not in text and "⚠ Index" in text and "does not exist" in text
    assert page.reload() == text
    assert format_status({**page.service.status(), "last_search_ms": 12.34}).count("12.3 ms") == 1


def test_status_paths_are_shown_from_the_working_directory(page, tmp_path, monkeypatch):
    status = page.service.status()
    root = Path(status["image_root"])
    monkeypatch.chdir(root.parent)
    text = format_status(status)
    assert f"up to date with `{root.name}`" in text and str(root) not in text
    monkeypatch.chdir(root)
    assert f"up to date with `{os.curdir}`" in format_status(status)
    far = tmp_path / "a" / "b"
    far.mkdir(parents=True)
    monkeypatch.chdir(far)
    assert os.path.relpath(root).startswith(os.path.join(os.pardir, os.pardir, os.pardir))
    assert f"up to date with `{root}`" in format_status(status)  # far away: the path as given


def test_demo_builds(page):
    gr = pytest.importorskip("gradio", reason="the page needs gradio (extra `app`)")
    from msa_hf.app.ui import build_demo

    demo = build_demo(page.service)
    assert isinstance(demo, gr.Blocks)
    ids = {c.elem_id for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    assert {"status", "text-query", "text-k", "text-search", "text-gallery", "text-message", "selected-path"} <= ids
    assert {"image-upload", "image-archive", "image-gallery", "caption-table", "classify-plot"} <= ids
