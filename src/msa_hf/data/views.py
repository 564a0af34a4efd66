"""Views of a corpus split or a list of images, and the collator and loader that feed the model.

Why views rather than copies: the corpus stores one row per image with image *paths*; the
training recipe wants one row per (image, caption) pair (docs/method.md, section 6),
evaluation wants all images plus the flattened captions with their image index
(docs/method.md, section 7), and the index builder wants a list of files. The evaluation and
file views keep images undecoded; :class:`MSADataCollator` decodes them with
:func:`msa_hf.data.images.load_image` inside the ``DataLoader`` workers, so a batch is
decoded in parallel, only when it is read, and huge scenes at a reduced scale.
:func:`image_loader` is the one place a ``DataLoader`` over images is built.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .images import ImageLoadError, load_image, read_regular_file

if TYPE_CHECKING:
    import datasets
    import torch

__all__ = [
    "training_view",
    "evaluation_view",
    "EvalView",
    "ImageListView",
    "MSADataCollator",
    "decode_image",
    "image_loader",
]


def _require(ds: Any, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in getattr(ds, "column_names", ())]
    if missing:
        raise ValueError(
            f"{what} needs a corpus split with columns {list(columns)} (one row per image, as load_corpus "
            f"returns); missing {missing}, found {getattr(ds, 'column_names', type(ds).__name__)}."
        )


def _undecoded(split: datasets.Dataset, column: str = "image") -> datasets.Dataset:
    import datasets

    return split.cast_column(column, datasets.Image(decode=False))


def training_view(split: datasets.Dataset) -> datasets.Dataset:
    """One row per (image, caption) pair: ``image``, ``caption``, ``image_id``, ``file_name``.

    ``image_id`` is kept so the loss can tell that two captions of the same image in one
    batch are not negatives of each other. Images are not decoded here: ``datasets`` decodes
    a row's image when the row is read (in the loader workers).
    """
    import datasets

    _require(split, ["image", "captions", "image_id", "file_name"], "training_view")
    raw = _undecoded(split)

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

    ``images`` is the split's ``image`` (undecoded) and ``image_id`` columns; ``captions``
    are all captions flattened image by image; ``caption_image_ids[j]`` is the *row index*
    in ``images`` of caption ``j``'s image (the ``caption_image_ids`` argument of
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

    def head(self, n: int) -> EvalView:
        """The first ``n`` images and their captions (quick checks, ``--max-images``)."""
        if n >= self.num_images:
            return self
        keep = self.caption_image_ids < n
        return EvalView(
            images=self.images.select(range(n)),
            captions=[c for c, k in zip(self.captions, keep) if k],
            caption_image_ids=self.caption_image_ids[keep],
            image_ids=self.image_ids[:n],
        )

    def image_loader(
        self,
        processor: Any,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> torch.utils.data.DataLoader:
        """Batches of ``pixel_values`` (+ ``image_ids``) in row order, decoded in the workers."""
        return image_loader(
            self.images,
            processor,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            on_error=on_error,
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
        images=_undecoded(split.select_columns(["image", "image_id"])),
        captions=[c for caps in captions_per_image for c in caps],
        caption_image_ids=np.repeat(np.arange(len(counts), dtype=np.int64), counts),
        image_ids=np.asarray(split["image_id"], dtype=np.int64),
    )


class ImageListView:
    """A list of images (PIL, arrays, tensors or file paths) as rows for :func:`image_loader`.

    Row ``i`` is ``{"image": ..., "row": i}``. A path is read in the worker, as
    ``{"path", "bytes"}`` like an undecoded ``datasets.Image``, plus ``"sha256"`` of the
    bytes when ``hash_files`` (the index records content hashes, so it can tell a modified
    or moved file without decoding it twice). A file that cannot be read becomes a row with
    an ``"error"``, which the collator reports instead of crashing the worker.

    Example:

    ```python
    >>> from PIL import Image
    >>> ImageListView([Image.new("RGB", (8, 8))])[0]["row"]
    0
    ```
    """

    def __init__(
        self, items: Sequence[Any], root: str | os.PathLike | None = None, *, hash_files: bool = False
    ) -> None:
        self.items = items
        self.root = Path(root) if root is not None else None
        self.hash_files = hash_files

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        if not isinstance(item, (str, os.PathLike)):
            return {"image": item, "row": i}
        path = self.root / item if self.root is not None else Path(item)
        try:
            data = read_regular_file(path)
        except OSError as exc:
            return {"image": None, "row": i, "error": f"cannot read {path} ({type(exc).__name__}: {exc})"}
        row = {"image": {"path": str(path), "bytes": data}, "row": i}
        if self.hash_files:
            row["sha256"] = hashlib.sha256(data).hexdigest()
        return row


def decode_image(value: Any, target_size: int | None = None) -> Any:
    """A decoded image from a row's image value: ``{"path", "bytes"}`` (an undecoded
    ``datasets.Image``) or a path go through :func:`load_image`; decoded images pass through."""
    if isinstance(value, Mapping) and ("path" in value or "bytes" in value):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is None:
            raise ImageLoadError("the row has no image (neither a path nor bytes)")
        return load_image(data if data is not None else path, target_size=target_size, name=path)
    if isinstance(value, (str, os.PathLike)):
        return load_image(value, target_size=target_size)
    return value


class MSADataCollator:
    """Turn a list of rows into model inputs with one batched ``MSAProcessor`` call.

    Rows are dicts from :func:`training_view` (``image``, ``caption``, ``image_id``), from
    :class:`EvalView` or :class:`ImageListView` (images only), or plain caption strings.
    Undecoded images are decoded with :func:`~msa_hf.data.images.load_image` at the
    processor's size. The output is the processor's ``BatchFeature`` (``pixel_values``
    and/or ``input_ids`` + ``attention_mask``) plus ``image_ids`` (LongTensor, from
    ``id_column``) when the rows carry them, and one list per ``keep_columns`` entry.

    ``on_error="skip"`` leaves out rows whose image cannot be read, decoded or processed
    and lists them as ``batch["failures"]`` (``(id, reason)`` pairs), so one bad file in an
    archive does not stop a build; ``"raise"`` (default) raises :class:`ImageLoadError`.

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
        keep_columns: Sequence[str] = (),
        on_error: Literal["raise", "skip"] = "raise",
        **processor_kwargs: Any,
    ) -> None:
        if processor is None:
            raise ValueError("MSADataCollator needs a processor (e.g. MSAProcessor.from_pretrained(...)).")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"`on_error` must be 'raise' or 'skip', got {on_error!r}.")
        self.processor = processor
        self.image_column = image_column
        self.text_column = text_column
        self.id_column = id_column
        self.keep_columns = tuple(keep_columns)
        self.on_error = on_error
        self.processor_kwargs = processor_kwargs
        image_processor = getattr(processor, "image_processor", processor)
        self.target_size: int | None = getattr(image_processor, "image_size", None)

    def _decode(self, row: Mapping[str, Any]) -> Any:
        if row.get("error"):
            raise ImageLoadError(row["error"])
        return decode_image(row[self.image_column], self.target_size)

    def _process(self, images: list[Any] | None, texts: list[str] | None) -> Any:
        return self.processor(images=images, text=texts, return_tensors="pt", **self.processor_kwargs)

    def __call__(self, rows: Sequence[Any]) -> Any:
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
        failures: list[tuple[Any, str]] = []
        kept = list(rows)
        images = None
        if use_images:
            kept, images = [], []
            for row in rows:
                try:
                    image = self._decode(row)
                except (ImageLoadError, OSError) as exc:
                    if self.on_error == "raise":
                        raise
                    failures.append((self._id(row), str(exc)))
                    continue
                kept.append(row)
                images.append(image)
        batch = self._processed(kept, images, use_text, failures)
        return self._with_columns(batch, kept, failures)

    def _id(self, row: Mapping[str, Any]) -> Any:
        return row.get(self.id_column) if self.id_column is not None else None

    def _processed(
        self, kept: list[Any], images: list[Any] | None, use_text: bool, failures: list[tuple[Any, str]]
    ) -> Any:
        """One processor call for the batch; in skip mode, a batch the processor refuses is
        retried image by image so that only the bad image is left out."""
        from transformers import BatchFeature

        if not kept:
            return BatchFeature({})
        texts = [r[self.text_column] for r in kept] if use_text else None
        try:
            return self._process(images, texts)
        except (ValueError, TypeError):
            if self.on_error == "raise" or images is None:
                raise
        good: list[int] = []
        for i, image in enumerate(images):
            try:
                self._process([image], None)
                good.append(i)
            except (ValueError, TypeError) as exc:
                failures.append((self._id(kept[i]), f"cannot preprocess image: {exc}"))
        kept[:] = [kept[i] for i in good]
        if not kept:
            return BatchFeature({})
        return self._process([images[i] for i in good], [texts[i] for i in good] if texts else None)

    def _with_columns(self, batch: Any, kept: list[Any], failures: list[tuple[Any, str]]) -> Any:
        import torch

        first = kept[0] if kept else {}
        if self.id_column is not None and (self.id_column in first or not kept):
            batch["image_ids"] = torch.tensor([int(r[self.id_column]) for r in kept], dtype=torch.long)
        for column in self.keep_columns:
            batch[column] = [r.get(column) for r in kept]
        if self.on_error == "skip":
            batch["failures"] = failures
        return batch


def image_loader(
    dataset: Any,
    processor: Any,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    pin_memory: bool = False,
    id_column: str = "image_id",
    keep_columns: Sequence[str] = (),
    on_error: Literal["raise", "skip"] = "raise",
    batch_sampler: Any = None,
) -> torch.utils.data.DataLoader:
    """The ``DataLoader`` every image encoder reads: rows of ``dataset`` in order, decoded and
    preprocessed in ``num_workers`` worker processes, pinned for a fast copy to the GPU.

    ``dataset`` is a split / :class:`EvalView` ``images`` (``id_column="image_id"``) or an
    :class:`ImageListView` (``id_column="row"``). ``batch_sampler`` (lists of row indices)
    replaces ``batch_size`` when a caller needs batches that respect its own boundaries.
    """
    from torch.utils.data import DataLoader

    if batch_sampler is None and batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if num_workers < 0:
        raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
    collate = MSADataCollator(
        processor, text_column=None, id_column=id_column, keep_columns=keep_columns, on_error=on_error
    )
    batching: dict[str, Any] = (
        {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size, "shuffle": False}
    )
    return DataLoader(
        dataset,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        persistent_workers=False,
        **batching,
    )
