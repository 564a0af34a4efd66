"""What the search app does, without the web page: load once, search, rank captions, classify.

:class:`SearchService` holds one model, its processor and one loaded :class:`ImageIndex` for
the life of the app, so a query costs one text (or image) encoding plus one matrix product.
Everything that can go wrong with the user's input or setup (an empty query, a file that is
not an image, a missing or stale index, a model that does not match the index) becomes an
:class:`AppError` whose message says what was found and what to do; the page shows it instead
of results, and the app keeps serving.

Only the public API of :mod:`msa_hf.retrieval` is used here, so the app follows whatever the
command-line tools do (``msa-search``'s search, ``msa-index status``'s staleness check,
``msa-classify``'s zero-shot scores).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from msa_hf.factory import create_model_and_processor
from msa_hf.retrieval import (
    ImageIndex,
    ImageIndexError,
    ImageLoadError,
    ModelLoadError,
    SearchHit,
    StaleReport,
    encode_images,
    encode_texts,
    load_image,
    zero_shot_classify,
)
from msa_hf.retrieval.classify import DEFAULT_TEMPLATE
from msa_hf.sources import HubError

__all__ = [
    "EMPTY_QUERY_MESSAGE",
    "MAX_K",
    "AppError",
    "CaptionScore",
    "ImageSearchResult",
    "SearchService",
    "parse_lines",
]

MAX_K = 100
EMPTY_QUERY_MESSAGE = "Type a description of the scenes you are looking for, e.g. “two planes parked beside a runway”."
# Beyond this many images the page offers a free-text box instead of a list of every file.
ARCHIVE_CHOICES_LIMIT = 5000


class AppError(Exception):
    """A problem the page shows in place of results (bad input, or an index/model that cannot serve)."""


@dataclass(frozen=True)
class CaptionScore:
    """One user-given caption, ranked by cosine similarity to the query image."""

    rank: int
    score: float
    caption: str


@dataclass
class ImageSearchResult:
    """An image query's decoded image, its nearest archive images and its ranked captions."""

    query_image: Image.Image
    hits: list[SearchHit]
    captions: list[CaptionScore]
    missing: list[SearchHit]


def parse_lines(text: str | None, *, commas: bool = False) -> list[str]:
    """Non-empty stripped entries of a text box, one per line (and per comma if ``commas``).

    Example:

    ```python
    >>> parse_lines("airport, farmland\\n\\nharbor,", commas=True)
    ['airport', 'farmland', 'harbor']
    ```
    """
    parts = re.split(r"[\n,]" if commas else r"\n", text or "")
    return [p.strip() for p in parts if p.strip()]


def _seconds_to_ms(start: float) -> float:
    return 1000.0 * (time.perf_counter() - start)


class SearchService:
    """The model, processor and index of one app, loaded once, plus the last query's timing.

    ``model``/``processor`` may be ``None`` with ``model_error`` saying why (the page then shows
    that message; zero-shot classification and search are refused). The index is loaded from
    ``index_path`` by :meth:`reload_index`, which the page's *Reload index* button also calls,
    so an index that was missing or stale at start can be (re)built while the app runs.

    ``images`` overrides the image folder recorded in the index (for an archive that moved,
    e.g. an index built on one machine and served on another). ``backend``, ``nprobe`` and
    ``ef_search`` are :meth:`ImageIndex.search`'s (``None``: the index's approximate search
    with its stored settings where it has one, else exact search in torch).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        index_path: str | os.PathLike,
        *,
        model_name: str | None = None,
        model_error: str | None = None,
        images: str | os.PathLike | None = None,
        backend: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        if backend not in (None, "torch", "faiss", "ann"):
            raise ValueError(f"`backend` must be 'torch', 'faiss' or 'ann', got {backend!r}.")
        self.model = model
        self.processor = processor
        self.model_name = model_name or str(getattr(model, "name_or_path", "") or "<in-memory model>")
        self.model_error = model_error
        self.index_path = Path(index_path).expanduser()
        self.images_override = Path(images).expanduser() if images is not None else None
        self.backend = backend
        self.search_options = {"nprobe": nprobe, "ef_search": ef_search}
        self.index: ImageIndex | None = None
        self.index_error: str | None = None
        self.mismatch_error: str | None = None
        self.stale: StaleReport | None = None
        self.stale_error: str | None = None
        self.last_search_ms: float | None = None
        self._rows: dict[str, int] = {}
        self.reload_index()

    @classmethod
    def open(
        cls,
        model: str | os.PathLike,
        index: str | os.PathLike,
        *,
        images: str | os.PathLike | None = None,
        backend: str | None = None,
        device: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> SearchService:
        """Load the model (a folder or Hub id) and the index; a failure becomes a page message, not an exception."""
        try:
            loaded, processor, _ = create_model_and_processor(model, device=device)
            error = None
        except (ModelLoadError, ValueError, HubError, OSError) as exc:
            loaded, processor, error = None, None, f"The model could not be loaded: {exc}"
        return cls(
            loaded,
            processor,
            index,
            model_name=str(model),
            model_error=error,
            images=images,
            backend=backend,
            nprobe=nprobe,
            ef_search=ef_search,
        )

    # ------------------------------------------------------------------ index state
    def reload_index(self) -> None:
        """(Re)load the index from disk, check it against the model and against its image folder.

        The new state is assembled first and swapped in at the end, so a query running meanwhile
        sees either the old index or the new one, never a half-updated service.
        """
        index, index_error, mismatch_error, stale, stale_error = self._load_index()
        self.index, self.index_error, self.mismatch_error = index, index_error, mismatch_error
        self.stale, self.stale_error = stale, stale_error
        self._rows = {rel: row for row, rel in enumerate(index.files)} if index is not None else {}

    def _load_index(self) -> tuple[ImageIndex | None, str | None, str | None, StaleReport | None, str | None]:
        try:
            index = ImageIndex.load(self.index_path)
        except FileNotFoundError:
            message = (
                f"Index {self.index_path} does not exist. Build it with `msa-index build IMAGE_FOLDER "
                f"--model {self.model_name} --out {self.index_path}`, then press “Reload index”."
            )
            return None, message, None, None, None
        except ImageIndexError as exc:
            return None, f"The index cannot be used: {exc} Then press “Reload index”.", None, None, None
        except Exception as exc:  # a damaged manifest or embeddings file: say so, keep serving
            message = (
                f"Index {self.index_path} cannot be read ({type(exc).__name__}: {exc}); it is damaged. Rebuild it "
                f"with `msa-index build IMAGE_FOLDER --model {self.model_name} --out {self.index_path} --overwrite`, "
                f"then press “Reload index”."
            )
            return None, message, None, None, None
        try:
            index.search_settings(self.backend, **self.search_options)
        except ValueError as exc:
            return (
                None,
                f"The index cannot be searched as asked: {exc} Restart msa-app with settings it takes.",
                None,
                None,
                None,
            )
        mismatch_error = None
        if self.model is not None:
            try:
                index.check_model(self.model)
            except ImageIndexError as exc:
                mismatch_error = str(exc)
        root = self.images_override if self.images_override is not None else index.root
        try:
            return index, None, mismatch_error, index.stale_files(root), None
        except OSError as exc:  # missing, not a folder, not readable
            stale_error = (
                f"The image folder of the index is not available ({exc}); results cannot be shown. "
                f"Start the app with --images pointing at the archive's new place."
            )
            return index, None, mismatch_error, None, stale_error

    @property
    def image_root(self) -> Path:
        """Where the indexed files are now: ``--images`` if given, else the folder recorded at build time."""
        if self.images_override is not None:
            return self.images_override
        return self.index.root if self.index is not None else Path()

    @property
    def archive_files(self) -> list[str]:
        """Indexed files (relative paths) in row order; empty when no index is loaded."""
        return self.index.files if self.index is not None else []

    def status(self) -> dict[str, Any]:
        """Model, index size and dimension, staleness and the last search time, for the status line."""
        index = self.index
        return {
            "model": self.model_name,
            "model_error": self.model_error,
            "index": str(self.index_path),
            "index_error": self.index_error,
            "mismatch_error": self.mismatch_error,
            "num_images": len(index) if index is not None else None,
            "embedding_dim": int(index.embeddings.shape[1]) if index is not None else None,
            "image_root": str(self.image_root) if index is not None else None,
            "stale": self.stale.is_stale if self.stale is not None else None,
            "stale_summary": self.stale.summary() if self.stale is not None else None,
            "stale_counts": (
                {k: len(getattr(self.stale, k)) for k in ("added", "removed", "modified")}
                if self.stale is not None
                else None
            ),
            "stale_error": self.stale_error,
            "backend": index.search_settings(self.backend, **self.search_options)
            if index is not None
            else self.backend,
            "last_search_ms": self.last_search_ms,
        }

    def _require_model(self) -> None:
        if self.model is None:
            raise AppError(self.model_error or "No model is loaded.")

    def _require_index(self) -> ImageIndex:
        self._require_model()
        if self.index is None:
            raise AppError(self.index_error or f"No index is loaded from {self.index_path}.")
        if self.mismatch_error:
            raise AppError(self.mismatch_error)
        return self.index

    @staticmethod
    def _check_k(k: Any) -> int:
        try:
            value = int(k)
        except (TypeError, ValueError):
            raise AppError(f"The number of results must be a whole number from 1 to {MAX_K}, got {k!r}.") from None
        if not 1 <= value <= MAX_K:
            raise AppError(f"The number of results must be from 1 to {MAX_K}, got {value}.")
        return value

    def _located(self, hits: Sequence[SearchHit]) -> tuple[list[SearchHit], list[SearchHit]]:
        """Hits with paths under the current image folder, split into (present, missing on disk)."""
        root = self.image_root
        moved = [dataclasses.replace(h, path=str(root / h.relpath)) for h in hits]
        return [h for h in moved if os.path.isfile(h.path)], [h for h in moved if not os.path.isfile(h.path)]

    # ------------------------------------------------------------------ queries
    def search_text(self, query: str | None, k: Any = 8) -> tuple[list[SearchHit], list[SearchHit]]:
        """The top ``k`` archive images for a text query: (hits whose files exist, hits whose files are gone)."""
        text = (query or "").strip()
        if not text:
            raise AppError(EMPTY_QUERY_MESSAGE)
        k = self._check_k(k)
        index = self._require_index()
        start = time.perf_counter()
        hits = index.search_text(text, self.model, self.processor, k=k, backend=self.backend, **self.search_options)[0]
        self.last_search_ms = _seconds_to_ms(start)
        return self._located(hits)

    def query_image(self, upload: str | os.PathLike | None, archive_file: str | None) -> tuple[Image.Image, int | None]:
        """The query image from an upload or an archive pick, and its index row when it is an archive image."""
        if upload:
            name = Path(upload).name
            try:
                return load_image(upload), None
            except (ImageLoadError, OSError) as exc:
                cause = exc.__cause__ or exc
                detail = str(cause).replace(f"'{upload}'", name).replace(str(upload), name)  # no server paths
                raise AppError(
                    f"The uploaded file {name} is not an image that can be read ({type(cause).__name__}: {detail}). "
                    f"Upload a PNG, JPEG or TIFF image."
                ) from None
        if archive_file:
            index = self._require_index()
            row = self._rows.get(archive_file.strip())
            if row is None:
                raise AppError(
                    f"{archive_file} is not in the index ({len(index)} images under {self.image_root}); "
                    f"pick a file from the list, as a path relative to that folder."
                )
            path = self.image_root / index.files[row]
            try:
                return load_image(path), row
            except (ImageLoadError, OSError) as exc:
                raise AppError(
                    f"Archive image {path} can no longer be read ({exc}); the index is stale: rebuild it."
                ) from None
        raise AppError("Upload an image or pick one from the archive.")

    def search_image(
        self,
        upload: str | os.PathLike | None = None,
        archive_file: str | None = None,
        k: Any = 8,
        captions: Sequence[str] = (),
    ) -> ImageSearchResult:
        """Nearest archive images to a query image (itself left out when it is an archive image), and its captions ranked."""
        k = self._check_k(k)
        image, row = self.query_image(upload, archive_file)
        index = self._require_index()
        start = time.perf_counter()
        if row is not None:
            # The index already holds this image's embedding: no encoding, and exactly what the archive stores.
            embedding = index.embeddings[row : row + 1]
            hits = [
                h
                for h in index.search(embedding, k=min(k + 1, len(index)), backend=self.backend, **self.search_options)[
                    0
                ]
                if h.row != row
            ]
            hits = [dataclasses.replace(h, rank=n) for n, h in enumerate(hits[:k], start=1)]
        else:
            embedding = encode_images(self.model, self.processor, [image], progress=False)
            hits = index.search(embedding, k=k, backend=self.backend, **self.search_options)[0]
        self.last_search_ms = _seconds_to_ms(start)
        present, missing = self._located(hits)
        return ImageSearchResult(image, present, self._rank_captions(embedding, captions), missing)

    def _rank_captions(self, image_embedding: torch.Tensor, captions: Sequence[str]) -> list[CaptionScore]:
        captions = [c for c in (c.strip() for c in captions) if c]
        if not captions:
            return []
        scores = (encode_texts(self.model, self.processor, captions, progress=False) @ image_embedding.t()).squeeze(1)
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        return [CaptionScore(n, float(scores[i]), captions[i]) for n, i in enumerate(order, start=1)]

    def classify(
        self,
        upload: str | os.PathLike | None,
        archive_file: str | None,
        labels: Sequence[str],
        template: str | None = None,
    ) -> tuple[Image.Image, dict[str, float]]:
        """Zero-shot label probabilities of one image (``msa-classify``'s scores), highest first."""
        self._require_model()
        image, _ = self.query_image(upload, archive_file)
        template = (template or "").strip() or DEFAULT_TEMPLATE
        start = time.perf_counter()
        try:
            result = zero_shot_classify(
                [image], list(labels), self.model, self.processor, templates=template, progress=False
            )
        except ValueError as exc:  # too few labels, duplicates, a template without {}
            raise AppError(str(exc)) from None
        self.last_search_ms = _seconds_to_ms(start)
        probs = dict(zip(result.labels, result.probs[0].tolist()))
        return image, dict(sorted(probs.items(), key=lambda kv: -kv[1]))
