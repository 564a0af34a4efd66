"""What the training loop reads: the corpus, one item per (image, caption) pair, batches, augmentation.

The batch order is a pure function of ``(seed, epoch)``, and each pair's augmentation a pure
function of ``(seed, epoch, pair)``. That is what makes a resumed run identical to an
uninterrupted one: resuming only has to skip the batches already done, and no random state
of a data-loader worker or of Accelerate's sampler wrappers is involved.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from msa_hf import IMAGE_VIEW_GROUPS, image_view
from msa_hf.data import CorpusValidationError, ensure_synth_corpus, evaluation_view, load_corpus, training_view
from msa_hf.data.views import decode_image
from msa_hf.model_card import dataset_display_name
from msa_hf.sources import looks_like_path

from .recipe import Recipe, RecipeError

if TYPE_CHECKING:
    from .feature_cache import CachedVisionFeatures

SYNTH_CORPUS = "rs-synth"
SYNTH_DEFAULTS = {"n_images": 1000, "seed": 0, "image_size": 224}
# The image views each `augment` setting draws from (msa_hf.IMAGE_VIEW_GROUPS numbers them).
AUGMENTATIONS = {"none": (0,), **IMAGE_VIEW_GROUPS}


def default_cache_dir() -> Path:
    """``$MSA_HF_CACHE``, else ``~/.cache/msa_hf``: generated corpora and cached tower features."""
    return Path(os.environ.get("MSA_HF_CACHE", Path.home() / ".cache" / "msa_hf")).expanduser()


def _check_kwargs(function: Any, kwargs: dict[str, Any], what: str) -> None:
    accepted = [name for name in inspect.signature(function).parameters if name not in ("source", "directory")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise RecipeError(f"corpus_kwargs {unknown} are not options of {what}; accepted: {accepted}.")


def check_corpus(recipe: Recipe) -> None:
    """Fail early, before any heavy work, on a corpus that cannot exist."""
    if recipe.streaming:  # shards or a Hub id, read as they are: corpus_kwargs (loader options) do not apply
        if recipe.corpus == SYNTH_CORPUS:
            raise RecipeError(
                f"streaming=true reads Parquet shards, and {SYNTH_CORPUS!r} is generated in memory; write it with "
                "`msa-data synth --out rs` and `msa-data shard rs SHARDS`, then set corpus=SHARDS."
            )
        if recipe.corpus.startswith((".", "/", "~")) and not Path(recipe.corpus).expanduser().is_dir():
            raise RecipeError(
                f"corpus {recipe.corpus!r} is not a folder; streaming=true reads msa-data shard's output."
            )
        return
    if recipe.corpus == SYNTH_CORPUS:
        _check_kwargs(ensure_synth_corpus, recipe.corpus_kwargs, "the rs-synth generator")
        return
    if looks_like_path(recipe.corpus) and not Path(recipe.corpus).expanduser().exists():
        raise RecipeError(
            f"corpus {recipe.corpus!r} does not exist. Give a Karpathy-style JSON, a corpus folder, a Hub dataset "
            f"id, or {SYNTH_CORPUS!r} for the embedded generated corpus."
        )
    _check_kwargs(load_corpus, recipe.corpus_kwargs, "msa_hf.data.load_corpus")


def load_training_corpus(recipe: Recipe, cache_dir: Path, progress: bool) -> tuple[Any, str]:
    """The corpus as a ``DatasetDict`` and a short name for reports (``rs-synth`` is generated once, cached)."""
    if recipe.corpus == SYNTH_CORPUS:
        options = {**SYNTH_DEFAULTS, **recipe.corpus_kwargs}
        folder_name = "-".join(f"{key}{value}" for key, value in sorted(options.items()))
        corpus_json = ensure_synth_corpus(cache_dir / "rs-synth" / folder_name, progress=progress, **options)
        return load_corpus(corpus_json), SYNTH_CORPUS
    try:
        return load_corpus(recipe.corpus, **recipe.corpus_kwargs), dataset_display_name(recipe.corpus)
    except CorpusValidationError as error:  # the advice in the recipe's own keys
        raise CorpusValidationError(
            error.report, drop="corpus_kwargs.on_bad=drop", allow_outside_root="corpus_kwargs.allow_outside_root=true"
        ) from None


def _content_digest(image: dict[str, Any]) -> str:
    """An image's inline bytes, or its file's size and first and last 64 KiB: cheap, and blind to where it lies."""
    if image.get("bytes") is not None:
        return hashlib.sha256(image["bytes"]).hexdigest()
    digest = hashlib.sha256()
    with open(image["path"], "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        digest.update(str(size).encode() + stream.read(1 << 16))
        if size > 1 << 17:
            stream.seek(-(1 << 16), os.SEEK_END)
        digest.update(stream.read(1 << 16))
    return digest.hexdigest()


def corpus_fingerprint(corpus: Any) -> str:
    """SHA-256 over every split's captions and image contents: what a resume checks to be unchanged.

    Paths are left out, so a corpus moved or regenerated elsewhere (``cache_dir``) keeps its fingerprint.
    """
    import datasets

    digest = hashlib.sha256()
    for name in sorted(corpus):
        split = corpus[name]
        images = split.cast_column("image", datasets.Image(decode=False))["image"]
        record = {
            "split": name,
            "images": [_content_digest(image) for image in images],
            "captions": [list(c) for c in split["captions"]],
        }
        digest.update(json.dumps(record, sort_keys=True).encode())
    return digest.hexdigest()


def augmentation_variant(variants: tuple[int, ...], seed: int, epoch: int, key: int | str) -> int:
    """The augmentation of pair ``key`` in ``epoch``: a hash of the seed, so no RNG state (of a worker) is involved."""
    if len(variants) == 1:
        return variants[0]
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return variants[int.from_bytes(digest, "little") % len(variants)]


def normalise_caption(text: str) -> str:
    """The form in which two captions count as the same text: case, spacing and a final period ignored."""
    return " ".join(text.lower().split()).rstrip(" .")


class TrainingPairs(torch.utils.data.Dataset):
    """One item per (image, caption) pair of a split, addressed by ``(epoch, pair index)``.

    Items carry the caption, the image's row in the split (to look up cached features), its
    corpus id, the caption's text id, and the augmentation variant of this pair in this epoch;
    the image itself is decoded only when ``with_images`` (no cached features).
    """

    def __init__(self, split: Any, *, seed: int, augment: str, with_images: bool) -> None:
        import datasets

        pairs = training_view(split)
        # Images stay undecoded here and go through the one image loader (decode_image) in the collator.
        self.pairs = (
            pairs.cast_column("image", datasets.Image(decode=False))
            if with_images
            else pairs.select_columns(["caption", "image_id"])
        )
        self.with_images = with_images
        self.seed = seed
        self.variants = AUGMENTATIONS[augment]
        row_of_image = {int(image_id): row for row, image_id in enumerate(split["image_id"])}
        pair_image_ids = np.asarray(self.pairs["image_id"], dtype=np.int64)
        self.image_rows = np.array([row_of_image[int(i)] for i in pair_image_ids], dtype=np.int64)
        self.image_ids = pair_image_ids
        vocabulary: dict[str, int] = {}
        self.text_ids = np.array(
            [vocabulary.setdefault(normalise_caption(c), len(vocabulary)) for c in self.pairs["caption"]],
            dtype=np.int64,
        )
        width = max(len(captions) for captions in split["captions"])
        self.image_text_ids = np.full((len(row_of_image), width), -1, dtype=np.int64)
        filled = np.zeros(len(row_of_image), dtype=np.int64)
        for row, text_id in zip(self.image_rows, self.text_ids):
            self.image_text_ids[row, filled[row]] = text_id
            filled[row] += 1
        self.num_distinct_texts = len(vocabulary)

    def __len__(self) -> int:
        return len(self.image_rows)

    def variant(self, epoch: int, index: int) -> int:
        """The augmentation of pair ``index`` in ``epoch``: fixed by the seed, independent of any RNG state."""
        return augmentation_variant(self.variants, self.seed, epoch, index)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        row = self.pairs[int(index)]
        item = {
            "caption": row["caption"],
            "image_row": int(self.image_rows[index]),
            "image_id": int(self.image_ids[index]),
            "text_id": int(self.text_ids[index]),
            "variant": self.variant(epoch, index),
        }
        if self.with_images:
            item["image"] = row["image"]
        return item


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, pair index)`` keys: a seeded permutation per epoch, sharded over processes.

    Process ``rank`` of ``world_size`` takes batches ``rank, rank + N, ...`` of the global order;
    every process gets the same number of full batches (the shuffled remainder is dropped, so
    each step sees ``N × batch_size`` distinct pairs). ``start(epoch, skip)`` resumes mid-epoch.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0) -> None:
        if num_items < batch_size * world_size:
            raise RecipeError(
                f"The training split has {num_items} (image, caption) pairs, fewer than one global batch of "
                f"{batch_size * world_size} (per_device_batch_size {batch_size} × {world_size} processes); "
                "lower per_device_batch_size."
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def start(self, epoch: int, skip: int = 0) -> None:
        """Iterate ``epoch`` from its batch ``skip`` on."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        step = self.batch_size * self.world_size
        for batch in range(self.skip, len(self)):
            start = batch * step + self.rank * self.batch_size
            yield [(self.epoch, index) for index in order[start : start + self.batch_size]]


class TrainingCollator:
    """Tokenise captions and attach images (augmented) or cached image-tower features, plus the ids the losses use."""

    def __init__(self, processor: Any, pairs: TrainingPairs, cached_features: CachedVisionFeatures | None) -> None:
        self.processor = processor
        self.image_text_ids = torch.from_numpy(pairs.image_text_ids)
        self.cached_features = cached_features
        self.variant_slot = {variant: slot for slot, variant in enumerate(pairs.variants)}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rows = torch.tensor([item["image_row"] for item in items])
        variants = [item["variant"] for item in items]
        batch = dict(self.processor(text=[item["caption"] for item in items], return_tensors="pt"))
        if self.cached_features is None:
            size = self.processor.image_processor.image_size
            images = [decode_image(item["image"], size) for item in items]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            batch["pixel_values"] = torch.stack([image_view(p, v) for p, v in zip(pixels, variants)])
        else:
            slots = torch.tensor([self.variant_slot[v] for v in variants])
            batch.update(self.cached_features.select(slots, rows))
        batch["image_ids"] = torch.tensor([item["image_id"] for item in items])
        batch["text_ids"] = torch.tensor([item["text_id"] for item in items])
        batch["image_text_ids"] = self.image_text_ids[rows]
        return batch


def image_batches(split: Any, processor: Any, batch_size: int, num_workers: int) -> Any:
    """Batches of ``pixel_values`` of a split's images in row order (the evaluation loader)."""
    return evaluation_view(split).image_loader(processor, batch_size=batch_size, num_workers=num_workers)


__all__ = [
    "AUGMENTATIONS",
    "SYNTH_CORPUS",
    "EpochBatchSampler",
    "TrainingCollator",
    "TrainingPairs",
    "augmentation_variant",
    "check_corpus",
    "corpus_fingerprint",
    "default_cache_dir",
    "image_batches",
    "load_training_corpus",
    "normalise_caption",
]
