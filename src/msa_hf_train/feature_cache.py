"""Pooled scale features of a frozen image tower, computed once per corpus and kept on disk.

When the whole image tower is frozen (and in eval mode, so BatchNorm statistics are fixed),
its output for an image never changes during training: computing it once turns CPU
fine-tuning of the rest into text-tower work only. When only the stem and the first ``k``
stages are frozen, the cache keeps their pooled scales and the unpooled feature map of scale
``k``; training then runs just the upper stages on that map, so the image tower can still
adapt at a fraction of its cost. The cache is keyed by everything the features depend on (the
tower's weights, the preprocessing, the images, the augmentation variants, the frozen
stages); a change in any of them computes a new entry instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from msa_hf import image_view
from msa_hf.io_utils import atomic_save_safetensors
from msa_hf.retrieval.index import sha256_file
from msa_hf.sources import model_fingerprint

from .data import image_batches

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1
STAGE_MAP = "stage_map"


@dataclass
class CachedVisionFeatures:
    """The cached output of the frozen part of the image tower, indexed ``[variant, image]``.

    ``scales`` are ``V×N×C_k`` pooled scale vectors: all S of them for a fully frozen tower, the
    first ``k`` for one frozen up to stage ``k``, whose unpooled ``V×N×C_k×H×W`` feature map is
    then ``stage_map`` (the input of the stages that still train).
    """

    scales: list[torch.Tensor]
    stage_map: torch.Tensor | None = None

    def select(self, variant_slots: torch.Tensor, rows: torch.Tensor) -> dict[str, Any]:
        """A batch's fields of `msa_hf.MSATrainingInputs`: ``scale_features`` (and ``stage_hidden_state``)."""
        batch: dict[str, Any] = {"scale_features": [features[variant_slots, rows] for features in self.scales]}
        if self.stage_map is not None:
            batch["stage_hidden_state"] = self.stage_map[variant_slots, rows]
        return batch


def _image_identity(split: Any) -> list[str]:
    """A SHA-256 of each image's bytes, in order: the content, not where or when the file was
    written, so a corpus copied, moved or re-extracted keeps its cache entries."""
    import datasets

    raw = split.cast_column("image", datasets.Image(decode=False))["image"]
    identity = []
    for value in raw:
        if value.get("bytes") is not None:
            identity.append(hashlib.sha256(value["bytes"]).hexdigest())
        else:
            identity.append(sha256_file(Path(value["path"])))
    return identity


def feature_cache_key(
    model: Any, processor: Any, split: Any, variants: Sequence[int], frozen_stages: int | Literal["all"] = "all"
) -> str:
    """SHA-256 over the image tower's weights, the preprocessing, the images, the variants, the frozen stages."""
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
    if frozen_stages != "all":  # absent for a fully frozen tower, so those entries keep their keys
        settings[STAGE_MAP] = frozen_stages
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
    frozen_stages: int | Literal["all"] = "all",
) -> CachedVisionFeatures:
    """The frozen part's output for every image of ``split`` under every variant (float32, CPU).

    ``frozen_stages="all"`` means the whole tower (all S pooled scales); ``k`` keeps the first
    ``k`` pooled scales and the feature map of scale ``k``.
    """
    was_training = model.vision_model.training
    model.vision_model.eval()
    whole = frozen_stages == "all"
    keep = model.config.num_scales if whole else frozen_stages
    per_variant: list[list[list[torch.Tensor]]] = [[] for _ in variants]
    loader = image_batches(split, processor, batch_size, num_workers)
    try:
        with tqdm(
            total=len(split) * len(variants), desc="Caching image features", unit="img", disable=not progress
        ) as bar:
            for batch in loader:
                pixel_values = batch["pixel_values"].to(device)
                for slot, variant in enumerate(variants):
                    outputs = model.vision_model(image_view(pixel_values, variant), output_hidden_states=not whole)
                    kept = list(outputs.scale_features[:keep])
                    if not whole:
                        kept.append(outputs.hidden_states[frozen_stages - 1])
                        if not per_variant[slot]:
                            _check_stage_resume(model, outputs, frozen_stages)
                    per_variant[slot].append([t.float().cpu() for t in kept])
                    bar.update(len(pixel_values))
    finally:
        model.vision_model.train(was_training)
    stacked = [
        torch.stack([torch.cat([batch[k] for batch in batches]) for batches in per_variant])
        for k in range(len(per_variant[0][0]))
    ]
    if whole:
        return CachedVisionFeatures(stacked)
    return CachedVisionFeatures(stacked[:-1], stacked[-1])


def _check_stage_resume(model: Any, outputs: Any, frozen_stages: int) -> None:
    """Fail loudly if the upper stages, run from the cached map, do not give the tower's own scales."""
    resumed = model.vision_model.forward_from_stage(outputs.hidden_states[frozen_stages - 1], frozen_stages)
    for k, (got, expected) in enumerate(zip(resumed, outputs.scale_features[frozen_stages:]), frozen_stages + 1):
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                f"The timm backbone {model.config.vision_backbone!r} ({type(model.vision_model.backbone).__name__}) "
                f"cannot be split at stage {frozen_stages}: scale {k} computed from the cached map differs from the "
                "tower's own output, which it should equal; set cache_frozen_vision=false."
            )


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
    frozen_stages: int | Literal["all"] = "all",
) -> CachedVisionFeatures | None:
    """Cached features of ``split`` (see `compute_scale_features`), computed and stored atomically when missing.

    With ``compute=False`` a missing entry returns ``None`` (processes other than the main one
    wait for the main process to write it, then read it).
    """
    key = feature_cache_key(model, processor, split, variants, frozen_stages)
    path = Path(cache_dir) / "vision-features" / f"{key[:32]}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        logger.info("Image-tower features of %d images loaded from the cache %s", len(split), path)
        num_scales = sum(name.startswith("scale_") for name in tensors)
        return CachedVisionFeatures([tensors[f"scale_{k}"] for k in range(num_scales)], tensors.get(STAGE_MAP))
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
        frozen_stages=frozen_stages,
    )
    tensors = {f"scale_{k}": t.contiguous() for k, t in enumerate(features.scales)}
    if features.stage_map is not None:
        tensors[STAGE_MAP] = features.stage_map.contiguous()
    atomic_save_safetensors(path, tensors, metadata={"key": key})  # the umask's mode, not mkstemp's 0600
    logger.info("Image-tower features of %d images × %d variants cached in %s", len(split), len(variants), path)
    return features


__all__ = [
    "CACHE_FORMAT",
    "CachedVisionFeatures",
    "compute_scale_features",
    "feature_cache_key",
    "load_or_compute_scale_features",
]
