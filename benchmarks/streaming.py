"""Streaming training (``streaming: true``) on synthetic shard sets of 10k, 100k and 1M pairs, side by side.

Why: streaming must make corpus size stop mattering. For each size this writes a shard set in
``msa-data shard``'s layout (``data/{split}-NNNNN-of-NNNNN.parquet`` + ``shards.json``) of
distinct tiny JPEGs (32×32, a seeded 4×4 colour field upsampled, about 1 KB each) with five
distinct captions each, then, in a fresh subprocess (a clean peak-RSS reading), sets up the
real trainer (msa-tiny, ``streaming=true``) and measures on the same number of batches:

* ``loader_imgs_per_s``: the stream alone (Parquet read, block shuffle, decode in workers, batching);
* ``model_steps_per_s``: the training step alone, on one batch held in memory;
* ``steps_per_s``: both together, as training runs them;

and the process's peak RSS. The bottleneck is whichever of loader and model is slower. Each
shard set is deleted after it is measured (``--keep`` keeps them); its disk use is recorded.
The shards are written directly (not through ``msa-data shard``, which would also decode each
image to check it) so that the 1M set takes minutes, not hours, on 2 cores; the sets share their
shards (train shard ``k`` of every set is one file, hard-linked), so the 1M set's first shards
are the 100k set's, and the disk figure of each set counts its own files.

    python benchmarks/streaming.py                                  # 10k, 100k, 1M pairs; 40 steps each
    python benchmarks/streaming.py --sizes 10000 --steps 10         # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from run_info import REPO, git_commit

CAPTIONS = 5
WORDS = ["plane", "ship", "river", "farmland", "forest", "road", "car", "tank", "harbour", "building", "bridge"]
COLOURS = ["red", "green", "white", "grey", "dark", "bright", "small", "large"]


def tiny_jpegs(first: int, count: int) -> list[bytes]:
    """Distinct ~1 KB JPEGs: 4×4 colour fields (seeded by ``first``) upsampled to 32×32."""
    import numpy as np

    fields = np.random.default_rng(first).integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    return [tiny_jpeg(field) for field in fields]


def tiny_jpeg(field: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(field).resize((32, 32), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def caption(index: int, k: int) -> str:
    return (
        f"{COLOURS[(index + k) % len(COLOURS)]} {WORDS[index % len(WORDS)]} near {k + 1} "
        f"{WORDS[(index // len(WORDS) + k) % len(WORDS)]} in tile {index}"
    )


def pool_shard(pool: Path, split: str, k: int, images_per_shard: int, first_id: int) -> Path:
    """Shard ``k`` of ``split`` in the pool (written once): ``images_per_shard`` distinct images from ``first_id``."""
    import datasets

    from msa_hf.data.shard import shard_features

    path = pool / f"{split}-{k:05d}.parquet"
    if not path.is_file():
        ids = list(range(first_id + k * images_per_shard, first_id + (k + 1) * images_per_shard))
        rows = {
            "image": [{"bytes": b, "path": f"{i:07d}.jpg"} for i, b in zip(ids, tiny_jpegs(ids[0], len(ids)))],
            "captions": [[caption(i, c) for c in range(CAPTIONS)] for i in ids],
            "image_id": ids,
            "file_name": [f"{i:07d}.jpg" for i in ids],
            "source_path": [f"synthetic/{i:07d}.jpg" for i in ids],
        }
        pool.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # whole or absent, also to a parallel filler
        datasets.Dataset.from_dict(rows, features=shard_features()).to_parquet(str(staged))
        os.replace(staged, path)
    return path


def write_shards(folder: Path, pool: Path, pairs: int, images_per_shard: int, eval_images: int) -> dict[str, int]:
    """A shard set of ``pairs // 5`` train images (shards shared with the other sets through hard links)."""
    from msa_hf.data.shard import SHARD_MANIFEST

    train_shards = -(-pairs // (CAPTIONS * images_per_shard))
    counts = {"train": train_shards * images_per_shard, "validation": eval_images, "test": eval_images}
    (folder / "data").mkdir(parents=True)
    for k in range(train_shards):
        source = pool_shard(pool, "train", k, images_per_shard, first_id=0)
        os.link(source, folder / "data" / f"train-{k:05d}-of-{train_shards:05d}.parquet")
    for n, split in enumerate(("validation", "test")):  # ids above every train image's
        source = pool_shard(pool, split, 0, eval_images, first_id=10**8 * (n + 1))
        os.link(source, folder / "data" / f"{split}-00000-of-00001.parquet")
    splits = {s: {"images": n, "pairs": n * CAPTIONS, "max_captions": CAPTIONS} for s, n in counts.items()}
    (folder / SHARD_MANIFEST).write_text(json.dumps({"source": "benchmarks/streaming.py", "splits": splits}))
    return counts


def measure(folder: Path, steps: int, batch_size: int, shuffle_buffer: int, num_workers: int) -> dict[str, float]:
    """Set up the real trainer on ``folder`` and time loader, model step and both, ``steps`` batches each."""
    import torch

    from msa_hf_train.recipe import build_recipe
    from msa_hf_train.trainer import Trainer

    output = Path(tempfile.mkdtemp(prefix="msa-streaming-run-"))
    recipe = build_recipe(
        {},
        [
            "model=msa-tiny",
            f"corpus={folder}",
            "streaming=true",
            f"shuffle_buffer={shuffle_buffer}",
            f"per_device_batch_size={batch_size}",
            f"max_steps={steps}",
            f"num_workers={num_workers}",
            f"output_dir={output}",
            "report_to=none",
            "progress=false",
            "learning_rate=1e-3",
        ],
    )
    trainer = Trainer(recipe, "benchmarks/streaming.py")
    trainer.setup()

    started = time.perf_counter()
    batches = trainer.stream.epoch(0, None)
    first, _ = next(batches)
    first_batch_s = time.perf_counter() - started
    started = time.perf_counter()
    images = sum(len(batch["pixel_values"]) for batch, _ in islice(batches, steps))
    loader_s = time.perf_counter() - started

    trainer.train_step(first)  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(first)
    model_s = time.perf_counter() - started

    batches = trainer.stream.epoch(1, None)
    next(batches)
    started = time.perf_counter()
    for batch, _ in islice(batches, steps):
        trainer.train_step(batch)
    both_s = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return {
        "first_batch_s": round(first_batch_s, 3),
        "loader_imgs_per_s": round(images / loader_s, 1),
        "model_steps_per_s": round(steps / model_s, 2),
        "steps_per_s": round(steps / both_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="train pairs")
    parser.add_argument("--steps", type=int, default=40, help="timed batches of each kind, the same for every size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shuffle-buffer", type=int, default=1000, help="pairs per shuffle block")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--images-per-shard", type=int, default=2_000)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None, help="where shard sets are written (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the shard sets")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "streaming.json")
    parser.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)  # internal: measure one shard set
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.steps, args.batch_size, args.shuffle_buffer, args.num_workers)))
        return

    started, load_at_start = time.perf_counter(), os.getloadavg()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="msa-streaming-bench-"))
    rows = []
    for pairs in args.sizes:
        folder = workdir / f"pairs-{pairs}"
        shutil.rmtree(folder, ignore_errors=True)
        made = time.perf_counter()
        counts = write_shards(folder, workdir / "pool", pairs, args.images_per_shard, args.eval_images)
        made = time.perf_counter() - made
        size = disk_bytes(folder)
        child = [sys.executable, __file__, "--one", str(folder), "--steps", str(args.steps)]
        child += ["--batch-size", str(args.batch_size), "--shuffle-buffer", str(args.shuffle_buffer)]
        child += ["--num-workers", str(args.num_workers)]
        result = subprocess.run(child, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"measuring {folder} failed:\n{result.stderr[-3000:]}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        row = {
            "pairs": pairs,
            "train_images": counts["train"],
            "disk_mib": round(size / 2**20, 1),
            "bytes_per_image": round(size / sum(counts.values())),
            "write_new_shards_s": round(made, 1),
            **measured,
        }
        row["bottleneck"] = (
            "loader" if row["loader_imgs_per_s"] < row["model_steps_per_s"] * args.batch_size else "model"
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"partial": True, "rows": rows}, indent=1) + "\n")  # the sizes done so far
    unique_disk = disk_bytes(workdir / "pool")
    if not args.keep:
        shutil.rmtree(workdir)
    rss = [r["peak_rss_mib"] for r in rows]
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_average_1_5_15min": {
            "start": [round(x, 2) for x in load_at_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {k: getattr(args, k) for k in ("steps", "batch_size", "shuffle_buffer", "num_workers")},
        "model": "msa-tiny (64 px, random init)",
        "images": "distinct 32x32 JPEGs (a seeded 4x4 colour field each), 5 distinct captions per image",
        "rows": rows,
        "disk_mib_all_sets": round(unique_disk / 2**20, 1),
        "rss_largest_over_smallest": round(max(rss) / min(rss), 3),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
