"""Evaluate retrieval on a corpus split: the engine of ``msa-eval``, the default job and training.

A corpus split is a ``datasets.Dataset`` with one row per image: ``image`` (a
``datasets.Image``), ``captions`` (list of str) and ``image_id``, as
``msa_hf.data.load_corpus`` returns. Its :class:`~msa_hf.data.views.EvalView` is encoded once
(images through the shared ``DataLoader`` with its workers, captions in batches) and the
metrics come from :func:`msa_hf.retrieval.retrieval_metrics_from_embeddings` without
building the full similarity matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from msa_hf.data.views import EvalView, evaluation_view

from .encoding import encode_image_batches, encode_texts, model_device, progress_bar
from .metrics import (
    DEFAULT_KS,
    TIE_RULES,
    metrics_from_ranks,
    retrieval_metrics_from_embeddings,
    retrieval_ranks_from_embeddings,
)

__all__ = ["EvaluationResult", "evaluate_corpus"]


@dataclass
class EvaluationResult:
    """Metrics plus what produced them (embeddings are L2-normalised, on the CPU).

    ``caption_image_ids[j]`` is the row in ``image_embeds`` of caption ``j``'s image;
    ``image_ids`` are the corpus ids of those rows.
    """

    metrics: dict[str, float]
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    captions: list[str]
    caption_image_ids: np.ndarray
    image_ids: np.ndarray

    def metrics_by_tie_rule(self, ks: Sequence[int] = DEFAULT_KS) -> dict[str, dict[str, float]]:
        """The metrics under every tie rule (``TIE_RULES``), from one ranking of the embeddings.

        ``"argsort"`` is the one comparable with published tables; ``"expected"`` is its
        machine-independent average; ``"pessimistic"`` counts every tie against the model.
        """
        ranks = retrieval_ranks_from_embeddings(
            self.image_embeds, self.text_embeds, self.caption_image_ids, normalize=False, argsort=True
        )
        return {rule: metrics_from_ranks(ranks, ks, rule) for rule in TIE_RULES}


def evaluate_corpus(
    model: Any,
    processor: Any,
    split: Any,
    *,
    batch_size: int = 32,
    text_batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
    max_images: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
) -> EvaluationResult:
    """Image-text retrieval metrics (docs/method.md, section 7) of ``model`` on a corpus split.

    ``split`` is a corpus split (``datasets.Dataset``) or its already-built
    :class:`~msa_hf.data.views.EvalView` (a trainer evaluating every epoch builds the view
    once). Images are decoded in ``num_workers`` loader processes and pinned when the model
    is on a GPU. ``max_images`` keeps the first N images and their captions. ``ties`` is the
    tie rule of :func:`~msa_hf.retrieval.retrieval_metrics` (tied competitors rank ahead by default).

    Raises:
        ValueError: the split has no images or no captions, or an image cannot be decoded or
            embeds to a non-finite vector (named by its ``image_id``): metrics over a
            silently shortened split would not be comparable.
    """
    view = split if isinstance(split, EvalView) else evaluation_view(split)
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"`max_images` must be >= 1, got {max_images}.")
        view = view.head(max_images)
    if view.num_images == 0:
        raise ValueError("Nothing to evaluate: the split has no images.")
    if view.num_captions == 0:
        raise ValueError("Nothing to evaluate: no image of the split has a caption.")
    loader = view.image_loader(
        processor,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=model_device(model).type == "cuda",
        on_error="skip",  # a bad image is reported below by its image_id, not from inside a worker
    )
    chunks: list[torch.Tensor] = []
    with progress_bar(view.num_images, "Encoding images", enabled=progress) as bar:
        for encoded in encode_image_batches(model, loader, bar=bar):
            if encoded.failures:
                image_id, reason = encoded.failures[0]
                raise ValueError(f"Cannot evaluate: image_id {image_id}: {reason}")
            chunks.append(encoded.embeddings)
    image_embeds = torch.cat(chunks)
    text_embeds = encode_texts(model, processor, view.captions, batch_size=text_batch_size, progress=progress)
    metrics = retrieval_metrics_from_embeddings(
        image_embeds, text_embeds, view.caption_image_ids, normalize=False, ks=ks, ties=ties
    )
    return EvaluationResult(metrics, image_embeds, text_embeds, view.captions, view.caption_image_ids, view.image_ids)
