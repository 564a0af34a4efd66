"""Index build/search round trip, resumption, incremental updates, FAISS agreement, bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import msa_hf.retrieval.encoding as encoding_mod
from msa_hf.retrieval import (
    ImageIndex,
    IncompleteIndexError,
    IndexBuildError,
    IndexMismatchError,
    build_index,
    encode_images,
    encode_texts,
    model_fingerprint,
    search_index,
)


@pytest.fixture
def built(image_folder, tiny_model, tiny_processor, tmp_path):
    with pytest.warns(UserWarning, match="Skipped 2 files"):
        return build_index(
            image_folder, tiny_model, tiny_processor, tmp_path / "idx", batch_size=4, chunk_size=4, progress=False
        )


def test_build_lists_files_and_skips(built, image_folder):
    assert built.files == ["a.png", "b.jpg", "c.png", "tiles/d.png", "tiles/e.jpg", "tiles/f.tif"]
    reasons = {s.path: s.reason for s in built.skipped}
    assert set(reasons) == {"README.txt", "broken.jpg"}
    assert "not an image file" in reasons["README.txt"]
    assert "cannot decode image" in reasons["broken.jpg"]
    m = built.manifest
    assert m["embedding_dim"] == built.embeddings.shape[1] and m["normalized"] is True
    assert m["num_images"] == 6 and m["root"] == str(image_folder.resolve())
    assert len(m["model"]["weights_sha256"]) == 64
    torch.testing.assert_close(built.embeddings.norm(dim=1), torch.ones(6))
    assert not (built.path / ".partial").exists()


def test_round_trip_search(built, image_folder, tiny_model, tiny_processor):
    loaded = ImageIndex.load(built.path)
    torch.testing.assert_close(loaded.embeddings, built.embeddings)
    assert loaded.files == built.files
    # The stored embeddings are the model's normalised image embeddings.
    direct = encode_images(tiny_model, tiny_processor, [image_folder / f for f in loaded.files], progress=False)
    torch.testing.assert_close(loaded.embeddings, direct, atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="broken.jpg"):  # strict encoding names the bad file
        encode_images(tiny_model, tiny_processor, [image_folder / "broken.jpg"], progress=False)
    # Every indexed image finds itself first.
    results = loaded.search_images([image_folder / rel for rel in loaded.files], tiny_model, tiny_processor, k=1)
    for row, (rel, hits) in enumerate(zip(loaded.files, results)):
        assert hits[0].row == row and hits[0].relpath == rel and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # Text search returns cosine scores sorted descending, equal to a direct computation.
    query = "two planes parked near a runway"
    hits = loaded.search_text(query, tiny_model, tiny_processor, k=4)[0]
    q = encode_texts(tiny_model, tiny_processor, [query], progress=False)[0]
    expected = loaded.embeddings @ q
    order = torch.sort(expected, descending=True, stable=True).indices[:4].tolist()
    assert [h.row for h in hits] == order
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    np.testing.assert_allclose([h.score for h in hits], expected[order].numpy(), atol=1e-5)
    assert Path(hits[0].path) == image_folder.resolve() / hits[0].relpath
    # k larger than the index is clipped.
    assert len(loaded.search(q, k=50)[0]) == 6


def test_faiss_agrees_with_torch(built):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(5, built.embeddings.shape[1], generator=g)
    a = built.search(queries, k=6, backend="torch")
    b = built.search(queries, k=6, backend="faiss")
    for ha, hb in zip(a, b):
        assert [h.row for h in ha] == [h.row for h in hb]
        np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5)


def test_ties_resolved_by_row_order(make_images, tmp_path, tiny_model, tiny_processor):
    folder = tmp_path / "dupes"
    (p,) = make_images(folder, ["x.png"])
    for name in ("w.png", "y.png", "z.png"):
        shutil.copy(p, folder / name)
    idx = build_index(folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
    emb = idx.embeddings[0]
    hits = idx.search(emb, k=3)[0]
    assert [h.relpath for h in hits] == ["w.png", "x.png", "y.png"]  # all tie: path order


def test_interrupted_build_resumes(image_folder, tiny_model, tiny_processor, tmp_path, monkeypatch):
    real = encoding_mod.image_features
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user hits Ctrl-C during the third chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(encoding_mod, "image_features", flaky)
    out = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(image_folder, tiny_model, tiny_processor, out, batch_size=2, chunk_size=2, progress=False)
    chunks = sorted((out / ".partial").glob("chunk_*.safetensors"))
    # 7 files with image extensions in chunks of 2: [a, b] [broken, c] [d, e] [f]; the encode of
    # chunk 1 holds c only (broken is skipped), so the third encode call is chunk 2's.
    assert [c.name for c in chunks] == ["chunk_000000.safetensors", "chunk_000001.safetensors"]
    with pytest.raises(IncompleteIndexError, match="interrupted.*Rerun the same"):
        ImageIndex.load(out)

    calls["n"] = 0
    monkeypatch.setattr(
        encoding_mod, "image_features", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), real(*a, **k))[1]
    )
    with pytest.warns(UserWarning, match="Skipped 2 files"):
        resumed = build_index(image_folder, tiny_model, tiny_processor, out, batch_size=2, chunk_size=2, progress=False)
    assert calls["n"] == 2  # only chunks 2 and 3 are encoded; 0 and 1 come from disk
    with pytest.warns(UserWarning):
        fresh = build_index(
            image_folder, tiny_model, tiny_processor, tmp_path / "fresh", batch_size=2, chunk_size=2, progress=False
        )
    assert resumed.files == fresh.files
    torch.testing.assert_close(resumed.embeddings, fresh.embeddings, atol=1e-6, rtol=1e-6)


def test_incremental_update_and_stale_report(make_images, built, image_folder, tiny_model, tiny_processor, monkeypatch):
    assert not built.stale_files().is_stale
    make_images(image_folder, ["tiles/g.png"], seed=99)
    (image_folder / "a.png").unlink()
    report = built.stale_files()
    assert report.added == ["tiles/g.png"] and report.removed == ["a.png"] and report.is_stale

    with pytest.warns(UserWarning):
        updated = build_index(
            image_folder, tiny_model, tiny_processor, built.path, batch_size=4, chunk_size=4, progress=False
        )
    assert "tiles/g.png" in updated.files and "a.png" not in updated.files
    assert updated.manifest["reused"] == 5
    # encoded: g.png only; the corrupt file, unchanged since it was skipped, is not retried
    assert updated.manifest["encoded"] == 1
    assert "broken.jpg" in {s.path for s in updated.skipped}
    row_old = built.files.index("c.png")
    torch.testing.assert_close(updated.embeddings[updated.files.index("c.png")], built.embeddings[row_old])
    assert not updated.stale_files().is_stale


def test_other_model_is_rejected(built, image_folder, tiny_processor, other_model_dir, tiny_model):
    from msa_hf import MSAModel

    other = MSAModel.from_pretrained(other_model_dir).eval()
    with pytest.raises(IndexMismatchError, match="was built with model .* but the model given is"):
        built.search_text("a plane", other, tiny_processor)
    with pytest.raises(IndexMismatchError, match="Pass --overwrite"):
        build_index(image_folder, other, tiny_processor, built.path, progress=False)
    # Same weights (even loaded from disk, from another path) are accepted.
    assert model_fingerprint(tiny_model)["weights_sha256"] == built.model_identity["weights_sha256"]
    with pytest.warns(UserWarning):
        replaced = build_index(image_folder, other, tiny_processor, built.path, overwrite=True, progress=False)
    assert replaced.model_identity["weights_sha256"] == model_fingerprint(other)["weights_sha256"]
    with pytest.raises(IndexMismatchError, match="dimension"):
        replaced.search(torch.ones(3, 7))


def test_search_index_function_loads_model_from_manifest(tiny_model_dir, image_folder, tmp_path):
    from msa_hf import create_model_and_processor

    model, processor, _ = create_model_and_processor(tiny_model_dir)
    with pytest.warns(UserWarning):
        build_index(image_folder, model, processor, tmp_path / "idx", progress=False)
    hits = search_index(tmp_path / "idx", text="a plane near a runway", k=3)
    assert len(hits) == 1 and len(hits[0]) == 3
    hits = search_index(tmp_path / "idx", image=[image_folder / "c.png"], k=2, model=str(tiny_model_dir))
    assert hits[0][0].relpath == "c.png"
    with pytest.raises(ValueError, match="exactly one of `text` and `image`"):
        search_index(tmp_path / "idx", k=3)


def test_in_memory_model_index_needs_explicit_model(built):
    with pytest.raises(ValueError, match="in-memory model"):
        search_index(built, text="a plane")


def test_bad_inputs(make_images, tmp_path, tiny_model, tiny_processor, built):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IndexBuildError, match="No image files found in"):
        build_index(empty, tiny_model, tiny_processor, tmp_path / "i1", progress=False)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(IndexBuildError, match="1 non-image file.*notes.txt"):
        build_index(empty, tiny_model, tiny_processor, tmp_path / "i1", progress=False)
    (empty / "bad.png").write_bytes(b"garbage")
    with pytest.raises(IndexBuildError, match="None of the 1 image files .* could be embedded"):
        build_index(empty, tiny_model, tiny_processor, tmp_path / "i1", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_index(tmp_path / "nope", tiny_model, tiny_processor, tmp_path / "i2", progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    make_images(tmp_path / "one", ["x.png"])
    with pytest.raises(IndexBuildError, match="is not an MSA index"):
        build_index(tmp_path / "one", tiny_model, tiny_processor, occupied, progress=False)
    with pytest.raises(IndexBuildError, match="already holds an index of"):
        build_index(tmp_path / "one", tiny_model, tiny_processor, built.path, progress=False)
    with pytest.raises(IncompleteIndexError, match="not an MSA image index"):
        ImageIndex.load(occupied)
    with pytest.raises(FileNotFoundError, match="msa-index build"):
        ImageIndex.load(tmp_path / "missing")


def test_corrupted_index_files_are_detected(built):
    emb = built.path / "embeddings.safetensors"
    emb.write_bytes(emb.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(IncompleteIndexError, match="checksum differs"):
        ImageIndex.load(built.path)
    (built.path / "manifest.json").write_text("{not json")
    with pytest.raises(IncompleteIndexError, match="not valid JSON"):
        ImageIndex.load(built.path)
    (built.path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IncompleteIndexError, match="not an MSA image index manifest"):
        ImageIndex.load(built.path)


# ----------------------------------------------------------------------------- non-finite embeddings


def _nan_for_flat_images(real):
    """A stand-in for the model call that gives NaN for constant images (a nodata tile)."""

    def fake(model, pixel_values):
        out = real(model, pixel_values).clone()
        flat = pixel_values.flatten(2).std(-1).amax(-1) == 0
        out[flat] = float("nan")
        return out

    return fake


def test_non_finite_embeddings_are_skipped_and_backends_agree(
    image_folder, tiny_model, tiny_processor, tmp_path, monkeypatch
):
    from PIL import Image

    Image.new("RGB", (48, 40)).save(image_folder / "nodata.png")
    monkeypatch.setattr(encoding_mod, "image_features", _nan_for_flat_images(encoding_mod.image_features))
    with pytest.warns(UserWarning, match="Skipped 3 files"):
        index = build_index(image_folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
    assert "nodata.png" not in index.files and len(index) == 6
    assert {s.path: s.reason for s in index.skipped}["nodata.png"].startswith("non-finite embedding")
    assert torch.isfinite(ImageIndex.load(index.path).embeddings).all()
    pytest.importorskip("faiss")
    queries = torch.randn(4, index.embeddings.shape[1], generator=torch.Generator().manual_seed(0))
    for a, b in zip(index.search(queries, k=len(index)), index.search(queries, k=len(index), backend="faiss")):
        assert len(a) == len(b) == len(index)
        assert [h.row for h in a] == [h.row for h in b]


def test_nan_nodata_geotiff_never_reaches_the_index(image_folder, tiny_model, tiny_processor, tmp_path):
    from PIL import Image

    band = np.random.default_rng(0).uniform(100, 900, (40, 48)).astype(np.float32)
    band[:10] = np.nan  # nodata rows, as GeoTIFFs mark them
    Image.fromarray(band, mode="F").save(image_folder / "nodata.tif")
    with pytest.warns(UserWarning):
        index = build_index(image_folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
    # Whatever the processor's nodata rule, the index holds only finite rows.
    assert torch.isfinite(index.embeddings).all()
    assert "nodata.tif" in index.files or "nodata.tif" in {s.path for s in index.skipped}


def test_non_finite_query_and_legacy_index_are_refused(built):
    with pytest.raises(ValueError, match="not finite"):
        built.search(torch.full((built.embeddings.shape[1],), float("nan")))
    emb = built.embeddings.clone()
    emb[2] = float("nan")
    manifest = json.loads((built.path / "manifest.json").read_text())
    from safetensors.torch import save_file

    from msa_hf.retrieval.index import sha256_file

    save_file({"embeddings": emb}, str(built.path / "embeddings.safetensors"))
    manifest["embeddings_sha256"] = sha256_file(built.path / "embeddings.safetensors")
    (built.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompleteIndexError, match="non-finite embeddings for 1 file.*c.png.*--overwrite"):
        ImageIndex.load(built.path)


# ----------------------------------------------------------------------------- memory-mapped embeddings

needs_proc = pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads Linux's /proc/self/smaps")


def _mapping_of(tensor: torch.Tensor) -> dict[str, str]:
    """The /proc/self/smaps entry of the mapping that holds ``tensor``'s data: its permissions,
    file and resident kB (``Rss``: the pages this process has touched)."""
    address, entry = tensor.data_ptr(), None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line: range, perms, offset, dev, inode[, path]
            low, high = (int(a, 16) for a in fields[0].split("-"))
            entry = (
                {"perms": fields[1], "path": fields[5] if len(fields) > 5 else ""} if low <= address < high else None
            )
        elif entry is not None and fields[0] == "Rss:":
            entry["rss_kib"] = fields[1]
            return entry
    raise AssertionError("the tensor's data is in no mapping")


def _rewrite_embeddings(index: ImageIndex, data: bytes) -> Path:
    """Replace an index's embeddings file with ``data`` and record its checksum in the
    manifest, so that what loading reports is about the contents, not the checksum."""
    from msa_hf.retrieval.index import sha256_file

    path = index.path / "embeddings.safetensors"
    path.write_bytes(data)
    manifest = json.loads((index.path / "manifest.json").read_text())
    manifest["embeddings_sha256"] = sha256_file(path)
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    return path


@needs_proc
def test_load_maps_the_embeddings_without_reading_them(built):
    loaded = ImageIndex.load(built.path)
    mapping = _mapping_of(loaded.embeddings)
    assert mapping["path"] == str(built.path / "embeddings.safetensors")
    assert mapping["perms"].endswith("p")  # private: writes never reach the file
    assert mapping["rss_kib"] == "0"  # checked by reading the file: no row was paged into the process
    assert loaded.embeddings.dtype == torch.float32 and tuple(loaded.embeddings.shape) == (6, built.embeddings.shape[1])
    torch.testing.assert_close(loaded.embeddings, built.embeddings, rtol=0, atol=0)
    loaded.search(loaded.embeddings[0], k=2, check_files=False)  # exact search reads rows through the map
    assert int(_mapping_of(loaded.embeddings)["rss_kib"]) > 0


@needs_proc
def test_approximate_search_never_reads_the_embedding_rows(image_folder, tiny_model, tiny_processor, tmp_path):
    pytest.importorskip("faiss")
    from msa_hf.retrieval.index_ann import AnnSettings

    with pytest.warns(UserWarning, match="Skipped 2 files"):
        built = build_index(
            image_folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False, ann=AnnSettings("IVF2,Flat")
        )
    loaded = ImageIndex.load(built.path)
    # Everything msa-search and msa-app do with an index that has an approximate one.
    assert loaded.search_settings() == "ann" and len(loaded) == 6 and "6 images" in repr(loaded)
    loaded.check_model(tiny_model)
    assert not loaded.stale_files().is_stale
    hits = loaded.search_text("a plane", tiny_model, tiny_processor, k=3)[0]
    hits += loaded.search_images([image_folder / "a.png"], tiny_model, tiny_processor, k=3)[0]
    assert len(hits) == 6 and all(h.stale is None for h in hits)
    assert _mapping_of(loaded.embeddings)["rss_kib"] == "0"


def test_writing_into_loaded_embeddings_changes_this_copy_only(built):
    path = built.path / "embeddings.safetensors"
    before = path.read_bytes()
    loaded = ImageIndex.load(built.path)
    loaded.embeddings[0] = 0.0
    assert bool((loaded.embeddings[0] == 0).all())
    del loaded
    assert path.read_bytes() == before
    torch.testing.assert_close(ImageIndex.load(built.path).embeddings, built.embeddings, rtol=0, atol=0)


def test_corrupt_embeddings_header_is_named(built):
    from safetensors.torch import save

    good = (built.path / "embeddings.safetensors").read_bytes()
    d = built.embeddings.shape[1]
    cases = [
        (b"\xff" * 8 + good[8:], r"header length 18446744073709551615 does not fit the file's \d+ bytes"),
        (good[:8] + b"x" + good[9:], r"header is not JSON"),
        (save({"vectors": built.embeddings}), r"no 'embeddings' tensor, found \['vectors'\]"),
        (save({"embeddings": built.embeddings.half()}), r"dtype 'F16', expected 'F32' \(float32\)"),
        (good[:-4], rf"data_offsets \[0, {6 * d * 4}\] do not hold 6x{d} float32 values within its \d+ bytes"),
        (save({"embeddings": built.embeddings[:5]}), rf"holds \(5, {d}\) but the manifest lists 6 files of dimension"),
    ]
    for data, message in cases:
        path = _rewrite_embeddings(built, data)
        with pytest.raises(
            IncompleteIndexError,
            match=rf"^{re.escape(str(path))} (is not a valid embeddings file \()?{message}.*--overwrite",
        ):
            ImageIndex.load(built.path)


def test_non_finite_rows_are_found_in_every_block(built, monkeypatch):
    from safetensors.torch import save

    import msa_hf.retrieval.index as index_mod

    monkeypatch.setattr(index_mod, "BLOCK_ROWS", 2)  # 6 rows: blocks [0, 1], [2, 3], [4, 5]
    emb = built.embeddings.clone()
    emb[5, 0] = float("inf")
    _rewrite_embeddings(built, save({"embeddings": emb}))
    with pytest.raises(IncompleteIndexError, match=r"non-finite embeddings for 1 file\(s\) \(e.g. tiles/f.tif\)"):
        ImageIndex.load(built.path)
    emb[3, 1] = float("nan")
    _rewrite_embeddings(built, save({"embeddings": emb}))
    with pytest.raises(IncompleteIndexError, match=r"non-finite embeddings for 2 file\(s\) \(e.g. tiles/d.png\)"):
        ImageIndex.load(built.path)


@pytest.mark.parametrize("block_rows", [1, 3, 4, 16384])
def test_exact_search_in_blocks_equals_one_sort_of_all_rows(block_rows, monkeypatch, tmp_path):
    import msa_hf.retrieval.index as index_mod

    monkeypatch.setattr(index_mod, "BLOCK_ROWS", block_rows)
    # Values exact in float32, so every product is exact; rows 2-6 are equal (a tie across the
    # blocks of 3 and 4 rows), rows 9 and 10 too.
    base = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0.6, 0.8]])
    emb = base[torch.tensor([0, 1, 2, 2, 2, 2, 2, 3, 1, 0, 0, 3])]
    files = [{"path": f"{i:02d}.png"} for i in range(len(emb))]
    index = ImageIndex(tmp_path, {"files": files, "root": str(tmp_path)}, emb)
    queries = torch.cat([base, torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.8, 0.6, 0, 0]])])
    scores = torch.nn.functional.normalize(queries, dim=-1) @ emb.t()
    for k in (1, 3, 5, 12):
        expected_s, expected_rows = torch.sort(scores, dim=1, descending=True, stable=True)
        hits = index.search(queries, k=k, check_files=False)
        assert [[h.row for h in q] for q in hits] == expected_rows[:, :k].tolist()
        assert [[h.score for h in q] for q in hits] == expected_s[:, :k].tolist()
    assert [h.row for h in index.search(base[2], k=5, check_files=False)[0]] == [2, 3, 4, 5, 6]
    if index_mod.faiss_available():
        # Which of the rows tied at the k-th score FAISS returns is its own choice; with k = N
        # every tie is returned, in row order across the blocks.
        faiss_hits = index.search(queries, k=12, backend="faiss", check_files=False)
        assert [[h.row for h in q] for q in faiss_hits] == expected_rows.tolist()
        rng = np.random.default_rng(0)  # and no ties: one FAISS search over all rows, block by block
        x = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((50, 8)).astype(np.float32)), dim=-1)
        index = ImageIndex(tmp_path, {"files": [{"path": str(i)} for i in range(50)], "root": str(tmp_path)}, x)
        q = x[:7] + 0.1
        import faiss

        flat = faiss.IndexFlatIP(8)
        flat.add(x.numpy())
        want_s, want_rows = flat.search(torch.nn.functional.normalize(q, dim=-1).numpy(), 10)
        got = index.search(q, k=10, backend="faiss", check_files=False)
        assert [[h.row for h in hits] for hits in got] == want_rows.tolist()
        assert [[h.score for h in hits] for hits in got] == want_s.tolist()


# ----------------------------------------------------------------------------- changes the index must notice


def test_replaced_corrupt_file_is_noticed_and_indexed(make_images, built, image_folder, tiny_model, tiny_processor):
    assert not built.stale_files().is_stale
    make_images(image_folder, ["broken.jpg"], seed=7)  # the corrupt file is replaced by a good image
    report = built.stale_files()
    assert report.changed_skipped == ["broken.jpg"] and report.is_stale
    assert "1 previously skipped changed" in report.summary()
    with pytest.warns(UserWarning, match="Skipped 1 files"):
        updated = build_index(image_folder, tiny_model, tiny_processor, built.path, progress=False)
    assert "broken.jpg" in updated.files and updated.manifest["encoded"] == 1
    assert not updated.stale_files().is_stale


def test_modified_image_is_noticed_by_status_and_search(make_images, built, image_folder, tiny_model, tiny_processor):
    path = image_folder / "a.png"
    before = path.stat().st_mtime_ns
    make_images(image_folder, ["a.png"], seed=77)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    assert built.stale_files().modified == ["a.png"]
    hits = built.search_text("a plane", tiny_model, tiny_processor, k=len(built))[0]
    assert {h.relpath: h.stale for h in hits} == {f: ("modified" if f == "a.png" else None) for f in built.files}
    with pytest.warns(UserWarning):
        updated = build_index(image_folder, tiny_model, tiny_processor, built.path, progress=False)
    assert updated.manifest["encoded"] == 1 and not updated.stale_files().is_stale
    assert all(h.stale is None for h in updated.search_text("a plane", tiny_model, tiny_processor, k=6)[0])


def test_touched_file_is_not_a_change(built, image_folder, tiny_model, tiny_processor):
    path = image_folder / "b.jpg"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    assert not built.stale_files().is_stale  # same content hash
    with pytest.warns(UserWarning):
        updated = build_index(image_folder, tiny_model, tiny_processor, built.path, progress=False)
    assert updated.manifest["encoded"] == 0 and updated.manifest["reused"] == 6


# ----------------------------------------------------------------------------- moved archives


def test_moved_folder_is_relocated_keeping_unchanged_embeddings(
    make_images, built, image_folder, tiny_model, tiny_processor, tmp_path
):
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved, copy_function=shutil.copy)  # a plain copy: new mtimes
    shutil.rmtree(image_folder)
    with pytest.raises(FileNotFoundError, match=r"no longer exists.*msa-index build NEW_FOLDER .*--relocate"):
        built.stale_files()
    assert {h.stale for h in built.search(built.embeddings[0], k=6)[0]} == {"missing"}
    with pytest.raises(IndexBuildError, match="no longer exists.*--relocate"):
        build_index(moved, tiny_model, tiny_processor, built.path, progress=False)
    (moved / "c.png").rename(moved / "c_renamed.png")
    make_images(moved, ["tiles/d.png"], seed=123)
    with pytest.warns(UserWarning):
        relocated = build_index(moved, tiny_model, tiny_processor, built.path, relocate=True, progress=False)
    assert relocated.root == moved.resolve()
    assert relocated.manifest["reused"] == 5 and relocated.manifest["encoded"] == 1  # only d.png changed
    old_rows = dict(zip(built.files, built.embeddings))
    assert torch.equal(relocated.embeddings[relocated.files.index("c_renamed.png")], old_rows["c.png"])
    assert not relocated.stale_files().is_stale


# ----------------------------------------------------------------------------- one writer at a time


def test_second_build_into_the_same_index_is_refused(image_folder, tiny_model, tiny_processor, tmp_path):
    from msa_hf.io_utils import LockHeldError, exclusive_lock

    out = tmp_path / "idx"
    out.mkdir()
    with exclusive_lock(out / ".lock", purpose="msa-index build of elsewhere"):
        with pytest.raises(LockHeldError, match=rf"in use by pid {os.getpid()} on host .*msa-index build of elsewhere"):
            build_index(image_folder, tiny_model, tiny_processor, out, progress=False)
        assert list(out.iterdir()) == [out / ".lock"]  # nothing of the refused build
    assert not (out / ".lock").exists()


def test_build_where_nothing_decodes_leaves_nothing_behind(tmp_path, tiny_model, tiny_processor):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"garbage")
    (folder / "y.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(IndexBuildError, match="None of the 2 image files"):
        build_index(folder, tiny_model, tiny_processor, tmp_path / "new", chunk_size=1, progress=False)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(IndexBuildError):
        build_index(folder, tiny_model, tiny_processor, existing, chunk_size=1, progress=False)
    assert list(existing.iterdir()) == []
    with pytest.raises(IncompleteIndexError, match="not an MSA image index"):  # not "interrupted ... resume"
        ImageIndex.load(existing)


def test_same_size_same_mtime_rewrite_is_noticed(make_images, tmp_path, tiny_model, tiny_processor):
    """``cp -p`` / ``rsync -a`` keep size and mtime; the inode change time still moves."""
    folder = tmp_path / "tiles"
    make_images(folder, ["x.bmp", "y.bmp"], seed=3)  # BMPs of one size have one byte length
    index = build_index(folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
    path = folder / "x.bmp"
    before = path.stat()
    make_images(folder, ["x.bmp"], seed=99)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert index.stale_files().modified == ["x.bmp"]
    hits = index.search(index.embeddings, k=2)
    assert {h.relpath: h.stale for h in hits[0]} == {"x.bmp": "modified", "y.bmp": None}
    updated = build_index(folder, tiny_model, tiny_processor, index.path, progress=False)
    assert updated.manifest["encoded"] == 1 and not updated.stale_files().is_stale
    (folder / "y.bmp").chmod(0o600)  # a new ctime, the same content: not a change
    assert not updated.stale_files().is_stale
    assert build_index(folder, tiny_model, tiny_processor, index.path, progress=False).manifest["encoded"] == 0


def test_verify_hashes_files_whose_stat_is_unchanged(make_images, tmp_path, tiny_model, tiny_processor):
    folder = tmp_path / "tiles"
    make_images(folder, ["x.png", "y.png"], seed=3)
    index = build_index(folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
    manifest = json.loads((index.path / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64  # what a same-stat change the stat cannot see looks like
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    index = ImageIndex.load(index.path)
    assert not index.stale_files().is_stale
    assert index.stale_files(verify=True).modified == ["x.png"]
    rebuilt = build_index(folder, tiny_model, tiny_processor, index.path, verify=True, progress=False)
    assert rebuilt.manifest["encoded"] == 1 and not rebuilt.stale_files(verify=True).is_stale


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symbolic links as on POSIX")
def test_dangling_link_and_fifo_are_skipped_with_a_reason(make_images, tmp_path, tiny_model, tiny_processor):
    import signal

    folder = tmp_path / "tiles"
    make_images(folder, ["x.png", "y.png"], seed=3)
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    os.mkfifo(folder / "pipe.jpg")

    def hung(signum, frame):
        raise TimeoutError("reading the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with pytest.warns(UserWarning, match="Skipped 2 files"):
            index = build_index(folder, tiny_model, tiny_processor, tmp_path / "idx", progress=False)
        report = index.stale_files()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert index.files == ["x.png", "y.png"] and not report.is_stale
    reasons = {s.path: s.reason for s in index.skipped}
    assert (
        reasons["gone.png"].startswith("broken symbolic link") and str(tmp_path / "deleted.png") in reasons["gone.png"]
    )
    assert reasons["pipe.jpg"] == "not a regular file (a FIFO)"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs as on POSIX")
def test_a_fifo_that_replaced_a_file_after_the_scan_is_not_read(tmp_path):
    from msa_hf.data.images import read_regular_file

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(OSError, match="pipe.png is not a regular file \\(a FIFO\\)"):
        read_regular_file(tmp_path / "pipe.png")
    (tmp_path / "ok.png").write_bytes(b"data")
    assert read_regular_file(tmp_path / "ok.png") == b"data"
