#!/usr/bin/env python
"""Time ``msa_hf.retrieval.retrieval_metrics`` against a per-query argsort loop and check both agree.

The loop is how the original MSA/AMFMN-family code evaluates: for every image, argsort all
captions and look up where its captions landed; for every caption, argsort all images. Two
loop variants are timed:

* ``original``: ``np.argsort(scores)[::-1]`` exactly as the original code does it; its tie
  order is whatever numpy's sort produces, so it is only compared on continuous scores.
* ``tie-aware``: a stable ``np.lexsort`` that places the ground truth after every tied
  competitor — the documented tie rule of ``retrieval_metrics`` — so the numbers must agree
  exactly even on a matrix full of ties (checked with ``--ties``, on by default).

Usage::

    python benchmarks/eval_metrics.py                 # RSICD test size: 1,093 images x 5,465 captions
    python benchmarks/eval_metrics.py --images 452    # RSITMD test size
    python benchmarks/eval_metrics.py --large         # also 10,000 x 50,000 from embeddings (bounded memory)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

from msa_hf.retrieval import metrics_from_ranks, retrieval_metrics, retrieval_metrics_from_embeddings
from msa_hf.retrieval.metrics import RetrievalRanks


def loop_ranks(sim: np.ndarray, caption_image_ids: np.ndarray, tie_aware: bool) -> RetrievalRanks:
    """Per-query argsort ranks, the way the original evaluation code computes them."""
    num_images, num_captions = sim.shape
    captions_of = [np.flatnonzero(caption_image_ids == i) for i in range(num_images)]
    i2t = np.full(num_images, -1, dtype=np.int64)
    for i in range(num_images):
        scores = sim[i]
        if tie_aware:
            is_gt = np.zeros(num_captions, dtype=bool)
            is_gt[captions_of[i]] = True
            inds = np.lexsort((is_gt, -scores))  # by score desc, ground truth after ties
        else:
            inds = np.argsort(scores)[::-1]
        rank = 10**20
        for j in captions_of[i]:
            tmp = int(np.where(inds == j)[0][0])
            rank = min(rank, tmp)
        if captions_of[i].size:
            i2t[i] = rank
    t2i = np.zeros(num_captions, dtype=np.int64)
    for j in range(num_captions):
        scores = sim[:, j]
        gt = int(caption_image_ids[j])
        if tie_aware:
            is_gt = np.zeros(num_images, dtype=bool)
            is_gt[gt] = True
            inds = np.lexsort((is_gt, -scores))
        else:
            inds = np.argsort(scores)[::-1]
        t2i[j] = int(np.where(inds == gt)[0][0])
    return RetrievalRanks(i2t=i2t, t2i=t2i)


def make_similarity(
    num_images: int, per_image: int, dim: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of random embeddings where captions are noisy copies of their image."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((num_images, dim)).astype(np.float32)
    ids = np.repeat(np.arange(num_images), per_image)
    txt = img[ids] + noise * rng.standard_normal((ids.size, dim)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img @ txt.T, ids


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def compare(a: dict, b: dict, what: str) -> None:
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        raise SystemExit(f"MISMATCH ({what}): {diff}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1093, help="number of images (RSICD test: 1093)")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--dim", type=int, default=512, help="embedding size of the synthetic data")
    p.add_argument("--noise", type=float, default=12.0, help="caption noise; ~12 gives paper-like recalls (mR ~30)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the vectorised metric (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--no-ties", dest="ties", action="store_false", help="skip the tie-heavy (quantised scores) agreement check"
    )
    p.add_argument(
        "--large",
        action="store_true",
        help="also time 10,000 images x 50,000 captions from embeddings (bounded memory)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    sim, ids = make_similarity(args.images, args.captions_per_image, args.dim, args.noise, args.seed)
    print(
        f"similarity {sim.shape[0]} images x {sim.shape[1]} captions ({sim.dtype}), "
        f"torch threads {torch.get_num_threads()}"
    )

    retrieval_metrics(sim, ids)  # warm-up (first call pays torch's lazy init)
    t_vec, m_vec = timed(lambda: retrieval_metrics(sim, ids), args.repeats)
    t_orig, r_orig = timed(lambda: loop_ranks(sim, ids, tie_aware=False), 1)
    t_tie, r_tie = timed(lambda: loop_ranks(sim, ids, tie_aware=True), 1)
    m_orig, m_tie = metrics_from_ranks(r_orig), metrics_from_ranks(r_tie)
    compare(m_vec, m_orig, "vectorised vs original argsort loop")
    compare(m_vec, m_tie, "vectorised vs tie-aware loop")

    print(f"\n{'method':<34}{'seconds':>10}{'ratio':>10}")
    print(f"{'vectorised retrieval_metrics':<34}{t_vec:>10.4f}{1.0:>10.1f}")
    print(f"{'per-query argsort loop (original)':<34}{t_orig:>10.4f}{t_orig / t_vec:>10.1f}")
    print(f"{'per-query lexsort loop (tie-aware)':<34}{t_tie:>10.4f}{t_tie / t_vec:>10.1f}")
    print("\nmetrics (identical for all three):")
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in m_vec.items() if not k.startswith("num_")))

    if args.ties:
        # Scores rounded to 1 decimal: almost every comparison is a tie.
        sim_q = np.round(sim * 10) / 10
        m_vec_q = retrieval_metrics(sim_q, ids)
        m_tie_q = metrics_from_ranks(loop_ranks(sim_q, ids, tie_aware=True))
        compare(m_vec_q, m_tie_q, "tie-heavy matrix: vectorised vs tie-aware loop")
        print(f"tie-heavy check (scores rounded to 0.1): identical, mR={m_vec_q['mr']:.4f}")

    if args.large:
        n, per, dim = 10_000, 5, 512
        g = torch.Generator().manual_seed(args.seed)
        img = torch.randn(n, dim, generator=g)
        large_ids = torch.arange(n).repeat_interleave(per)
        txt = img[large_ids] + args.noise * torch.randn(n * per, dim, generator=g)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        m_large = retrieval_metrics_from_embeddings(img, txt, large_ids)
        t_large = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"\nlarge: {n} images x {n * per} captions from embeddings in {t_large:.2f} s, "
            f"peak RSS {rss1:.0f} MiB (was {rss0:.0f} MiB; a full float32 matrix alone is "
            f"{n * n * per * 4 / 2**20:.0f} MiB), mR={m_large['mr']:.2f}"
        )

    print("\nOK: vectorised and per-query loop metrics are identical.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
