"""Image-text retrieval metrics (Recall@K, mR, median/mean rank) for any number of captions per image.

The remote-sensing retrieval protocol (docs/method.md, section 7) has N test images and several captions
per image. open_clip's retrieval metric assumes *one* caption per image, which is wrong here;
this module instead maps every caption to its image index (``caption_image_ids``), so 5
captions per image reproduces the standard protocol exactly and any other count (1, 7, a
ragged mix) also works.

Definitions (ranks are 0-based, "rank < K" is a hit):

* **Image→text** for image ``i``: the rank of the *best-ranked* of its captions among all
  captions, i.e. the number of *other images'* captions that score at least as high as the
  best of ``i``'s own captions.
* **Text→image** for caption ``j``: the number of *other* images that score at least as high
  as caption ``j``'s own image.
* ``R@K = 100 * mean(rank < K)``; ``mr`` = the mean of the six recalls (mean *recall*, as the
  MSA paper and docs/method.md call it — not a mean rank).
* ``*_medr`` / ``*_meanr``: median and mean rank, reported **1-based** as the VSE++/SCAN family
  of codebases do (``floor(median(rank0)) + 1`` and ``mean(rank0) + 1``).

**Tie rule (deterministic and conservative).** A competitor whose score *equals* the true
item's score counts as ranked ahead of it. Equivalently: sort candidates by descending score
with a stable sort in which the ground truth is placed *after* every tied competitor; ties
between two captions of the same image do not matter (only the best one is ranked). This
never flatters a model that outputs constant or quantised scores (a constant similarity matrix
gets R@K ≈ K/N, not 100). On continuous scores ties do not occur and every tie rule agrees.

**Expected ranks under random tie order** (``ties="expected"``). Corpora such as UCM-Captions
reuse one sentence for dozens of images; identical texts get identical embeddings, so their
ties are not the model's fault, and the conservative rule then caps image→text recall (74 % of
UCM's test images have no caption text of their own). The original evaluation code sorts
with ``np.argsort`` and so breaks such ties in an arbitrary, machine-dependent order. The
``"expected"`` mode reports the *expected* recall and rank over a uniformly random order of the
tied items, the reproducible version of what that code measures: with ``a`` competitors
strictly ahead, ``t`` tied with the ground truth and ``o`` tied ground-truth items, a hit at K
has probability ``1 - C(t, K-a) / C(t+o, K-a)``. On continuous scores it equals the default.

**The published protocol's own order** (``ties="argsort"``). Published RS retrieval tables,
the MSA authors' ``eval.py`` (``i2t5``/``t2i5``) among them, rank each query with
``inds = np.argsort(scores)[::-1]`` and take the position of the best-ranked ground truth. This
mode computes exactly that, one ascending numpy argsort per query, reversed (which orders ties
differently from ``np.argsort(-scores)``). numpy's default sort is not stable and its order of
equal keys depends on the numpy version and on the CPU's sort kernels (AVX2, AVX-512), so the
numbers can differ between machines on tied scores; ``"expected"`` is their machine-independent
average. Only this mode is comparable with published rows. It needs one sort per query, so it is
computed only when asked for (``argsort=True`` in :func:`retrieval_ranks`). Scores are sorted in
their own dtype (integer scores as float64), as the published code sorts its float32 matrix.

The computation is a few vectorised comparisons per block of similarity rows: nothing is
sorted, memory beyond the input is O(block + N + M), and it runs on whatever device the input
lives on. :func:`retrieval_metrics_from_embeddings` goes further and never materialises the
full N×M similarity matrix (10,000 images × 50,000 captions in a few hundred MB).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DEFAULT_KS",
    "TIE_RULES",
    "RetrievalRanks",
    "retrieval_ranks",
    "retrieval_ranks_from_embeddings",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_metrics_from_embeddings",
    "format_metrics_table",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
# Elements of one comparison block; 2**24 bools = 16 MiB per temporary.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class RetrievalRanks:
    """0-based ranks of the ground truth for every query.

    ``i2t[i]`` is image ``i``'s rank (``-1`` for an image that has no caption: such an image is
    still a competitor for text→image but cannot be an image→text query). ``t2i[j]`` is caption
    ``j``'s rank.
    """

    i2t: np.ndarray
    t2i: np.ndarray
    i2t_tied: np.ndarray | None = None  # competitors tied with the ground truth (counted in the rank)
    t2i_tied: np.ndarray | None = None
    i2t_own_tied: np.ndarray | None = None  # the image's own captions at its best score (>= 1)
    i2t_argsort: np.ndarray | None = None  # rank in ``np.argsort(row)[::-1]`` order (only with argsort=True)
    t2i_argsort: np.ndarray | None = None

    @property
    def i2t_valid(self) -> np.ndarray:
        """Ranks of the images that have at least one caption (the image→text queries)."""
        return self.i2t[self.i2t >= 0]


def _as_similarity_tensor(similarity: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(similarity, torch.Tensor):
        sim = similarity.detach()
    elif isinstance(similarity, np.ndarray):
        sim = torch.as_tensor(similarity)
    else:
        try:
            sim = torch.as_tensor(np.asarray(similarity))
        except Exception as exc:
            raise TypeError(
                f"`similarity` must be a 2-D numpy array or torch tensor (images x captions), "
                f"got {type(similarity).__name__}."
            ) from exc
    if sim.ndim != 2:
        raise ValueError(
            f"`similarity` must be 2-D with shape (num_images, num_captions), got shape {tuple(sim.shape)}."
        )
    if sim.dtype == torch.bool or sim.is_complex():
        raise TypeError(f"`similarity` must hold real scores, got dtype {sim.dtype}.")
    if not sim.is_floating_point():
        sim = sim.to(torch.float64)  # integer scores: exact in float64 for |x| < 2**53
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"`similarity` is empty (shape {tuple(sim.shape)}): need at least one image and one caption.")
    return sim


def _as_caption_ids(
    caption_image_ids: Sequence[int] | np.ndarray | torch.Tensor,
    num_images: int,
    num_captions: int,
    device: torch.device,
) -> torch.Tensor:
    ids = caption_image_ids
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu()
    else:
        ids = torch.as_tensor(np.asarray(ids))
    if ids.ndim != 1:
        raise ValueError(
            f"`caption_image_ids` must be 1-D (one image index per caption), got shape {tuple(ids.shape)}."
        )
    if ids.numel() != num_captions:
        raise ValueError(
            f"`caption_image_ids` has {ids.numel()} entries but there are {num_captions} captions "
            f"(columns of `similarity` / rows of `text_embeds`); give one image index per caption."
        )
    if ids.is_floating_point():
        if not torch.equal(ids, ids.round()):
            raise ValueError("`caption_image_ids` must be integer image indices, got non-integer floats.")
    elif ids.dtype == torch.bool:
        raise TypeError("`caption_image_ids` must be integer image indices, got booleans.")
    ids = ids.to(torch.long)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_images:
        raise ValueError(
            f"`caption_image_ids` must lie in [0, {num_images - 1}] (one index per image row), "
            f"got values from {lo} to {hi}."
        )
    return ids.to(device)


def _row_blocks(num_rows: int, num_cols: int, block_rows: int | None) -> Iterable[tuple[int, int]]:
    if block_rows is None:
        block_rows = max(1, DEFAULT_BLOCK_ELEMENTS // max(1, num_cols))
    if block_rows < 1:
        raise ValueError(f"`block_rows` must be >= 1, got {block_rows}.")
    for start in range(0, num_rows, block_rows):
        yield start, min(num_rows, start + block_rows)


def _argsort_rank(scores: np.ndarray, is_truth: np.ndarray) -> np.ndarray:
    """Per row, the best position of a ground truth in ``np.argsort(row)[::-1]`` (the published order).

    ``np.argsort`` along the last axis sorts each row exactly as it sorts that row alone.
    Rows without any ground truth get ``-1``.
    """
    n = scores.shape[1]
    ascending = np.argsort(scores, axis=1)
    position = np.empty_like(ascending)
    np.put_along_axis(position, ascending, np.arange(n), axis=1)
    rank = np.where(is_truth, n - 1 - position, n).min(axis=1, initial=n)
    return np.where(rank == n, -1, rank)


def _argsort_ranks(
    get_block: Callable[[int, int], torch.Tensor],
    get_column_block: Callable[[int, int], torch.Tensor],
    ids: torch.Tensor,
    num_images: int,
    block_rows: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image→text and text→image ranks under the ``argsort`` tie rule, one query block at a time.

    ``get_column_block(c0, c1)`` returns the scores of captions ``c0:c1`` (rows) against all images.
    """
    caption_ids = ids.cpu().numpy()
    num_captions = caption_ids.size
    i2t = np.empty(num_images, dtype=np.int64)
    for r0, r1 in _row_blocks(num_images, num_captions, block_rows):
        rows = get_block(r0, r1).cpu().numpy()
        i2t[r0:r1] = _argsort_rank(rows, caption_ids[None, :] == np.arange(r0, r1)[:, None])
    t2i = np.empty(num_captions, dtype=np.int64)
    for c0, c1 in _row_blocks(num_captions, num_images, block_rows):
        rows = get_column_block(c0, c1).cpu().numpy()
        t2i[c0:c1] = _argsort_rank(rows, np.arange(num_images)[None, :] == caption_ids[c0:c1, None])
    return i2t, t2i


def _ranks_core(
    get_block: Callable[[int, int], torch.Tensor],
    true_scores: torch.Tensor,
    ids: torch.Tensor,
    num_images: int,
    block_rows: int | None,
) -> RetrievalRanks:
    """Count, per query, competitors scoring >= the ground truth (the conservative tie rule).

    ``get_block(r0, r1)`` returns similarity rows ``r0:r1`` (all captions). The ground truth's
    own entries are subtracted *from the block values themselves*, so the result is exact even
    when a block is recomputed (embeddings path) with different floating-point rounding.
    """
    device = true_scores.device
    num_captions = ids.numel()
    # Best own-caption score per image (image->text threshold); -inf for images with no caption.
    best = torch.full((num_images,), -math.inf, dtype=true_scores.dtype, device=device)
    best.scatter_reduce_(0, ids, true_scores, reduce="amax", include_self=True)
    has_caption = torch.bincount(ids, minlength=num_images) > 0

    # Captions grouped by image, so each row block finds its own captions by two searchsorted.
    order = torch.argsort(ids, stable=True)
    ids_sorted = ids[order]

    t2i_count = torch.zeros(num_captions, dtype=torch.long, device=device)
    i2t_count = torch.zeros(num_images, dtype=torch.long, device=device)
    t2i_ahead = torch.zeros(num_captions, dtype=torch.long, device=device)  # strictly higher
    i2t_ahead = torch.zeros(num_images, dtype=torch.long, device=device)
    i2t_own_tied = torch.zeros(num_images, dtype=torch.long, device=device)
    for r0, r1 in _row_blocks(num_images, num_captions, block_rows):
        block = get_block(r0, r1)
        # One cheap reduction first; the exact NaN scan only runs if the sum is NaN
        # (a NaN entry, or +inf and -inf together).
        if torch.isnan(block.sum()) and torch.isnan(block).any():
            bad = int(torch.isnan(block).any(dim=1).nonzero()[0]) + r0
            raise ValueError(f"similarity contains NaN (first in image row {bad}); cannot rank NaN scores.")
        # int32 reductions of the boolean masks are ~8x faster than the default int64 ones.
        t2i_count += (block >= true_scores.unsqueeze(0)).sum(dim=0, dtype=torch.int32)
        i2t_count[r0:r1] = (block >= best[r0:r1].unsqueeze(1)).sum(dim=1, dtype=torch.int32)
        t2i_ahead += (block > true_scores.unsqueeze(0)).sum(dim=0, dtype=torch.int32)
        i2t_ahead[r0:r1] = (block > best[r0:r1].unsqueeze(1)).sum(dim=1, dtype=torch.int32)
        # Remove each ground-truth pair from both counts (it is not its own competitor).
        s = int(torch.searchsorted(ids_sorted, torch.tensor(r0, device=device)))
        e = int(torch.searchsorted(ids_sorted, torch.tensor(r1, device=device)))
        if e > s:
            own = order[s:e]
            own_rows = ids[own]
            own_vals = block[own_rows - r0, own]
            t2i_count[own] -= (own_vals >= true_scores[own]).long()
            at_best = (own_vals >= best[own_rows]).long()
            i2t_count.index_add_(0, own_rows, -at_best)
            i2t_own_tied.index_add_(0, own_rows, at_best)

    i2t = torch.where(has_caption, i2t_count, torch.full_like(i2t_count, -1))
    return RetrievalRanks(
        i2t=i2t.cpu().numpy(),
        t2i=t2i_count.cpu().numpy(),
        i2t_tied=(i2t_count - i2t_ahead).cpu().numpy(),
        t2i_tied=(t2i_count - t2i_ahead).cpu().numpy(),
        i2t_own_tied=i2t_own_tied.cpu().numpy(),
    )


def retrieval_ranks(
    similarity: np.ndarray | torch.Tensor,
    caption_image_ids: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    block_rows: int | None = None,
    argsort: bool = False,
) -> RetrievalRanks:
    """0-based ground-truth ranks for both directions (see the module docstring for the tie rule).

    Args:
        similarity: ``(num_images, num_captions)`` scores, numpy or torch (any device).
        caption_image_ids: ``caption_image_ids[j]`` = row index of caption ``j``'s image.
        block_rows: image rows compared at once; default keeps each temporary near 16 MiB.
        argsort: also rank every query in the published protocol's ``np.argsort(scores)[::-1]``
            order (``ties="argsort"``); one sort per query, so off unless asked for.
    """
    sim = _as_similarity_tensor(similarity)
    num_images, num_captions = sim.shape
    ids = _as_caption_ids(caption_image_ids, num_images, num_captions, sim.device)
    true_scores = sim[ids, torch.arange(num_captions, device=sim.device)]
    ranks = _ranks_core(lambda r0, r1: sim[r0:r1], true_scores, ids, num_images, block_rows)
    if not argsort:
        return ranks
    i2t, t2i = _argsort_ranks(lambda r0, r1: sim[r0:r1], lambda c0, c1: sim[:, c0:c1].T, ids, num_images, block_rows)
    return dataclasses.replace(ranks, i2t_argsort=i2t, t2i_argsort=t2i)


def _as_embeddings(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 2-D array (rows = items, columns = embedding dims), "
            f"got shape {tuple(t.shape)}."
        )
    if not t.is_floating_point():
        t = t.float()
    return t


def retrieval_ranks_from_embeddings(
    image_embeds: np.ndarray | torch.Tensor,
    text_embeds: np.ndarray | torch.Tensor,
    caption_image_ids: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    normalize: bool = True,
    block_rows: int | None = None,
    argsort: bool = False,
) -> RetrievalRanks:
    """Like :func:`retrieval_ranks` but computes similarity blocks from embeddings on the fly.

    The full images × captions matrix is never held: each block of image rows is multiplied
    with all text embeddings twice (once to collect the ground-truth scores, once to count),
    so peak memory is one block plus the embeddings. With ``normalize=True`` both sides are
    L2-normalised first (cosine similarity, docs/method.md, section 7). With ``argsort=True`` the
    text→image queries are ranked on caption blocks ``text @ image.T``, whose rounding may differ
    from the image blocks' in the last bit; tied scores (identical embeddings) stay tied.
    """
    img = _as_embeddings(image_embeds, "image_embeds")
    txt = _as_embeddings(text_embeds, "text_embeds").to(device=img.device)
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"`image_embeds` has dimension {img.shape[1]} but `text_embeds` has {txt.shape[1]}.")
    dtype = torch.promote_types(img.dtype, txt.dtype)
    img, txt = img.to(dtype), txt.to(dtype)
    if normalize:
        img = torch.nn.functional.normalize(img, dim=-1)
        txt = torch.nn.functional.normalize(txt, dim=-1)
    num_images, num_captions = img.shape[0], txt.shape[0]
    ids = _as_caption_ids(caption_image_ids, num_images, num_captions, img.device)
    txt_t = txt.t().contiguous()

    def get_block(r0: int, r1: int) -> torch.Tensor:
        return img[r0:r1] @ txt_t

    # Ground-truth scores taken from the same block products used for counting.
    true_scores = torch.empty(num_captions, dtype=dtype, device=img.device)
    order = torch.argsort(ids, stable=True)
    ids_sorted = ids[order]
    for r0, r1 in _row_blocks(num_images, num_captions, block_rows):
        s = int(torch.searchsorted(ids_sorted, torch.tensor(r0, device=img.device)))
        e = int(torch.searchsorted(ids_sorted, torch.tensor(r1, device=img.device)))
        if e > s:
            own = order[s:e]
            true_scores[own] = get_block(r0, r1)[ids[own] - r0, own]
    ranks = _ranks_core(get_block, true_scores, ids, num_images, block_rows)
    if not argsort:
        return ranks
    i2t, t2i = _argsort_ranks(get_block, lambda c0, c1: txt[c0:c1] @ img.t(), ids, num_images, block_rows)
    return dataclasses.replace(ranks, i2t_argsort=i2t, t2i_argsort=t2i)


TIE_RULES = ("pessimistic", "expected", "argsort")


def _hit_probability(rank: np.ndarray, tied: np.ndarray, own_tied: np.ndarray, k: int) -> np.ndarray:
    """P(rank < k) when the ``tied`` competitors and ``own_tied`` ground-truth items are in random order."""
    ahead = rank - tied
    slots = k - ahead  # hit if fewer than `slots` tied competitors come before the first own item
    all_first = np.ones(rank.shape, dtype=np.float64)  # P(the first `slots` tied items are all competitors)
    for i in range(max(int(slots.max(initial=0)), 0)):
        remaining = tied + own_tied - i
        factor = np.divide(np.clip(tied - i, 0, None), remaining, out=np.zeros(rank.shape), where=remaining > 0)
        all_first = np.where(i < slots, all_first * factor, all_first)
    return np.where(slots <= 0, 0.0, np.where(slots > tied, 1.0, 1.0 - all_first))


def _recall(hits: np.ndarray) -> float:
    return float(100.0 * np.mean(hits)) if hits.size else float("nan")


def metrics_from_ranks(
    ranks: RetrievalRanks, ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic"
) -> dict[str, float]:
    """Recall@K (percent), mR (mean of all recalls), 1-based median/mean rank per direction.

    ``ties="pessimistic"`` (default) counts tied competitors ahead of the ground truth;
    ``"expected"`` averages over a random order of tied items; ``"argsort"`` ranks in the published
    protocol's ``np.argsort(scores)[::-1]`` order (module docstring).
    """
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"`ks` must be positive integers, got {ks}.")
    if ties not in TIE_RULES:
        raise ValueError(f"`ties` must be one of {TIE_RULES}, got {ties!r}.")
    valid = ranks.i2t >= 0
    i2t, t2i = ranks.i2t_valid, ranks.t2i
    out: dict[str, float] = {}
    if ties == "expected":
        if ranks.i2t_tied is None:
            raise ValueError("ties='expected' needs ranks from retrieval_ranks* (they carry the tie counts).")
        i2t_tied, own_tied = ranks.i2t_tied[valid], ranks.i2t_own_tied[valid]
        t2i_tied = ranks.t2i_tied
        for k in ks:
            out[f"i2t_r{k}"] = _recall(_hit_probability(i2t, i2t_tied, own_tied, k))
        for k in ks:
            out[f"t2i_r{k}"] = _recall(_hit_probability(t2i, t2i_tied, np.ones_like(t2i_tied), k))
        # Expected 0-based rank: those strictly ahead plus the expected tied competitors before the first own item.
        i2t = i2t - i2t_tied + i2t_tied / (own_tied + 1)
        t2i = t2i - t2i_tied + t2i_tied / 2
    else:
        if ties == "argsort":
            if ranks.i2t_argsort is None or ranks.t2i_argsort is None:
                raise ValueError("ties='argsort' needs ranks computed with `argsort=True` (retrieval_ranks*).")
            i2t, t2i = ranks.i2t_argsort[valid], ranks.t2i_argsort
        for k in ks:
            out[f"i2t_r{k}"] = _recall(i2t < k)
        for k in ks:
            out[f"t2i_r{k}"] = _recall(t2i < k)
    out["mr"] = float(np.mean([out[f"i2t_r{k}"] for k in ks] + [out[f"t2i_r{k}"] for k in ks]))
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        out[f"{name}_medr"] = float(np.floor(np.median(r)) + 1) if r.size else float("nan")
        out[f"{name}_meanr"] = float(np.mean(r) + 1) if r.size else float("nan")
    out["num_images"] = int(ranks.i2t.size)
    out["num_captions"] = int(ranks.t2i.size)
    return out


def _warn_captionless(ranks: RetrievalRanks) -> None:
    missing = int((ranks.i2t < 0).sum())
    if missing:
        warnings.warn(
            f"{missing} of {ranks.i2t.size} images have no caption in `caption_image_ids`: they count as "
            f"distractors for text->image but are left out of the image->text recalls.",
            stacklevel=3,
        )


def retrieval_metrics(
    similarity: np.ndarray | torch.Tensor,
    caption_image_ids: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    block_rows: int | None = None,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Image↔text retrieval metrics from an images × captions similarity matrix (docs/method.md, section 7).

    Args:
        similarity: ``(num_images, num_captions)`` scores (numpy or torch, any float dtype/device),
            normally dot products of L2-normalised embeddings.
        caption_image_ids: ``caption_image_ids[j]`` is the image (row) index of caption ``j``.
            Any number of captions per image works; ``[i // 5 for i in range(5 * N)]`` is the
            standard 5-captions-per-image layout.
        ks: the K of Recall@K.
        block_rows: image rows processed per block (memory bound); the default keeps every
            temporary near 16 MiB, whatever the matrix size.
        ties: ``"pessimistic"`` (tied competitors rank ahead), ``"expected"`` (the average over a
            random order of tied items) or ``"argsort"`` (the published protocol's
            ``np.argsort(scores)[::-1]`` order, machine-dependent on ties); see the module docstring.

    Returns:
        ``i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10`` (percent), ``mr`` (mean of those
        six recalls), ``i2t_medr, i2t_meanr, t2i_medr, t2i_meanr`` (1-based ranks), and
        ``num_images``/``num_captions``. By default ties count against the model (module docstring).

    Example:
        >>> import numpy as np
        >>> sim = np.array([[0.9, 0.1, 0.8],    # image 0: its captions are 0 and 1
        ...                 [0.2, 0.7, 0.3]])   # image 1: its caption is 2
        >>> m = retrieval_metrics(sim, caption_image_ids=[0, 0, 1])
        >>> m["i2t_r1"]   # image 1's own caption (0.3) trails image 0's caption 1 (0.7)
        50.0
        >>> round(m["t2i_r1"], 2)   # only caption 0 ranks its image first
        33.33
        >>> m["i2t_r5"], m["t2i_r5"], round(m["mr"], 2)
        (100.0, 100.0, 80.56)
        >>> tied = np.array([[0.5, 0.5], [0.5, 0.5]])  # two identical captions, one per image
        >>> retrieval_metrics(tied, [0, 1])["i2t_r1"], retrieval_metrics(tied, [0, 1], ties="expected")["i2t_r1"]
        (0.0, 50.0)
    """
    ranks = retrieval_ranks(similarity, caption_image_ids, block_rows=block_rows, argsort=ties == "argsort")
    _warn_captionless(ranks)
    return metrics_from_ranks(ranks, ks, ties)


def retrieval_metrics_from_embeddings(
    image_embeds: np.ndarray | torch.Tensor,
    text_embeds: np.ndarray | torch.Tensor,
    caption_image_ids: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    normalize: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    block_rows: int | None = None,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """:func:`retrieval_metrics` from embeddings, without building the full similarity matrix.

    Use this for large sets (e.g. 10,000 images × 50,000 captions: the full float32 matrix
    would be 2 GB; here peak extra memory is one ~16M-element block).
    """
    ranks = retrieval_ranks_from_embeddings(
        image_embeds,
        text_embeds,
        caption_image_ids,
        normalize=normalize,
        block_rows=block_rows,
        argsort=ties == "argsort",
    )
    _warn_captionless(ranks)
    return metrics_from_ranks(ranks, ks, ties)


def format_metrics_table(metrics: dict[str, float], ks: Sequence[int] = DEFAULT_KS) -> str:
    """A fixed-width text table of the recalls and ranks, as printed by ``msa-eval``."""
    header = ["direction"] + [f"R@{k}" for k in ks] + ["medr", "meanr"]
    rows = []
    for name, label in (("i2t", "image->text"), ("t2i", "text->image")):
        rows.append(
            [label]
            + [f"{metrics[f'{name}_r{k}']:.2f}" for k in ks]
            + [f"{metrics[f'{name}_medr']:.0f}", f"{metrics[f'{name}_meanr']:.2f}"]
        )
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]

    def fmt(r):
        return "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    lines.append(
        f"mR = {metrics['mr']:.2f}   ({metrics.get('num_images', '?')} images, "
        f"{metrics.get('num_captions', '?')} captions)"
    )
    return "\n".join(lines)
