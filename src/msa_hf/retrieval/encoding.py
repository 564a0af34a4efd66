"""The one image and text encoder (model loading and identity live in :mod:`msa_hf.sources`).

Every caller (``msa-eval``, the default job, training's evaluation, the index builder,
search by image, ``msa-classify``) reads images through :func:`msa_hf.data.views.image_loader`
(a ``DataLoader`` whose workers decode and preprocess) and embeds them with
:func:`encode_image_batches`; texts go through :func:`encode_texts`.

Everything here returns **L2-normalised float32 embeddings on the CPU**: retrieval in this
package is the dot product of normalised embeddings (docs/method.md, section 7), so normalising once at encode
time makes every later similarity a plain matrix product.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from msa_hf.data.images import ImageLoadError
from msa_hf.data.views import ImageListView, MSADataCollator, image_loader

__all__ = [
    "EncodedBatch",
    "encode_image_batches",
    "encode_image_list",
    "encode_images",
    "encode_texts",
    "image_features",
    "model_device",
    "progress_bar",
    "text_features",
]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "img", initial: int = 0) -> Any:
    """The tqdm bar every encoder shows (``enabled=False`` keeps logs and tests quiet)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, initial=initial, dynamic_ncols=True)


@torch.inference_mode()
def image_features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised float32 CPU image embeddings of preprocessed ``pixel_values`` (the one call
    into the model's image side)."""
    dtype = next(model.parameters()).dtype
    pixel_values = pixel_values.to(device=model_device(model), dtype=dtype, non_blocking=True)
    feats = model.embed_images(pixel_values)
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()


@torch.inference_mode()
def text_features(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised float32 CPU text embeddings of tokenised captions (the one call into the
    model's text side)."""
    device = model_device(model)
    feats = model.embed_texts(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device) if attention_mask is not None else None
    )
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()


@dataclass
class EncodedBatch:
    """Embeddings of one loader batch: ``ids[i]`` (the rows' ``image_id`` or ``row``) goes with
    ``embeddings[i]``; ``failures`` are ``(id, reason)`` of rows left out (unreadable,
    undecodable, or a non-finite embedding, which is never returned); ``columns`` holds the
    loader's ``keep_columns`` for the kept rows."""

    ids: list[int]
    embeddings: torch.Tensor
    failures: list[tuple[int, str]] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)


_BATCH_KEYS = ("pixel_values", "image_ids", "failures")


def encode_image_batches(model: Any, loader: Any, *, bar: Any = None) -> Iterator[EncodedBatch]:
    """Embed every batch of an :func:`~msa_hf.data.views.image_loader`, in loader order.

    A row whose embedding has a NaN or an infinity (e.g. NaN nodata pixels) moves to
    ``failures``: a non-finite vector would rank arbitrarily in every later search.
    ``bar`` (a :func:`progress_bar`) advances by the rows of each batch.
    """
    for batch in loader:
        if "pixel_values" in batch and "image_ids" not in batch:
            raise ValueError("The loader's rows carry no id column: build it with image_loader(..., id_column=...).")
        ids = [int(i) for i in batch["image_ids"].tolist()] if "image_ids" in batch else []
        failures = [(int(i), str(reason)) for i, reason in batch.get("failures", [])]
        columns = {k: list(v) for k, v in batch.items() if k not in _BATCH_KEYS}
        if "pixel_values" in batch and ids:
            embeddings = image_features(model, batch["pixel_values"])
            finite = torch.isfinite(embeddings).all(dim=1)
            if not bool(finite.all()):
                keep = finite.tolist()
                failures += [
                    (i, "non-finite embedding (NaN or infinite pixel values?)") for i, ok in zip(ids, keep) if not ok
                ]
                ids = [i for i, ok in zip(ids, keep) if ok]
                columns = {k: [v for v, ok in zip(vs, keep) if ok] for k, vs in columns.items()}
                embeddings = embeddings[finite]
        else:
            embeddings = torch.zeros(0, 0)
        if bar is not None:
            bar.update(len(ids) + len(failures))
        yield EncodedBatch(ids, embeddings, failures, columns)


def encode_image_list(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    *,
    root: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "Encoding images",
) -> EncodedBatch:
    """Embed a list of images, leaving out (and listing) the ones that cannot be embedded.

    ``images`` may hold PIL images, arrays, tensors or file paths (relative to ``root`` if
    given), read and decoded in ``num_workers`` loader workers. The result's ``ids`` are
    positions in ``images``; ``failures`` are ``(position, reason)``.
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if len(images) == 0:
        raise ValueError("`images` is empty: nothing to encode.")
    loader = image_loader(
        ImageListView(images, root),
        processor,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=model_device(model).type == "cuda",
        id_column="row",
        on_error="skip",
    )
    result = EncodedBatch([], torch.zeros(0, 0))
    parts: list[torch.Tensor] = []
    with progress_bar(len(images), desc, enabled=progress) as bar:
        for encoded in encode_image_batches(model, loader, bar=bar):
            result.ids += encoded.ids
            result.failures += encoded.failures
            if encoded.ids:
                parts.append(encoded.embeddings)
    if parts:
        result.embeddings = torch.cat(parts)
    return result


def encode_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "Encoding images",
) -> torch.Tensor:
    """L2-normalised image embeddings (``N×D`` float32, CPU), one row per image, in order.

    Any image that cannot be decoded, or whose embedding is not finite, raises
    :class:`~msa_hf.data.images.ImageLoadError` naming it; :func:`encode_image_list` (and
    :func:`msa_hf.retrieval.build_index`) skip such images instead.
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    encoded = encode_image_list(
        model, processor, images, batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc
    )
    if encoded.failures:
        row, reason = encoded.failures[0]
        more = f" (and {len(encoded.failures) - 1} more)" if len(encoded.failures) > 1 else ""
        raise ImageLoadError(f"image {row} ({_describe(images[row])}): {reason}{more}")
    return encoded.embeddings


def _describe(item: Any) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else type(item).__name__


def encode_texts(
    model: Any,
    processor: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    progress: bool = True,
    desc: str = "Encoding texts",
) -> torch.Tensor:
    """L2-normalised text embeddings (``N×D`` float32, CPU), in batches with a progress bar."""
    from torch.utils.data import DataLoader

    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("`texts` is empty: nothing to encode.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"`texts` must be strings; entry {bad[0]} is a {type(texts[bad[0]]).__name__}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    loader = DataLoader(list(texts), batch_size=batch_size, shuffle=False, collate_fn=MSADataCollator(processor))
    out: list[torch.Tensor] = []
    with progress_bar(len(texts), desc, enabled=progress, unit="txt") as bar:
        for batch in loader:
            out.append(text_features(model, batch["input_ids"], batch.get("attention_mask")))
            bar.update(len(out[-1]))
    return torch.cat(out)
