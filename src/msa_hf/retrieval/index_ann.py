"""Approximate search for archives of millions of images: a FAISS ``index_factory`` index
stored next to the exact embeddings (``msa-index build --index-factory``).

An index folder always keeps ``embeddings.safetensors`` (float32, the exact embeddings): it
is what incremental updates reuse, what exact search reads and what the approximate index is
built from, so changing the approximate index never re-encodes an image. With a factory other
than ``"Flat"`` the folder also holds ``ann.faiss``, described by the manifest's ``"ann"``
block (factory, search defaults, training sample, measured recall, bytes per image).

Why this shape:

* **Seeded and reproducible.** IVF coarse quantizers and PQ codebooks are trained on a sample
  of the stored embeddings drawn with ``seed``; the same embeddings and settings give the
  same index.
* **Measured, not assumed.** Every build holds out a seeded sample of the stored embeddings
  as queries (left out of the training sample) and reports recall@10 of the approximate
  search against exact search at the stored ``nprobe``/``efSearch``, so the user sees what
  the compression costs on their own archive.
* **One exact search for everything.** :func:`exact_search` (chunked, any row-sliceable
  array: a tensor in memory or a float16 memmap on disk) gives the ground truth of the build's
  report and of ``benchmarks/index_scale.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ANN_FILE",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_FACTORY",
    "DEFAULT_NPROBE",
    "RECALL_K",
    "AnnBuild",
    "AnnSettings",
    "add_embeddings",
    "build_ann",
    "check_search_params",
    "create_ann",
    "default_train_size",
    "exact_search",
    "factory_label",
    "ann_path",
    "recall_at_k",
    "search_params",
    "set_search_params",
    "train_ann",
]

ANN_FILE = "ann.faiss"
DEFAULT_FACTORY = "Flat"
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 64
RECALL_K = 10
ADD_CHUNK = 65536


@dataclass(frozen=True)
class AnnSettings:
    """What ``msa-index build --index-factory ...`` asks for; ``None`` search parameters take
    the defaults (:data:`DEFAULT_NPROBE`, :data:`DEFAULT_EF_SEARCH`) where they apply."""

    factory: str = DEFAULT_FACTORY
    nprobe: int | None = None
    ef_search: int | None = None
    train_size: int | None = None
    seed: int = 0
    recall_queries: int = 1000

    @property
    def exact(self) -> bool:
        """``"Flat"`` is the exact search every index has: no ``ann.faiss`` is written."""
        return self.factory.replace(" ", "") == DEFAULT_FACTORY


@dataclass
class AnnBuild:
    """A trained and filled approximate index and its manifest block (``report``)."""

    index: Any
    report: dict[str, Any]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("--index-factory needs faiss: `pip install msa_hf[index]` (or faiss-cpu).") from exc
    return faiss


def create_ann(factory: str, dim: int) -> Any:
    """An empty inner-product FAISS index for ``factory`` (embeddings are L2-normalised, so
    inner product is cosine similarity)."""
    faiss = _faiss()
    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].split(": ", 1)[-1]
        raise ValueError(
            f"--index-factory {factory!r} is not a FAISS index_factory string ({reason}); use e.g. "
            f"'IVF4096,PQ32', 'HNSW32' or 'Flat'."
        ) from None


def _unwrapped(index: Any) -> Any:
    """The index inside pre-transforms, refinements and id maps."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    while True:
        inner = getattr(index, "base_index", None) or getattr(index, "index", None)
        if inner is None or not isinstance(index, (faiss.IndexPreTransform, faiss.IndexRefine, faiss.IndexIDMap)):
            return index
        index = faiss.downcast_index(inner)


def search_params(index: Any) -> set[str]:
    """The search parameters ``index`` takes (found without changing it): ``nprobe`` (an IVF
    part), ``efSearch`` (an HNSW graph, or an IVF's HNSW coarse quantizer)."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return {"nprobe", "efSearch"} if hasattr(_unwrapped(ivf.quantizer), "hnsw") else {"nprobe"}
    return {"efSearch"} if hasattr(_unwrapped(index), "hnsw") else set()


def check_search_params(index: Any, factory: str, nprobe: int | None, ef_search: int | None) -> None:
    """Raise ``ValueError`` when ``nprobe``/``ef_search`` is given but ``index`` does not take it."""
    takes = search_params(index)
    for flag, name, value in (("--nprobe", "nprobe", nprobe), ("--ef-search", "efSearch", ef_search)):
        if value is None:
            continue
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}.")
        if name not in takes:
            other = " (it takes --ef-search)" if "efSearch" in takes else " (it takes --nprobe)" if takes else ""
            raise ValueError(f"{flag} {value} does not apply to index factory {factory!r}{other}; leave it out.")


def set_search_params(index: Any, factory: str, nprobe: int | None, ef_search: int | None) -> None:
    """Set ``nprobe``/``efSearch`` on ``index`` (:func:`check_search_params` first)."""
    check_search_params(index, factory, nprobe, ef_search)
    space = _faiss().ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is not None:
            space.set_index_parameter(index, name, int(value))


def default_train_size(index: Any, n: int) -> int:
    """Vectors to train on: 64 per IVF list (FAISS samples at most 256 per list anyway) and at
    least 10,000 (PQ codebooks have 256 centroids per sub-quantizer), at most ``n``."""
    ivf = _faiss().try_extract_index_ivf(index)
    wanted = max(10_000, 64 * int(ivf.nlist)) if ivf is not None else 100_000
    return min(n, wanted)


def _rows(array: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a tensor or array as contiguous float32 (the unit FAISS takes)."""
    part = array[start:stop]
    if hasattr(part, "numpy"):
        part = part.detach().cpu().numpy()
    return np.ascontiguousarray(part, dtype=np.float32)


def _take(array: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of a tensor or array as contiguous float32."""
    if hasattr(array, "numpy"):
        import torch

        return np.ascontiguousarray(array[torch.as_tensor(rows)].detach().cpu().numpy(), dtype=np.float32)
    return np.ascontiguousarray(array[rows], dtype=np.float32)


def train_ann(index: Any, embeddings: Any, rows: np.ndarray, factory: str) -> None:
    """Train ``index`` on ``embeddings[rows]``; too few vectors for the factory is a one-line error."""
    if index.is_trained:
        return
    try:
        index.train(_take(embeddings, np.sort(rows)))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].split("failed: ", 1)[-1]
        raise ValueError(
            f"--index-factory {factory!r} cannot be trained on {len(rows)} embeddings ({reason}); choose "
            f"fewer IVF lists (at most N/39: 'IVF{_suggest_nlist(len(rows))},...'), or keep exact search "
            f"('Flat') for an archive this small."
        ) from None


def _suggest_nlist(n: int) -> int:
    """The largest power of two at most ``n / 39`` (FAISS wants 39 training vectors per list)."""
    return 2 ** int(math.log2(max(1.0, n / 39)))


def add_embeddings(index: Any, embeddings: Any, chunk: int = ADD_CHUNK) -> None:
    """Add every row of ``embeddings`` in chunks (a float16 memmap never becomes float32 at once)."""
    n = len(embeddings)
    for start in range(0, n, chunk):
        index.add(_rows(embeddings, start, min(n, start + chunk)))


def exact_search(
    embeddings: Any, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, chunk: int = ADD_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) of ``queries`` over ``embeddings`` by inner product, one
    chunk of rows at a time (memory: one chunk plus ``Q x (k + chunk)`` scores). ``exclude[i]``
    is a row query ``i`` may not return (itself, when queries are drawn from the index); rows
    are -1 where fewer than ``k`` remain. Among rows tied at the ``k``-th score the lowest are
    kept, as a stable sort of all rows would (and as ``ImageIndex`` search does)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = len(queries), len(embeddings)
    best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, 0), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        scores = queries @ _rows(embeddings, start, stop).T
        if exclude is not None:
            own = (exclude >= start) & (exclude < stop)
            scores[np.nonzero(own)[0], exclude[own] - start] = -np.inf
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, stop), scores.shape)], axis=1)
        best_s, best_i = _lowest_rows_of_top(cand_s, cand_i, min(k, cand_s.shape[1]))
    order = np.lexsort((best_i, -best_s), axis=-1)
    best_s, best_i = np.take_along_axis(best_s, order, -1), np.take_along_axis(best_i, order, -1)
    return best_s, np.where(np.isneginf(best_s), -1, best_i)  # an excluded row is no neighbour


def _lowest_rows_of_top(scores: np.ndarray, rows: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Each line's ``keep`` highest scores, taking the lowest rows among those tied at the cut.

    ``rows`` must ascend along each line; the kept entries come back in that (row) order, so the
    next chunk's candidates ascend too. A partition finds the cut score; ties are then resolved by
    position instead of by the partition's unspecified order, without sorting every candidate.
    """
    cut = -np.partition(-scores, keep - 1, axis=1)[:, keep - 1 : keep]
    above = scores > cut
    at_cut = scores == cut
    room = keep - above.sum(axis=1, keepdims=True)
    chosen = above | (at_cut & (np.cumsum(at_cut, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(len(scores), keep)  # exactly `keep` per line, in row order
    return np.take_along_axis(scores, cols, 1), np.take_along_axis(rows, cols, 1)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = RECALL_K) -> float:
    """Mean fraction of each query's exact top-``k`` rows found in its approximate top-``k``
    (rows < 0 are padding: an index with fewer than ``k`` other rows)."""
    fractions = []
    for a, e in zip(approx, exact):
        wanted = {r for r in e[:k].tolist() if r >= 0}
        if wanted:
            fractions.append(len(wanted & set(a[:k].tolist())) / len(wanted))
    return float(np.mean(fractions)) if fractions else float("nan")


def _approx_without_self(index: Any, queries: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Approximate top-``k`` rows of each query with its own row left out (-1 where fewer were found)."""
    _, rows = index.search(queries, k + 1)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (found, me) in enumerate(zip(rows, own)):
        found = [r for r in found.tolist() if r != me and r >= 0][:k]
        out[i, : len(found)] = found
    return out


def build_ann(embeddings: Any, settings: AnnSettings) -> AnnBuild:
    """Train (on a seeded sample), fill and measure an approximate index of ``embeddings``.

    ``settings.recall_queries`` rows (at most a tenth of the index) are drawn as held-out
    queries, kept out of the training sample; the report's ``recall_at_10`` is the overlap of
    their approximate and exact top-10 (each query's own row left out of both). The report
    holds the settings asked for and what was measured: the manifest's ``"ann"`` block.
    """
    n, dim = len(embeddings), int(embeddings.shape[1])
    start = time.perf_counter()
    index = create_ann(settings.factory, dim)
    set_search_params(index, settings.factory, settings.nprobe, settings.ef_search)
    takes = search_params(index)
    nprobe = (settings.nprobe or DEFAULT_NPROBE) if "nprobe" in takes else None
    ef_search = (settings.ef_search or DEFAULT_EF_SEARCH) if "efSearch" in takes else None
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(n)
    n_queries = min(settings.recall_queries, max(1, n // 10))
    held_out, rest = np.sort(order[:n_queries]), order[n_queries:]
    train_size = settings.train_size or default_train_size(index, len(rest))
    train_rows = rest[: min(train_size, len(rest))] if not index.is_trained else rest[:0]
    train_ann(index, embeddings, train_rows, settings.factory)
    add_embeddings(index, embeddings)
    set_search_params(index, settings.factory, nprobe, ef_search)
    build_seconds = time.perf_counter() - start
    queries = _take(embeddings, held_out)
    _, exact_rows = exact_search(embeddings, queries, RECALL_K, exclude=held_out)
    approx_rows = _approx_without_self(index, queries, held_out, RECALL_K)
    report = {
        "factory": settings.factory,
        "file": ANN_FILE,
        "nprobe": nprobe,
        "ef_search": ef_search,
        "seed": settings.seed,
        "train_size": settings.train_size,
        "recall_queries": settings.recall_queries,
        "trained_on": int(len(train_rows)),
        "recall_at_10": round(recall_at_k(approx_rows, exact_rows), 4),
        "measured_queries": int(n_queries),
        "build_seconds": round(build_seconds, 3),
    }
    return AnnBuild(index, report)


def factory_label(report: dict[str, Any]) -> str:
    """``IVF64,PQ8 (nprobe 32)`` for messages."""
    params = [f"{k} {report[k]}" for k in ("nprobe", "ef_search") if report.get(k) is not None]
    return report["factory"] + (f" ({', '.join(params)})" if params else "")


def ann_path(folder: Path, report: dict[str, Any]) -> Path:
    """Where an index folder keeps its approximate index."""
    return folder / report.get("file", ANN_FILE)
