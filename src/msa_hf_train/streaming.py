"""The train split streamed (``streaming: true``): Parquet shards read as a ``datasets.IterableDataset``.

Why not ``IterableDataset.shuffle``: its buffer is refilled from scratch when a run resumes from
``state_dict`` ("examples from shuffle buffers are lost"), so a resumed run would train on other
batches than an uninterrupted one. Here the shuffle is in blocks: per epoch the shard files are
put in a seeded order, the stream is split over processes with
``datasets.distributed.split_dataset_by_node``, and each process reads ``shuffle_buffer`` pairs
at a time and permutes them with a seed of ``(seed, epoch, rank, block)``. A position is then
the iterable's ``state_dict`` at the block's start plus an offset into the block, which a
checkpoint stores and a resume restores exactly. Images are decoded in DataLoader workers; an
image that does not decode is skipped and counted, and batches are refilled so that every
process trains on full batches (the features are gathered across processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msa_hf import image_view
from msa_hf.cli_utils import UsageError
from msa_hf.data.images import ImageLoadError
from msa_hf.data.shard import shard_files
from msa_hf.data.views import decode_image

from .data import AUGMENTATIONS, augmentation_variant, normalise_caption
from .recipe import Recipe, RecipeError

logger = logging.getLogger("msa_hf_train")
STREAM_COLUMNS = ("image", "captions", "image_id")
MANIFEST = "shards.json"
# Caption slots per image in ``image_text_ids`` when the corpus does not say (no shards.json).
DEFAULT_MAX_CAPTIONS = 16
EXAMPLES_KEPT = 20  # undecodable images named in the report


class TooManyBadImages(UsageError):
    """More than ``max_bad_fraction`` of the streamed images did not decode (exit 2)."""


@dataclasses.dataclass
class StreamSource:
    """Where a streamed corpus lies: the Parquet files of each split and what its manifest says."""

    name: str
    files: dict[str, list[str]]  # split -> local paths or hf:// URLs
    train_pairs: int | None  # from shards.json; None when unknown
    max_captions: int

    def fingerprint(self) -> str:
        """The train files (names and, when local, sizes): what a resume checks to be unchanged."""
        listing = [[Path(f).name, Path(f).stat().st_size if Path(f).is_file() else f] for f in self.files["train"]]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _manifest_facts(manifest: dict[str, Any]) -> tuple[int | None, int]:
    train = manifest.get("splits", {}).get("train", {})
    return train.get("pairs"), max(
        (s.get("max_captions", 0) for s in manifest.get("splits", {}).values()), default=0
    ) or DEFAULT_MAX_CAPTIONS


def resolve_stream_source(corpus: str, revision: str | None = None) -> StreamSource:
    """A folder written by ``msa-data shard`` or a Hub dataset id of Parquet files in that layout."""
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = {split: [str(f) for f in shard_files(path, split)] for split in ("train", "validation", "test")}
        if not files["train"]:
            raise RecipeError(
                f"corpus {corpus!r} has no data/train-NNNNN-of-NNNNN.parquet shards, which streaming=true reads; "
                f"write them with `msa-data shard {corpus} SHARDS` and set corpus=SHARDS."
            )
        manifest = json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).is_file() else {}
        return StreamSource(str(path), files, *_manifest_facts(manifest))
    import datasets

    try:
        builder = datasets.load_dataset_builder(corpus, revision=revision)
    except Exception as error:  # the Hub or datasets say why in their own words
        raise RecipeError(
            f"corpus {corpus!r} is neither a folder of Parquet shards nor a Hub dataset that loads "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    files = {split: list(builder.config.data_files.get(split, [])) for split in ("train", "validation", "test")}
    if not files["train"]:
        raise RecipeError(f"Hub dataset {corpus!r} has no train data files to stream.")
    try:
        from huggingface_hub import hf_hub_download

        manifest = json.loads(
            Path(hf_hub_download(corpus, MANIFEST, repo_type="dataset", revision=revision)).read_text()
        )
    except Exception:  # no shards.json: a Parquet dataset not written by msa-data shard
        manifest = {}
    return StreamSource(corpus, files, *_manifest_facts(manifest))


def load_evaluation_splits(source: StreamSource) -> Any:
    """Validation and test as map-style ``datasets`` (small, and the protocol needs each whole)."""
    import datasets

    missing = [split for split in ("validation", "test") if not source.files[split]]
    if missing:
        raise RecipeError(
            f"corpus {source.name!r} has no {' or '.join(missing)} shards; streaming=true evaluates on both "
            "(msa-data shard writes them, carving missing ones out of train)."
        )
    splits = datasets.load_dataset(
        "parquet", data_files={split: source.files[split] for split in ("validation", "test")}
    )
    for split, ds in splits.items():
        absent = [c for c in STREAM_COLUMNS if c not in ds.column_names]
        if absent:
            raise RecipeError(
                f"corpus {source.name!r} [{split}] lacks columns {absent} (found {ds.column_names}); streaming=true "
                "reads the layout msa-data shard writes."
            )
    return splits


def text_id(caption: str) -> int:
    """A caption's id from its normalised text: the same in every process and block, never negative."""
    digest = hashlib.blake2b(normalise_caption(caption).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def processes_any(accelerator: Any, flags: Sequence[bool]) -> list[bool]:
    """For each flag, whether it is set on any process (one all-reduce for all of them)."""
    if accelerator.num_processes == 1:
        return list(flags)
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=accelerator.device)
    return [bool(v > 0) for v in accelerator.reduce(values, reduction="sum").tolist()]


class _Decoder:
    """A pair's image decoded, processed and augmented (in a DataLoader worker); its variant is fixed by the seed."""

    def __init__(self, processor: Any, variants: tuple[int, ...], seed: int, epoch: int) -> None:
        self.processor, self.variants, self.seed, self.epoch = processor, variants, seed, epoch

    def __call__(self, row: dict[str, Any], caption: int) -> torch.Tensor:
        image = decode_image(row["image"], self.processor.image_processor.image_size)
        pixels = self.processor(images=[image], return_tensors="pt")["pixel_values"][0]
        variant = augmentation_variant(self.variants, self.seed, self.epoch, f"{row['image_id']}/{caption}")
        return image_view(pixels, variant)


class _Block(torch.utils.data.Dataset):
    """One block's pairs in their permuted order; an item is the decoded, augmented image or why it failed."""

    def __init__(self, rows: list[dict[str, Any]], pairs: list[tuple[int, int]], decode: _Decoder) -> None:
        self.rows, self.pairs, self.decode = rows, pairs, decode

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        row, caption = self.pairs[index]
        try:
            return index, self.decode(self.rows[row], caption)
        except ImageLoadError as error:  # names the file: "cannot decode image NAME: ..."
            return index, str(error)


class StreamingBatches:
    """Full training batches of one process, read from the stream, with the position after each."""

    def __init__(self, source: StreamSource, processor: Any, recipe: Recipe, world_size: int, rank: int) -> None:
        self.source, self.processor, self.recipe = source, processor, recipe
        self.world_size, self.rank = world_size, rank
        self.variants = AUGMENTATIONS[recipe.augment]
        self.bad, self.seen, self.examples = 0, 0, []
        self.problem: str | None = None  # set once more than max_bad_fraction failed to decode

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch if the corpus says how many pairs it has (a block's remainder not counted)."""
        if self.source.train_pairs is None:
            return None
        return self.source.train_pairs // (self.recipe.per_device_batch_size * self.world_size)

    def _stream(self, epoch: int) -> Any:
        import datasets
        from datasets.distributed import split_dataset_by_node

        files = self.source.files["train"]
        order = np.random.default_rng([self.recipe.seed, epoch]).permutation(len(files))
        stream = datasets.load_dataset(
            "parquet", data_files={"train": [files[i] for i in order]}, split="train", streaming=True
        )
        stream = stream.select_columns(list(STREAM_COLUMNS)).cast_column("image", datasets.Image(decode=False))
        return split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size)

    def _batch(self, rows: list[dict[str, Any]], pairs: list[tuple[int, int]], pixels: list[torch.Tensor]) -> Any:
        captions = [rows[r]["captions"][k] for r, k in pairs]
        batch = dict(self.processor(text=captions, return_tensors="pt"))
        batch["pixel_values"] = torch.stack(pixels)
        batch["image_ids"] = torch.tensor([rows[r]["image_id"] for r, _ in pairs])
        batch["text_ids"] = torch.tensor([text_id(c) for c in captions])
        width = self.source.max_captions
        slots = torch.full((len(pairs), width), -1, dtype=torch.int64)
        for i, (r, _) in enumerate(pairs):
            ids = [text_id(c) for c in rows[r]["captions"][:width]]
            slots[i, : len(ids)] = torch.tensor(ids)
        batch["image_text_ids"] = slots
        return batch

    def _check_bad_fraction(self) -> None:
        if self.problem is None and self.bad > self.recipe.max_bad_fraction * self.seen:
            self.problem = (
                f"{self.bad} of {self.seen} streamed pairs had an image that did not decode "
                f"({self.bad / self.seen:.1%}), more than max_bad_fraction={self.recipe.max_bad_fraction}; first: "
                f"{self.examples[0]}. Re-shard the corpus with msa-data shard (it leaves such images out) or raise "
                "max_bad_fraction."
            )

    def epoch(self, epoch: int, position: dict[str, Any] | None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """``(batch, position after it)`` for the rest of ``epoch``; ``position`` is where a checkpoint stopped.

        The decode-failure counts run over the whole run (a position carries them); whether they exceed
        ``max_bad_fraction`` is checked at the end of each block and said in :attr:`problem`.
        """
        batch_size, recipe = self.recipe.per_device_batch_size, self.recipe
        stream = self._stream(epoch)
        block, offset, block_start = 0, 0, None
        if position is not None:
            self.bad, self.seen, self.examples = position["bad"], position["seen"], list(position["examples"])
            if position["epoch"] == epoch:
                block, offset, block_start = position["block"], position["offset"], position["source"]
                if block_start is not None:  # None: the epoch's first block
                    stream.load_state_dict(block_start)
        rows_iter = iter(stream)
        while True:
            rows: list[dict[str, Any]] = []
            pairs: list[tuple[int, int]] = []
            for row in rows_iter:
                rows.append(row)
                pairs += [(len(rows) - 1, k) for k in range(len(row["captions"]))]
                if len(pairs) >= recipe.shuffle_buffer:
                    break
            if not rows:
                return
            order = np.random.default_rng([recipe.seed, epoch, self.rank, block]).permutation(len(pairs))
            permuted = [pairs[i] for i in order]
            loader = torch.utils.data.DataLoader(
                _Block(rows, permuted, _Decoder(self.processor, self.variants, recipe.seed, epoch)),
                batch_size=batch_size,
                sampler=range(offset, len(permuted)),
                collate_fn=list,
                num_workers=recipe.num_workers,
                # A loader's iterator draws a seed from its generator: a private one keeps the global RNG
                # (dropout) where a resumed run has it, however many block loaders were made before.
                generator=torch.Generator().manual_seed(recipe.seed),
            )
            pending: list[tuple[int, torch.Tensor]] = []
            for items in loader:
                for index, result in items:
                    self.seen += 1
                    if isinstance(result, str):
                        self.bad += 1
                        self.examples = (self.examples + [result])[:EXAMPLES_KEPT]
                        continue
                    pending.append((index, result))
                    if len(pending) < batch_size:
                        continue
                    batch = self._batch(rows, [permuted[i] for i, _ in pending], [p for _, p in pending])
                    done = {"epoch": epoch, "block": block, "offset": index + 1, "source": block_start}
                    yield batch, {**done, "bad": self.bad, "seen": self.seen, "examples": list(self.examples)}
                    pending = []
            self._check_bad_fraction()
            block, offset, block_start = block + 1, 0, stream.state_dict()

    def report(self) -> str | None:
        """A line about the images skipped so far, or None."""
        if not self.bad:
            return None
        return (
            f"{self.bad} of {self.seen} streamed pairs had an image that did not decode and were skipped "
            f"(process {self.rank}): " + "; ".join(self.examples[:5])
        )


__all__ = [
    "StreamSource",
    "StreamingBatches",
    "TooManyBadImages",
    "load_evaluation_splits",
    "processes_any",
    "resolve_stream_source",
    "text_id",
]
