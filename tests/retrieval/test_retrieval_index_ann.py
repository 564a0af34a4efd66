"""Approximate search (``--index-factory``): seeded builds, measured recall, search settings,
building from the stored embeddings, and the CLI options of msa-index / msa-search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import msa_hf.retrieval.index_build as index_build_mod
from msa_hf.cli_utils import EXIT_OK, EXIT_USAGE
from msa_hf.retrieval import ImageIndex, build_index
from msa_hf.retrieval.cli import index_main, search_main
from msa_hf.retrieval.index_ann import AnnSettings, build_ann, create_ann, exact_search, search_params
from msa_hf.retrieval.index_build import rebuild_ann

faiss = pytest.importorskip("faiss", reason="approximate search needs faiss-cpu (extra `index`)")


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: neighbours that mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(main, argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_exact_search_in_chunks_matches_a_full_sort():
    x = clustered(1000)
    q, own = x[:7], np.arange(7)
    scores, rows = exact_search(torch.from_numpy(x), q, 10, exclude=own, chunk=97)
    full = q @ x.T
    full[np.arange(7), own] = -np.inf
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_exact_search_keeps_the_lowest_rows_tied_at_the_cut(chunk):
    rng = np.random.default_rng(0)
    distinct = rng.integers(-3, 4, (4, 8)).astype(np.float32)  # small integers: every product is exact
    x = distinct[rng.integers(0, 4, 40)]  # 40 rows, 4 distinct: every score is tied many times over
    q = rng.integers(-3, 4, (5, 8)).astype(np.float32)
    for k in (1, 6, 13, 40):
        _, rows = exact_search(x, q, k, chunk=chunk)
        expected = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(rows, expected)


def test_ivf_recall_is_measured_against_exact_search():
    x = clustered(2000)
    full = build_ann(x, AnnSettings("IVF16,Flat", nprobe=16, recall_queries=100))
    assert full.report["recall_at_10"] == 1.0  # every list probed: IVF-Flat is exact
    assert full.report["measured_queries"] == 100 and full.report["trained_on"] == 1900
    one = build_ann(x, AnnSettings("IVF16,Flat", nprobe=1, recall_queries=100))
    assert 0.5 < one.report["recall_at_10"] < 0.99  # one list of 16 misses some neighbours
    assert full.index.ntotal == 2000


def test_build_is_seeded():
    x = clustered(1500)

    def serialized(seed: int) -> bytes:
        return faiss.serialize_index(build_ann(x, AnnSettings("IVF8,PQ4", seed=seed, train_size=600)).index).tobytes()

    assert serialized(3) == serialized(3)
    assert serialized(3) != serialized(4)


def test_search_parameters_are_checked():
    assert search_params(create_ann("IVF8,PQ4", 32)) == {"nprobe"}
    assert search_params(create_ann("HNSW8", 32)) == {"efSearch"}
    assert search_params(create_ann("IVF8_HNSW4,Flat", 32)) == {"nprobe", "efSearch"}
    x = clustered(500)
    with pytest.raises(
        ValueError, match=r"--nprobe 4 does not apply to index factory 'HNSW8' \(it takes --ef-search\)"
    ):
        build_ann(x, AnnSettings("HNSW8", nprobe=4))
    with pytest.raises(ValueError, match=r"--index-factory 'IVFx,PQ4' is not a FAISS index_factory string"):
        build_ann(x, AnnSettings("IVFx,PQ4"))
    with pytest.raises(
        ValueError,
        match=r"'IVF1024,Flat' cannot be trained on 450 embeddings .*fewer IVF lists \(at most N/39: 'IVF8,...'\)",
    ):
        build_ann(x, AnnSettings("IVF1024,Flat"))


@pytest.fixture
def ann_index(image_folder, tiny_model, tiny_processor, tmp_path):
    with pytest.warns(UserWarning, match="Skipped 2 files"):
        return build_index(
            image_folder,
            tiny_model,
            tiny_processor,
            tmp_path / "idx",
            batch_size=4,
            progress=False,
            ann=AnnSettings("IVF2,Flat", nprobe=2),
        )


def test_index_with_ann_searches_it_and_agrees_with_exact_when_every_list_is_probed(ann_index):
    ann = ann_index.ann
    assert ann["factory"] == "IVF2,Flat" and ann["nprobe"] == 2 and ann["recall_at_10"] == 1.0
    assert (ann_index.path / "ann.faiss").stat().st_size == pytest.approx(ann["bytes_per_image"] * 6, abs=0.1)
    loaded = ImageIndex.load(ann_index.path)
    query = loaded.embeddings[:3] + 0.01
    exact = loaded.search(query, k=4, backend="torch", check_files=False)
    approx = loaded.search(query, k=4, check_files=False)  # the default is the approximate index
    assert [[h.row for h in hits] for hits in approx] == [[h.row for h in hits] for hits in exact]
    assert loaded.search_settings() == "ann"
    with pytest.raises(ValueError, match="--ef-search 8 does not apply to index factory 'IVF2,Flat'"):
        loaded.search(query, ef_search=8)
    with pytest.raises(ValueError, match="--nprobe applies to approximate search, but --backend torch is exact"):
        loaded.search(query, backend="torch", nprobe=1)


def test_ann_is_rebuilt_from_stored_embeddings_without_encoding(
    ann_index, image_folder, tiny_model, tiny_processor, monkeypatch
):
    def no_encoding(*args, **kwargs):
        raise AssertionError("an image was encoded again")

    monkeypatch.setattr(index_build_mod, "encode_chunks", no_encoding)
    embeddings_before = (ann_index.path / "embeddings.safetensors").read_bytes()
    kept = build_index(image_folder, tiny_model, tiny_processor, ann_index.path, progress=False)  # up to date
    assert kept.ann == ann_index.ann  # no --index-factory: the index keeps its approximate index
    hnsw = rebuild_ann(ann_index.path, AnnSettings("HNSW4", ef_search=10))
    assert hnsw.ann["factory"] == "HNSW4" and hnsw.ann["ef_search"] == 10 and hnsw.ann["nprobe"] is None
    assert ImageIndex.load(ann_index.path).ann == hnsw.ann
    flat = rebuild_ann(ann_index.path, AnnSettings("Flat"))
    assert flat.ann is None and not (ann_index.path / "ann.faiss").exists()
    assert ImageIndex.load(ann_index.path).search_settings() == "torch"
    assert (ann_index.path / "embeddings.safetensors").read_bytes() == embeddings_before


def test_damaged_ann_file_is_reported(ann_index):
    (ann_index.path / "ann.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match=r"ann.faiss or it does not match the manifest; rebuild it: `msa-index ann"):
        ImageIndex.load(ann_index.path).search(ann_index.embeddings[:1])


def test_cli_build_reports_recall_and_search_takes_nprobe(image_folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    build = ["build", image_folder, "--model", tiny_model_dir, "--out", out, "--no-progress"]
    rc, stdout, err = run(index_main, [*build, "--index-factory", "IVF2,Flat", "--nprobe", 2], capsys)
    assert rc == EXIT_OK, err
    assert "search: IVF2,Flat (nprobe 2), recall@10 1.000 against exact search on 1 held-out images" in stdout
    assert "bytes per image (+" in stdout
    rc, stdout, err = run(index_main, ["info", out, "--json"], capsys)
    assert json.loads(stdout)["ann"]["factory"] == "IVF2,Flat"

    rc, a, err = run(search_main, [out, "a harbor with boats", "-k", 6, "--json", "--nprobe", 1], capsys)
    assert rc == EXIT_OK, err
    rc, b, err = run(search_main, [out, "a harbor with boats", "-k", 6, "--json", "--backend", "torch"], capsys)
    assert rc == EXIT_OK, err
    approx, exact = ([h["row"] for h in json.loads(x)["results"]] for x in (a, b))
    assert set(approx) < set(exact)  # one of two lists probed: a subset of the exact top 6

    rc, _, err = run(search_main, [out, "a plane", "--ef-search", 8], capsys)
    assert rc == EXIT_USAGE
    assert err.strip() == (
        "msa-search: error: --ef-search 8 does not apply to index factory 'IVF2,Flat' (it takes --nprobe); leave it out."
    )

    rc, stdout, err = run(index_main, ["ann", out, "--index-factory", "Flat"], capsys)
    assert rc == EXIT_OK and "search: exact (Flat)" in stdout and "nothing re-encoded" in stdout
    rc, _, err = run(search_main, [out, "a plane", "--nprobe", 2], capsys)
    assert rc == EXIT_USAGE and "--nprobe applies to approximate search, but index" in err
    assert "has exact search only; leave it out" in err
    rc, _, err = run(index_main, ["ann", out, "--index-factory", "IVF64,Flat"], capsys)
    assert rc == EXIT_USAGE and "cannot be trained on 5 embeddings" in err
    rc, _, err = run(index_main, ["ann", tmp_path / "nothing", "--index-factory", "HNSW8"], capsys)
    assert rc == EXIT_USAGE and "does not exist" in err


def test_ann_with_too_few_images_leaves_the_exact_index(image_folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    build = ["build", image_folder, "--model", tiny_model_dir, "--out", out, "--no-progress"]
    rc, _, err = run(index_main, [*build, "--index-factory", "IVF64,PQ4"], capsys)
    assert rc == EXIT_USAGE
    assert "msa-index: error: --index-factory 'IVF64,PQ4' cannot be trained on 5 embeddings" in err
    assert ImageIndex.load(Path(out)).ann is None  # the embeddings were committed; search stays exact
