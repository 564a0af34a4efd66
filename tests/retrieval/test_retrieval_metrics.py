"""retrieval_metrics on hand-built similarity matrices, ties, ragged caption counts, bad inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from msa_hf.retrieval import (
    format_metrics_table,
    metrics_from_ranks,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_metrics.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("msa_eval_metrics_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def vsepp_ranks_5(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The docs/method.md section 7 loop for exactly 5 captions per image (continuous scores only)."""
    n = sim.shape[0]
    i2t = np.zeros(n, dtype=int)
    for i in range(n):
        inds = np.argsort(sim[i])[::-1]
        i2t[i] = min(int(np.where(inds == j)[0][0]) for j in range(5 * i, 5 * i + 5))
    t2i = np.zeros(5 * n, dtype=int)
    for j in range(5 * n):
        inds = np.argsort(sim[:, j])[::-1]
        t2i[j] = int(np.where(inds == j // 5)[0][0])
    return i2t, t2i


def test_docstring_example_by_hand():
    sim = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]])
    ranks = retrieval_ranks(sim, [0, 0, 1])
    # image 0: best own 0.9 beats caption 2 (0.8) -> 0; image 1: own 0.3 < caption 1's 0.7 -> 1
    assert ranks.i2t.tolist() == [0, 1]
    # caption 0: 0.9 vs 0.2 -> 0; caption 1: own 0.1 < 0.7 -> 1; caption 2: own 0.3 < 0.8 -> 1
    assert ranks.t2i.tolist() == [0, 1, 1]
    m = retrieval_metrics(sim, [0, 0, 1])
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0 and m["i2t_r10"] == 100.0
    assert m["t2i_r1"] == pytest.approx(100 / 3) and m["t2i_r5"] == 100.0
    assert m["mr"] == pytest.approx((50 + 100 + 100 + 100 / 3 + 100 + 100) / 6)
    assert m["i2t_medr"] == 1.0 and m["i2t_meanr"] == 1.5  # ranks 0,1: floor(0.5)+1, 0.5+1
    assert m["t2i_medr"] == 2.0 and m["t2i_meanr"] == pytest.approx(5 / 3)
    assert m["num_images"] == 2 and m["num_captions"] == 3


def test_images_with_one_and_seven_captions_and_ties():
    # caption 0 -> image 0; captions 1..7 -> image 1 (seven); caption 8 -> image 2 (one)
    ids = [0, 1, 1, 1, 1, 1, 1, 1, 2]
    sim = np.array(
        [
            [0.50, 0.60, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.20],
            [0.30, 0.20, 0.90, 0.10, 0.10, 0.10, 0.10, 0.10, 0.95],
            [0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.80],
        ]
    )
    ranks = retrieval_ranks(sim, ids)
    # i2t: img0 own 0.5 < c1 0.6 -> 1; img1 best own 0.9 < c8 0.95 -> 1; img2 own 0.8 best -> 0
    assert ranks.i2t.tolist() == [1, 1, 0]
    # t2i: c0 0; c1 (0.2 vs img0 0.6) 1; c2 0; c3..c7 all three images tie at 0.1 -> 2 (ties count
    # against the model); c8 (0.8 vs img1 0.95) 1
    assert ranks.t2i.tolist() == [0, 1, 0, 2, 2, 2, 2, 2, 1]
    m = retrieval_metrics(sim, ids)
    assert m["i2t_r1"] == pytest.approx(100 / 3)
    assert m["t2i_r1"] == pytest.approx(200 / 9)
    assert m["i2t_r5"] == m["t2i_r5"] == m["i2t_r10"] == m["t2i_r10"] == 100.0
    assert m["mr"] == pytest.approx((100 / 3 + 200 / 9 + 400) / 6)
    assert m["t2i_medr"] == 3.0 and m["t2i_meanr"] == pytest.approx(12 / 9 + 1)
    assert m["i2t_medr"] == 2.0 and m["i2t_meanr"] == pytest.approx(2 / 3 + 1)


def test_tie_rule_is_conservative():
    # image 0's two captions and image 1's caption all score 0.7 for image 0: the competitor ties,
    # so it counts as ranked ahead (rank 1); the second own caption is not a competitor.
    sim = np.array([[0.7, 0.7, 0.7], [0.1, 0.2, 0.3]])
    ranks = retrieval_ranks(sim, [0, 0, 1])
    assert ranks.i2t.tolist() == [1, 0]
    assert ranks.t2i.tolist() == [0, 0, 1]
    # A constant matrix gets no credit: every competitor ties.
    const = retrieval_ranks(np.zeros((4, 8)), np.repeat(np.arange(4), 2))
    assert const.i2t.tolist() == [6, 6, 6, 6]  # 6 other-image captions
    assert const.t2i.tolist() == [3] * 8  # 3 other images


def test_five_captions_per_image_equals_spec_loop():
    rng = np.random.default_rng(0)
    n = 40
    sim = rng.standard_normal((n, 5 * n)).astype(np.float32)
    sim[np.arange(5 * n) // 5, np.arange(5 * n)] += 1.5  # some signal so ranks vary
    i2t, t2i = vsepp_ranks_5(sim)
    ranks = retrieval_ranks(sim, np.arange(5 * n) // 5)
    np.testing.assert_array_equal(ranks.i2t, i2t)
    np.testing.assert_array_equal(ranks.t2i, t2i)
    m = retrieval_metrics(sim, np.arange(5 * n) // 5)
    for k in (1, 5, 10):
        assert m[f"i2t_r{k}"] == pytest.approx(100 * np.mean(i2t < k))
        assert m[f"t2i_r{k}"] == pytest.approx(100 * np.mean(t2i < k))


def test_caption_order_does_not_matter():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 12, size=50)
    ids[:12] = np.arange(12)  # every image has at least one caption
    sim = rng.standard_normal((12, 50))
    perm = rng.permutation(50)
    a = retrieval_ranks(sim, ids)
    b = retrieval_ranks(sim[:, perm], ids[perm])
    np.testing.assert_array_equal(a.i2t, b.i2t)
    np.testing.assert_array_equal(a.t2i[perm], b.t2i)


@pytest.mark.parametrize("block_rows", [1, 3, 7, None])
def test_blocked_equals_unblocked_with_ties(block_rows):
    rng = np.random.default_rng(2)
    sim = np.round(rng.random((23, 70)) * 4) / 4  # heavy ties
    ids = np.repeat(np.arange(23), 3)
    ids = np.concatenate([ids, [0]])  # image 0 has four captions
    full = retrieval_ranks(sim, ids, block_rows=10_000)
    blocked = retrieval_ranks(sim, ids, block_rows=block_rows)
    np.testing.assert_array_equal(full.i2t, blocked.i2t)
    np.testing.assert_array_equal(full.t2i, blocked.t2i)
    bench = load_benchmark()
    loop = bench.loop_ranks(sim, ids, tie_aware=True)
    np.testing.assert_array_equal(full.i2t, loop.i2t)
    np.testing.assert_array_equal(full.t2i, loop.t2i)


def test_numpy_torch_and_embeddings_agree():
    g = torch.Generator().manual_seed(3)
    img = torch.randn(30, 16, generator=g)
    ids = torch.arange(30).repeat_interleave(2)
    txt = img[ids] + 1.5 * torch.randn(60, 16, generator=g)
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
    ref = retrieval_metrics(sim.numpy(), ids.numpy())
    assert retrieval_metrics(sim, ids) == ref
    assert retrieval_metrics(sim.double(), ids.tolist()) == ref
    emb = retrieval_metrics_from_embeddings(img, txt, ids, block_rows=4)
    assert emb == ref
    r = retrieval_ranks_from_embeddings(img.numpy(), txt.numpy(), ids.numpy(), block_rows=7)
    assert metrics_from_ranks(r) == ref


def test_captionless_image_is_a_distractor_with_warning():
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.0]])  # image 2 has no caption but beats caption 0
    with pytest.warns(UserWarning, match="1 of 3 images have no caption"):
        m = retrieval_metrics(sim, [0, 1])
    ranks = retrieval_ranks(sim, [0, 1])
    assert ranks.i2t.tolist() == [0, 0, -1]
    assert ranks.t2i.tolist() == [1, 0]
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 50.0


def test_integer_and_half_scores():
    sim = np.array([[3, 1], [2, 5]], dtype=np.int64)
    assert retrieval_metrics(sim, [0, 1])["mr"] == 100.0
    half = torch.tensor([[0.5, 0.25], [0.25, 0.5]], dtype=torch.float16)
    assert retrieval_metrics(half, [0, 1])["mr"] == 100.0


@pytest.mark.parametrize(
    "sim, ids, exc, match",
    [
        (np.zeros(4), [0, 0, 0, 0], ValueError, "must be 2-D"),
        (np.zeros((2, 3)), [0, 1], ValueError, "has 2 entries but there are 3 captions"),
        (np.zeros((2, 3)), [0, 1, 2], ValueError, r"must lie in \[0, 1\]"),
        (np.zeros((2, 3)), [0, -1, 1], ValueError, r"must lie in \[0, 1\]"),
        (np.zeros((0, 3)), [], ValueError, "is empty"),
        (np.zeros((2, 2)), [0.5, 1], ValueError, "integer image indices"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), [0, 1], ValueError, "NaN"),
        (np.zeros((2, 2), dtype=bool), [0, 1], TypeError, "real scores"),
        ("not a matrix", [0], TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_inputs_name_the_argument(sim, ids, exc, match):
    with pytest.raises(exc, match=match):
        retrieval_metrics(sim, ids)


def test_embedding_shape_errors():
    with pytest.raises(ValueError, match="`image_embeds` has dimension 4 but `text_embeds` has 3"):
        retrieval_metrics_from_embeddings(np.ones((2, 4)), np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="`text_embeds` must be a non-empty 2-D"):
        retrieval_metrics_from_embeddings(np.ones((2, 4)), np.ones((0, 4)), [])


def test_custom_ks_and_table():
    sim = np.eye(3)
    m = retrieval_metrics(sim, [0, 1, 2], ks=(1, 2))
    assert set(k for k in m if "_r" in k and "medr" not in k) == {"i2t_r1", "i2t_r2", "t2i_r1", "t2i_r2"}
    table = format_metrics_table(retrieval_metrics(sim, [0, 1, 2]))
    assert "image->text" in table and "mR = 100.00" in table
    with pytest.raises(ValueError, match="`ks`"):
        retrieval_metrics(sim, [0, 1, 2], ks=(0,))


def test_rsicd_size_is_fast():
    import time

    rng = np.random.default_rng(0)
    sim = rng.standard_normal((1093, 5465)).astype(np.float32)
    ids = np.arange(5465) // 5
    retrieval_metrics(sim, ids)
    t0 = time.perf_counter()
    retrieval_metrics(sim, ids)
    assert time.perf_counter() - t0 < 1.0  # typically ~0.015 s on 2 cores


def test_benchmark_script_runs_and_agrees(capsys):
    bench = load_benchmark()
    assert bench.main(["--images", "60", "--repeats", "1", "--dim", "32", "--noise", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: vectorised and per-query loop metrics are identical." in out
    assert "tie-heavy check" in out


def _expected_recall_by_enumeration(similarity, ids, k):
    """Average the original code's loop (argsort, best own caption) over every order of the tied items."""
    import itertools

    num_images, num_captions = similarity.shape
    i2t, t2i = [], []
    for i in range(num_images):
        row = similarity[i]
        own = [j for j in range(num_captions) if ids[j] == i]
        best = max(row[j] for j in own)
        ahead = sum(1 for j in range(num_captions) if row[j] > best)
        tied = [j for j in range(num_captions) if row[j] == best]
        hits = [ahead + min(order.index(j) for j in own if j in order) < k for order in itertools.permutations(tied)]
        i2t.append(np.mean(hits))
    for j in range(num_captions):
        column = similarity[:, j]
        ahead = sum(1 for i in range(num_images) if column[i] > column[ids[j]])
        tied = [i for i in range(num_images) if column[i] == column[ids[j]]]
        t2i.append(np.mean([ahead + order.index(ids[j]) < k for order in itertools.permutations(tied)]))
    return 100 * np.mean(i2t), 100 * np.mean(t2i)


def test_expected_tie_rule_averages_every_order_of_the_tied_items():
    rng = np.random.default_rng(0)
    similarity = rng.integers(0, 3, size=(4, 9)).astype(np.float32) / 2  # many ties, some among own captions
    ids = [0, 0, 1, 1, 1, 2, 3, 3, 0]
    for k in (1, 2, 3):
        metrics = retrieval_metrics(similarity, ids, ks=(k,), ties="expected")
        i2t, t2i = _expected_recall_by_enumeration(similarity, ids, k)
        assert metrics[f"i2t_r{k}"] == pytest.approx(i2t) and metrics[f"t2i_r{k}"] == pytest.approx(t2i)
    strict = retrieval_metrics(similarity, ids, ks=(1,))
    assert strict["i2t_r1"] <= retrieval_metrics(similarity, ids, ks=(1,), ties="expected")["i2t_r1"]


def test_tie_rules_agree_on_continuous_scores_and_unknown_rules_are_refused():
    similarity = np.random.default_rng(1).random((5, 15))
    ids = [i // 3 for i in range(15)]
    assert retrieval_metrics(similarity, ids) == retrieval_metrics(similarity, ids, ties="expected")
    with pytest.raises(ValueError, match="`ties` must be one of"):
        retrieval_metrics(similarity, ids, ties="random")


def published_argsort_ranks(similarity: np.ndarray, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The published evaluation loop (the MSA authors' ``i2t5``/``t2i5``), for any caption layout, ties included."""
    num_images, num_captions = similarity.shape
    i2t = []
    for i in range(num_images):
        inds = np.argsort(similarity[i])[::-1]
        i2t.append(min(int(np.where(inds == j)[0][0]) for j in range(num_captions) if ids[j] == i))
    sims_t = similarity.T
    t2i = []
    for j in range(num_captions):
        inds = np.argsort(sims_t[j])[::-1]
        t2i.append(int(np.where(inds == ids[j])[0][0]))
    return np.array(i2t), np.array(t2i)


@pytest.mark.parametrize("shape", [(4, 20), (40, 200), (23, 61)])
@pytest.mark.parametrize("block_rows", [None, 3])
def test_argsort_tie_rule_equals_the_published_loop_on_tied_matrices(shape, block_rows):
    rng = np.random.default_rng(shape[0])
    num_images, num_captions = shape
    similarity = (rng.integers(0, 4, size=shape) / 4).astype(np.float32)  # mostly ties
    ids = sorted(rng.permutation(np.arange(num_captions) % num_images).tolist())
    i2t, t2i = published_argsort_ranks(similarity, ids)
    ranks = retrieval_ranks(similarity, ids, argsort=True, block_rows=block_rows)
    np.testing.assert_array_equal(ranks.i2t_argsort, i2t)
    np.testing.assert_array_equal(ranks.t2i_argsort, t2i)
    metrics = retrieval_metrics(similarity, ids, ties="argsort", block_rows=block_rows)
    for k in (1, 5, 10):
        assert metrics[f"i2t_r{k}"] == pytest.approx(100 * np.mean(i2t < k))
        assert metrics[f"t2i_r{k}"] == pytest.approx(100 * np.mean(t2i < k))
    assert metrics["i2t_meanr"] == pytest.approx(i2t.mean() + 1)
    assert metrics["t2i_medr"] == np.floor(np.median(t2i)) + 1


def test_argsort_tie_rule_differs_from_sorting_negated_scores():
    """``np.argsort(s)[::-1]`` puts the last of equal scores first; ``np.argsort(-s)`` the first."""
    similarity = np.full((2, 2), 0.5, dtype=np.float32)  # two identical captions, one per image
    ranks = retrieval_ranks(similarity, [0, 1], argsort=True)
    by_negation = [int(np.where(np.argsort(-row) == i)[0][0]) for i, row in enumerate(similarity)]
    assert ranks.i2t_argsort.tolist() == published_argsort_ranks(similarity, [0, 1])[0].tolist()
    assert ranks.i2t_argsort.tolist() != by_negation


def test_argsort_tie_rule_from_embeddings_with_identical_captions():
    rng = np.random.default_rng(3)
    images = rng.integers(-3, 4, size=(30, 8)).astype(np.float32)  # small integers: exact products
    texts = rng.integers(-3, 4, size=(150, 8)).astype(np.float32)
    texts[5::7] = texts[0]  # one sentence reused by many images, as in UCM-Captions
    ids = [j // 5 for j in range(150)]
    i2t, t2i = published_argsort_ranks(images @ texts.T, ids)
    ranks = retrieval_ranks_from_embeddings(images, texts, ids, normalize=False, argsort=True, block_rows=7)
    np.testing.assert_array_equal(ranks.i2t_argsort, i2t)
    np.testing.assert_array_equal(ranks.t2i_argsort, t2i)
    metrics = retrieval_metrics_from_embeddings(images, texts, ids, normalize=False, ties="argsort")
    assert metrics["i2t_r1"] == pytest.approx(100 * np.mean(i2t < 1))


def test_argsort_tie_rule_needs_argsort_ranks_and_agrees_on_continuous_scores():
    similarity = np.random.default_rng(1).random((5, 15)).astype(np.float32)
    ids = [i // 3 for i in range(15)]
    with pytest.raises(ValueError, match="argsort=True"):
        metrics_from_ranks(retrieval_ranks(similarity, ids), ties="argsort")
    assert retrieval_metrics(similarity, ids) == retrieval_metrics(similarity, ids, ties="argsort")
