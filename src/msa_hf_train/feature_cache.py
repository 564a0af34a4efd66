"""Pooled scale features of a frozen image tower, computed once per corpus and kept on disk.

When the whole image tower is frozen (and in eval mode, so BatchNorm statistics are fixed),
its output for an image never changes during training: computing it once turns CPU
fine-tuning of the rest into text-tower work only. The cache is keyed by everything the
features depend on (the tower's weights, the preprocessing, the images, the augmentation
variants); a change in any of them computes a new entry instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from msa_hf.retrieval.encoding import model_fingerprint

from .data import apply_variant, image_batches

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1


def _image_identity(split: Any) -> list[Any]:
    """Each image's file, size and modification time (or a digest of its bytes when stored inline)."""
    import datasets

    raw = split.cast_column("image", datasets.Image(decode=False))["image"]
    identity = []
    for value in raw:
        if value.get("bytes") is not None:
            identity.append(hashlib.sha256(value["bytes"]).hexdigest())
        else:
            stat = os.stat(value["path"])
            identity.append([os.path.abspath(value["path"]), stat.st_size, stat.st_mtime_ns])
    return identity


def feature_cache_key(model: Any, processor: Any, split: Any, variants: Sequence[int]) -> str:
    """SHA-256 over the image tower's weights, the image preprocessing, the images and the variants."""
    image_processor = processor.image_processor
    settings = {
        "format": CACHE_FORMAT,
        "weights": model_fingerprint(model.vision_model)["weights_sha256"],
        "vision": type(model.vision_model).__name__,
        "scales": model.config.vision_out_indices,
        "pooling": model.config.vision_pooling,
        "image_size": image_processor.image_size,
        "image_mean": image_processor.image_mean,
        "image_std": image_processor.image_std,
        "variants": list(variants),
        "images": _image_identity(split),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def compute_scale_features(
    model: Any,
    processor: Any,
    split: Any,
    variants: Sequence[int],
    *,
    batch_size: int,
    num_workers: int,
    progress: bool,
    device: torch.device,
) -> list[torch.Tensor]:
    """Scale features of every image of ``split`` under every variant: S tensors ``V×N×C_k`` (float32, CPU)."""
    was_training = model.vision_model.training
    model.vision_model.eval()
    per_variant: list[list[list[torch.Tensor]]] = [[] for _ in variants]
    loader = image_batches(split, processor, batch_size, num_workers)
    try:
        with tqdm(
            total=len(split) * len(variants), desc="Caching image features", unit="img", disable=not progress
        ) as bar:
            for batch in loader:
                pixel_values = batch["pixel_values"].to(device)
                for slot, variant in enumerate(variants):
                    scales = model.get_scale_features(apply_variant(pixel_values, variant))
                    per_variant[slot].append([s.float().cpu() for s in scales])
                    bar.update(len(pixel_values))
    finally:
        model.vision_model.train(was_training)
    num_scales = len(per_variant[0][0])
    return [
        torch.stack([torch.cat([batch[k] for batch in batches]) for batches in per_variant]) for k in range(num_scales)
    ]


def load_or_compute_scale_features(
    model: Any,
    processor: Any,
    split: Any,
    variants: Sequence[int],
    cache_dir: Path,
    *,
    batch_size: int,
    num_workers: int,
    progress: bool,
    device: torch.device,
    compute: bool = True,
) -> list[torch.Tensor] | None:
    """Cached scale features of ``split``, computed and stored atomically when missing.

    With ``compute=False`` a missing entry returns ``None`` (processes other than the main one
    wait for the main process to write it, then read it).
    """
    key = feature_cache_key(model, processor, split, variants)
    path = Path(cache_dir) / "vision-features" / f"{key[:32]}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        logger.info("Image-tower features of %d images loaded from the cache %s", len(split), path)
        return [tensors[f"scale_{k}"] for k in range(len(tensors))]
    if not compute:
        return None
    features = compute_scale_features(
        model,
        processor,
        split,
        variants,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        device=device,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        save_file({f"scale_{k}": t.contiguous() for k, t in enumerate(features)}, staging, metadata={"key": key})
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    logger.info("Image-tower features of %d images × %d variants cached in %s", len(split), len(variants), path)
    return features


__all__ = ["CACHE_FORMAT", "compute_scale_features", "feature_cache_key", "load_or_compute_scale_features"]
