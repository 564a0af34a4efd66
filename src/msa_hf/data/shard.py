"""``msa-data shard``: any corpus as Parquet shards that ``datasets`` streams.

Why: a corpus of millions of pairs cannot be read into memory and checked image by image
before training starts. Sharded once, it streams: ``datasets.load_dataset("parquet",
data_dir=OUT, streaming=True)`` reads it, locally or pushed to the Hub, and training with
``streaming=true`` never holds more than a shuffle buffer of it.

Layout (the one the Hub and ``datasets`` read without a loading script)::

    OUT/data/train-00000-of-00042.parquet ...   image (bytes as stored, and the file name), captions,
    OUT/data/validation-00000-of-00001.parquet  image_id, file_name, source_path
    OUT/shards.json                             counts per split, bad items, source, msa_hf version

Shard ``k`` of a split holds the split's images ``k·N ... (k+1)·N - 1`` (``N = --shard-size``)
less those that do not decode, so an interrupted run picks up where it stopped: a shard whose
file and record exist is kept.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io_utils import atomic_write_file, atomic_write_json
from .corpus import SHARD_MANIFEST, SPLITS, read_corpus
from .images import read_regular_file
from .validation import validate_records

__all__ = ["SHARD_MANIFEST", "shard_corpus", "shard_features", "shard_files"]

_PROGRESS_DIR = ".msa_hf_shard"  # one record per finished shard, and the plan they belong to
_IMAGE_PROBLEMS = ("missing_image", "unreadable_image")


def shard_files(folder: str | os.PathLike, split: str) -> list[Path]:
    """The Parquet shards of ``split`` under ``folder`` (written by :func:`shard_corpus`), in order."""
    return sorted(
        (Path(folder) / "data").glob(f"{split}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].parquet")
    )


def _shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}"


def shard_features() -> Any:
    """The columns of a shard row, as ``datasets`` features (stored in each file, so a reader gets ``Image``)."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "image_id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
            "source_path": datasets.Value("string"),
        }
    )


def _write_shard(records: list[dict[str, Any]], source: str, target: str, record_path: str) -> dict[str, Any]:
    """Check that each image decodes, write the good ones (bytes as stored) to ``target``, then its record."""
    import datasets

    datasets.disable_progress_bars()  # a worker process's: the command shows one bar over all shards

    report = validate_records(records, source, check_images=True, num_threads=1)
    bad = {p.index: p for p in report.problems if p.kind in _IMAGE_PROBLEMS}
    rows: dict[str, list[Any]] = {name: [] for name in ("image", "captions", "image_id", "file_name", "source_path")}
    for i, record in enumerate(records):
        if i in bad:
            continue
        image = record["image"]
        data = image["bytes"] if image.get("bytes") is not None else read_regular_file(image["path"])
        rows["image"].append({"bytes": data, "path": record["file_name"]})
        rows["captions"].append(list(record["captions"]))
        rows["image_id"].append(int(record["image_id"]))
        rows["file_name"].append(record["file_name"])
        rows["source_path"].append(image.get("path") or "")
    shard = datasets.Dataset.from_dict(rows, features=shard_features())
    atomic_write_file(target, lambda staged: shard.to_parquet(str(staged)))
    problems = [{"file_name": p.file_name, "kind": p.kind, "detail": p.detail} for p in bad.values()]
    result = {
        "rows": len(rows["image_id"]),
        "pairs": sum(map(len, rows["captions"])),
        "max_captions": max(map(len, rows["captions"]), default=0),
        "bad": problems,
    }
    atomic_write_json(record_path, result)  # a shard file without its record is written again
    return result


def _plan_digest(splits: Mapping[str, list[dict[str, Any]]], shard_size: int) -> str:
    """What the shards hold (file names per split and the shard size): a resume must find the same plan."""
    listing = {split: [r["file_name"] for r in records] for split, records in splits.items()}
    return hashlib.sha256(json.dumps([listing, shard_size]).encode()).hexdigest()


def shard_corpus(
    source: Any,
    out: str | os.PathLike,
    *,
    shard_size: int = 1000,
    num_proc: int = 1,
    image_root: str | os.PathLike | None = None,
    columns: Mapping[str, Any] | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    allow_outside_root: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``source`` (anything :func:`~msa_hf.data.load_corpus` reads) as Parquet shards under ``out``.

    Entries with problems found without decoding (missing files, bad captions, duplicates) and
    images that do not decode are left out, listed and counted in ``out/shards.json``, which is
    also returned. Splits are read, numbered and carved as :func:`load_corpus` does.
    """
    from tqdm.auto import tqdm

    from .. import __version__

    if shard_size < 1 or num_proc < 1:
        raise ValueError(f"--shard-size and --num-proc must be >= 1, got {shard_size} and {num_proc}.")
    out = Path(out).expanduser()
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / _PROGRESS_DIR).is_dir()):
        raise FileExistsError(f"{out} exists and is not an msa-data shard output; choose a new or empty folder.")
    read = read_corpus(
        source,
        image_root=image_root,
        columns=columns,
        seed=seed,
        validation_fraction=validation_fraction,
        on_bad="drop",
        check_images=False,  # each shard decodes its own images, in parallel
        progress=progress,
        allow_outside_root=allow_outside_root,
    )
    state = out / _PROGRESS_DIR
    state.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    plan = {"source": read.name, "digest": _plan_digest(read.splits, shard_size)}
    plan_path = state / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        raise FileExistsError(
            f"{out} holds shards of another source or --shard-size (see {plan_path}); choose a new folder or delete it."
        )
    atomic_write_json(plan_path, plan)

    jobs = []  # (split, index, records, target, record path)
    for split in SPLITS:
        records = read.splits[split]
        count = -(-len(records) // shard_size)
        for index in range(count):
            name = _shard_name(split, index, count)
            jobs.append(
                (
                    split,
                    records[index * shard_size : (index + 1) * shard_size],
                    out / "data" / f"{name}.parquet",
                    state / f"{name}.json",
                )
            )
    results: dict[Path, dict[str, Any]] = {}
    todo = []
    for split, records, target, record_path in jobs:
        if target.is_file() and record_path.is_file():
            results[target] = json.loads(record_path.read_text())
        else:
            todo.append((split, records, target, record_path))
    total = sum(len(job[1]) for job in todo)
    with (
        tqdm(total=total, desc="sharding", unit="img", disable=not progress) as bar,
        concurrent.futures.ProcessPoolExecutor(num_proc) as pool,
    ):
        futures = {
            pool.submit(_write_shard, records, read.name, str(target), str(record_path)): (target, len(records))
            for _split, records, target, record_path in todo
        }
        for future in concurrent.futures.as_completed(futures):
            target, size = futures[future]
            results[target] = future.result()
            bar.update(size)

    manifest: dict[str, Any] = {
        "source": read.name,
        "format": read.meta["format"],
        "msa_hf_version": __version__,
        "shard_size": shard_size,
        "splits": {},
        "dropped_before_sharding": {"count": read.dropped, "problems": read.report.counts()},
        "derived_from_train": read.derived,
        "bad": [],
    }
    for split in SPLITS:
        split_jobs = [job for job in jobs if job[0] == split]
        kept = [results[job[2]] for job in split_jobs]
        manifest["splits"][split] = {
            "images": sum(r["rows"] for r in kept),
            "pairs": sum(r["pairs"] for r in kept),
            "shards": len(kept),
            "bad_images": sum(len(r["bad"]) for r in kept),
            "max_captions": max((r["max_captions"] for r in kept), default=0),
        }
        manifest["bad"] += [{"split": split, **bad} for r in kept for bad in r["bad"]]
    manifest["bad"] += [
        {"split": None, "file_name": p.file_name, "kind": p.kind, "detail": p.detail} for p in read.report.problems
    ]
    atomic_write_json(out / SHARD_MANIFEST, manifest)
    return manifest
