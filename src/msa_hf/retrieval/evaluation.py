"""Evaluate retrieval on a corpus split (the engine of ``msa-eval``).

A corpus split is a ``datasets.Dataset`` with one row per image: ``image`` (a
``datasets.Image``) and ``captions`` (list of str), as ``msa_hf.data.load_corpus`` returns.
Images are encoded once, captions once (batched, progress bars), and the metrics come from
:func:`msa_hf.retrieval.retrieval_metrics_from_embeddings` without building the full
similarity matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .encoding import encode_images, encode_texts
from .metrics import DEFAULT_KS, retrieval_metrics_from_embeddings

__all__ = ["EvaluationResult", "evaluate_retrieval", "evaluate_corpus", "flatten_captions"]


@dataclass
class EvaluationResult:
    """Metrics plus what produced them (embeddings are L2-normalised, on the CPU)."""

    metrics: dict[str, float]
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    captions: list[str]
    caption_image_ids: np.ndarray


def flatten_captions(captions_per_image: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Flatten per-image caption lists into (captions, caption_image_ids), validating types."""
    flat: list[str] = []
    ids: list[int] = []
    for i, caps in enumerate(captions_per_image):
        if isinstance(caps, str) or not isinstance(caps, Sequence):
            raise TypeError(f"captions of image {i} must be a list of strings, got {type(caps).__name__}.")
        for r, c in enumerate(caps):
            if not isinstance(c, str):
                raise TypeError(f"caption {r} of image {i} is a {type(c).__name__}, expected str.")
            flat.append(c)
            ids.append(i)
    if not flat:
        raise ValueError("No captions to evaluate: every image has an empty caption list.")
    return flat, np.asarray(ids, dtype=np.int64)


def evaluate_retrieval(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    captions_per_image: Sequence[Sequence[str]],
    *,
    batch_size: int = 32,
    text_batch_size: int = 128,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
    num_workers: int = 0,
) -> EvaluationResult:
    """Encode ``images`` and their captions and compute the retrieval metrics (docs/method.md, section 7)."""
    if len(images) != len(captions_per_image):
        raise ValueError(
            f"Got {len(images)} images but {len(captions_per_image)} caption lists; "
            f"need one list of captions per image."
        )
    if len(images) == 0:
        raise ValueError("Nothing to evaluate: the split has no images.")
    captions, ids = flatten_captions(captions_per_image)
    image_embeds = encode_images(
        model, processor, images, batch_size=batch_size, progress=progress, num_workers=num_workers
    )
    text_embeds = encode_texts(model, processor, captions, batch_size=text_batch_size, progress=progress)
    metrics = retrieval_metrics_from_embeddings(image_embeds, text_embeds, ids, normalize=False, ks=ks)
    return EvaluationResult(metrics, image_embeds, text_embeds, captions, ids)


class _ColumnView(Sequence):
    """Lazy, indexable view of one column of a ``datasets.Dataset`` (decodes on access)."""

    def __init__(self, dataset: Any, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        return self.dataset[int(i)][self.column]


def evaluate_corpus(
    model: Any,
    processor: Any,
    dataset: Any,
    *,
    image_column: str = "image",
    captions_column: str = "captions",
    max_images: int | None = None,
    **kwargs: Any,
) -> EvaluationResult:
    """:func:`evaluate_retrieval` on a corpus split (``datasets.Dataset``, one row per image)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        raise TypeError(f"`dataset` must be a datasets.Dataset split, got {type(dataset).__name__}.")
    missing = [c for c in (image_column, captions_column) if c not in columns]
    if missing:
        raise ValueError(
            f"The corpus split lacks column(s) {missing}; it has {columns}. Expected one row per image "
            f"with '{image_column}' and '{captions_column}' (a list of captions)."
        )
    if max_images is not None:
        dataset = dataset.select(range(min(max_images, len(dataset))))
    captions = dataset[captions_column]
    images = _ColumnView(dataset.select_columns([image_column]), image_column)
    return evaluate_retrieval(model, processor, images, captions, **kwargs)
