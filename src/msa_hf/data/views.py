"""Training and evaluation views of a corpus split, and the collator that feeds the model.

Why views rather than copies: the corpus stores one row per image with image *paths*; the
training recipe wants one row per (image, caption) pair (docs/method.md, section 6) and evaluation wants all
images plus the flattened captions with their image index (docs/method.md, section 7). Both views keep the
image column as ``datasets.Image``, so a ``DataLoader`` decodes images in its workers, only
when a row is read.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets
    import torch

__all__ = ["training_view", "evaluation_view", "EvalView", "MSADataCollator"]


def _require(ds: Any, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{what} needs columns {list(columns)} (a split from load_corpus); missing {missing}, "
            f"found {ds.column_names}."
        )


def training_view(split: datasets.Dataset) -> datasets.Dataset:
    """One row per (image, caption) pair: ``image``, ``caption``, ``image_id``, ``file_name``.

    ``image_id`` is kept so the loss can tell that two captions of the same image in one
    batch are not negatives of each other. Images are not decoded here.
    """
    import datasets

    _require(split, ["image", "captions", "image_id", "file_name"], "training_view")
    raw = split.cast_column("image", datasets.Image(decode=False))

    def explode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"image": [], "caption": [], "image_id": [], "file_name": []}
        for image, captions, image_id, file_name in zip(
            batch["image"], batch["captions"], batch["image_id"], batch["file_name"]
        ):
            for caption in captions:
                out["image"].append(image)
                out["caption"].append(caption)
                out["image_id"].append(image_id)
                out["file_name"].append(file_name)
        return out

    features = datasets.Features(
        {
            "image": datasets.Image(decode=False),
            "caption": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
        }
    )
    pairs = raw.map(explode, batched=True, remove_columns=raw.column_names, features=features, desc="training pairs")
    return pairs.cast_column("image", datasets.Image())


@dataclass
class EvalView:
    """What retrieval metrics need from one split.

    ``images`` is the split itself (lazy ``image`` column, ``image_id``); ``captions`` are
    all captions flattened image by image; ``caption_image_ids[j]`` is the *row index* in
    ``images`` of caption ``j``'s image (the ``caption_image_ids`` argument of
    :func:`msa_hf.retrieval.retrieval_metrics`); ``image_ids`` are the corpus ids per row.
    """

    images: datasets.Dataset
    captions: list[str]
    caption_image_ids: np.ndarray
    image_ids: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def image_loader(self, processor: Any, batch_size: int = 64, num_workers: int = 0) -> torch.utils.data.DataLoader:
        """Batches of ``pixel_values`` (+ ``image_ids``) in row order, decoded in the workers."""
        from torch.utils.data import DataLoader

        return DataLoader(
            self.images,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=MSADataCollator(processor, text_column=None),
        )

    def caption_loader(self, processor: Any, batch_size: int = 256) -> torch.utils.data.DataLoader:
        """Batches of tokenised captions (``input_ids``, ``attention_mask``) in caption order."""
        from torch.utils.data import DataLoader

        return DataLoader(
            self.captions,
            batch_size=batch_size,
            shuffle=False,
            collate_fn=MSADataCollator(processor, image_column=None, id_column=None),
        )


def evaluation_view(split: datasets.Dataset) -> EvalView:
    """Images, flattened captions and the caption -> image index for retrieval evaluation."""
    _require(split, ["image", "captions", "image_id"], "evaluation_view")
    captions_per_image = split["captions"]  # reads only this column: no image is decoded
    counts = np.array([len(c) for c in captions_per_image], dtype=np.int64)
    return EvalView(
        images=split.select_columns(["image", "image_id"]),
        captions=[c for caps in captions_per_image for c in caps],
        caption_image_ids=np.repeat(np.arange(len(counts), dtype=np.int64), counts),
        image_ids=np.asarray(split["image_id"], dtype=np.int64),
    )


def _as_image(value: Any) -> Any:
    """Decode an undecoded ``datasets.Image`` value (``{"path", "bytes"}``); pass others through."""
    if isinstance(value, Mapping) and ("path" in value or "bytes" in value):
        from PIL import Image

        data = value.get("bytes")
        image = Image.open(io.BytesIO(data) if data is not None else value["path"])
        image.load()
        return image
    return value


class MSADataCollator:
    """Turn a list of rows into model inputs with one batched ``MSAProcessor`` call.

    Rows are dicts from :func:`training_view` (``image``, ``caption``, ``image_id``) or from
    a split / :class:`EvalView` (images only), or plain caption strings. The output is the
    processor's ``BatchFeature`` (``pixel_values`` and/or ``input_ids`` + ``attention_mask``)
    plus ``image_ids`` (LongTensor) when the rows carry them.

    Example:
        >>> from torch.utils.data import DataLoader  # doctest: +SKIP
        >>> loader = DataLoader(training_view(corpus["train"]), batch_size=32, shuffle=True,
        ...                     num_workers=4, collate_fn=MSADataCollator(processor))  # doctest: +SKIP
    """

    def __init__(
        self,
        processor: Any,
        *,
        image_column: str | None = "image",
        text_column: str | None = "caption",
        id_column: str | None = "image_id",
        **processor_kwargs: Any,
    ) -> None:
        if processor is None:
            raise ValueError("MSADataCollator needs a processor (e.g. MSAProcessor.from_pretrained(...)).")
        self.processor = processor
        self.image_column = image_column
        self.text_column = text_column
        self.id_column = id_column
        self.processor_kwargs = processor_kwargs

    def __call__(self, rows: Sequence[Any]) -> Any:
        import torch

        if len(rows) == 0:
            raise ValueError("MSADataCollator got an empty batch.")
        if all(isinstance(r, str) for r in rows):
            return self.processor(text=list(rows), return_tensors="pt", **self.processor_kwargs)
        first = rows[0]
        use_images = self.image_column is not None and self.image_column in first
        use_text = self.text_column is not None and self.text_column in first
        if not use_images and not use_text:
            raise ValueError(
                f"rows have neither {self.image_column!r} nor {self.text_column!r}; got keys {sorted(first)}."
            )
        images = [_as_image(r[self.image_column]) for r in rows] if use_images else None
        texts = [r[self.text_column] for r in rows] if use_text else None
        batch = self.processor(images=images, text=texts, return_tensors="pt", **self.processor_kwargs)
        if self.id_column is not None and self.id_column in first:
            batch["image_ids"] = torch.tensor([int(r[self.id_column]) for r in rows], dtype=torch.long)
        return batch
