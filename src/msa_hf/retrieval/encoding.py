"""Batched, progress-reporting encoding of images and texts, image-folder scanning and model identity.

Everything here returns **L2-normalised float32 embeddings on the CPU**: retrieval in this
package is the dot product of normalised embeddings (docs/method.md, section 7), so normalising once at encode
time makes every later similarity a plain matrix product.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "ModelLoadError",
    "SkippedFile",
    "resolve_device",
    "load_model_and_processor",
    "model_fingerprint",
    "list_image_files",
    "load_image",
    "encode_images",
    "encode_texts",
]

# Formats PIL decodes that RS archives use (GeoTIFF tiles, JPEG/PNG chips, ...).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jp2", ".ppm", ".pgm"}
)


class ImageLoadError(ValueError):
    """An image file could not be opened or decoded (corrupt, truncated, or not an image)."""


class ModelLoadError(RuntimeError):
    """A model or processor could not be loaded from the given name or folder."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that was left out, and why (shown to the user and stored in index manifests)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available, else CPU; strings are validated with a clear error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` {device!r} is not a torch device (try 'cpu', 'cuda', 'cuda:0').") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} asks for CUDA but torch.cuda.is_available() is False.")
    return dev


def load_model_and_processor(
    name_or_path: str | os.PathLike, device: str | torch.device | None = None, revision: str | None = None
) -> tuple[Any, Any]:
    """Load an ``MSAModel`` (eval mode, on ``device``) and its ``MSAProcessor`` from a folder or Hub id.

    A Hub id is fetched at ``revision`` through the Hugging Face cache (offline: from it) by
    :func:`msa_hf.hub.resolve_model_source`, and the model's ``name_or_path`` is the Hub id.
    Errors from deep inside transformers are re-raised as :class:`ModelLoadError` naming the
    folder/id and what was expected there (``config.json`` + weights + processor files).
    """
    from msa_hf import MSAModel, MSAProcessor  # registers the Auto classes as a side effect
    from msa_hf.hub import HubError, resolve_model_source

    source = str(name_or_path)
    if not source:
        raise ModelLoadError("No model given: pass --model with a saved MSA folder or a Hub id.")
    dev = resolve_device(device)
    try:
        local = Path(resolve_model_source(source, revision))
    except HubError as exc:
        raise ModelLoadError(str(exc)) from exc
    if not (local / "config.json").is_file():
        raise ModelLoadError(
            f"Model {source} has no config.json: expected a folder written by "
            f"MSAModel.save_pretrained (and MSAProcessor.save_pretrained)."
        )
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a CLI
    try:
        model = MSAModel.from_pretrained(local)
    except Exception as exc:
        raise ModelLoadError(f"Could not load an MSA model from {source!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    try:
        processor = MSAProcessor.from_pretrained(local)
    except Exception as exc:
        raise ModelLoadError(
            f"Loaded the model from {source!r} but not its processor ({type(exc).__name__}: {exc}); "
            f"save it next to the model with MSAProcessor.save_pretrained."
        ) from exc
    if str(local) != source and not Path(source).expanduser().exists():  # a Hub snapshot: snapshots/<commit>
        model.name_or_path = model.config.name_or_path = source  # record the Hub id, not the cache path
        model.config._commit_hash = local.name
    return model.to(dev).eval(), processor


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of a model for index manifests: where it came from and exactly which weights.

    * ``name_or_path``: ``model.name_or_path``, the Hub id or the folder it was loaded from
      (made absolute); empty for a model built in memory.
    * ``revision``: the Hub commit (``config._commit_hash``) when the model came from the Hub,
      else ``None``.
    * ``weights_sha256``: SHA-256 over the state dict (sorted names, dtypes, shapes and raw
      bytes). This is the authoritative identity: it does not depend on the path, on
      sharding or on the file format, and it changes whenever any weight changes (including
      a dtype change, which also changes the embeddings). Hashing costs about a second per
      500 MB of weights.
    """
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    config = getattr(model, "config", None)
    name = str(getattr(model, "name_or_path", "") or "")
    if name and Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())  # a relative folder would break from another cwd
    return {
        "name_or_path": name,
        "revision": getattr(config, "_commit_hash", None) if config is not None else None,
        "weights_sha256": digest.hexdigest(),
        "model_class": type(model).__name__,
    }


def processor_fingerprint(processor: Any) -> str | None:
    """SHA-256 of the image processor's settings (resize and normalisation change embeddings)."""
    image_processor = getattr(processor, "image_processor", processor)
    to_dict = getattr(image_processor, "to_dict", None)
    if to_dict is None:
        return None
    settings = {k: v for k, v in to_dict().items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def list_image_files(
    folder: str | os.PathLike,
    *,
    recursive: bool = True,
    exclude: Iterable[str | os.PathLike] = (),
) -> tuple[list[Path], list[SkippedFile]]:
    """Image files under ``folder`` (sorted, relative paths) and the non-image files skipped.

    Images are recognised by extension (``IMAGE_EXTENSIONS``, case-insensitive); whether they
    decode is checked when they are loaded. Hidden files and folders (``.name``) are ignored
    silently; other files are returned in the skipped list so callers can show them.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {root} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder: expected a folder of images.")
    excluded = {Path(p).expanduser().resolve() for p in exclude}
    images: list[Path] = []
    skipped: list[SkippedFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (current / d).resolve() not in excluded)
        if not recursive:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = (current / name).relative_to(root)
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(rel)
            else:
                skipped.append(
                    SkippedFile(rel.as_posix(), f"not an image file (extension {Path(name).suffix or 'none'!r})")
                )
    images.sort(key=lambda p: p.as_posix())
    skipped.sort(key=lambda s: s.path)
    return images, skipped


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode one image (first frame), raising :class:`ImageLoadError` if it is bad.

    ``Image.open`` alone only reads the header; ``load()`` forces decoding so a truncated or
    corrupt file fails here, with its name, rather than later inside the processor.
    """
    try:
        with Image.open(path) as image:
            image.load()
            image.seek(0)
            return image.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _progress(total: int, desc: str, enabled: bool, unit: str, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, initial=initial, dynamic_ncols=True)


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.inference_mode()
def _encode_image_batch(model: Any, processor: Any, images: Sequence[Any], device: torch.device) -> torch.Tensor:
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    dtype = next(model.parameters()).dtype
    feats = model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype))
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()


def encode_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    *,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "Encoding images",
    num_workers: int = 0,
) -> torch.Tensor:
    """L2-normalised image embeddings (``N×D`` float32, CPU), in batches with a progress bar.

    ``images`` may hold PIL images, arrays, or file paths (decoded lazily per batch, in
    ``num_workers`` threads when > 0; PIL releases the GIL while decoding). A path that does
    not decode raises :class:`ImageLoadError` naming the file; :func:`msa_hf.retrieval.build_index`
    skips such files instead.
    """
    n = len(images)
    if n == 0:
        raise ValueError("`images` is empty: nothing to encode.")
    device = _model_device(model)
    out: list[torch.Tensor] = []

    def fetch(i: int) -> Any:
        item = images[i]
        return load_image(item) if isinstance(item, (str, os.PathLike)) else item

    pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
    try:
        with _progress(n, desc, progress, "img") as bar:
            for start, end in _batches(n, batch_size):
                # Fetching happens in the pool too: items of a lazy sequence (a datasets column
                # view) decode on access, and paths decode in load_image.
                batch = list(pool.map(fetch, range(start, end))) if pool else [fetch(i) for i in range(start, end)]
                out.append(_encode_image_batch(model, processor, batch, device))
                bar.update(end - start)
    finally:
        if pool:
            pool.shutdown()
    return torch.cat(out)


@torch.inference_mode()
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
    if isinstance(texts, str):
        texts = [texts]
    n = len(texts)
    if n == 0:
        raise ValueError("`texts` is empty: nothing to encode.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"`texts` must be strings; entry {bad[0]} is a {type(texts[bad[0]]).__name__}.")
    device = _model_device(model)
    out: list[torch.Tensor] = []
    with _progress(n, desc, progress, "txt") as bar:
        for start, end in _batches(n, batch_size):
            enc = processor(text=list(texts[start:end]), return_tensors="pt")
            feats = model.get_text_features(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device) if "attention_mask" in enc else None,
            )
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
            bar.update(end - start)
    return torch.cat(out)


def warn_skipped(skipped: Sequence[SkippedFile], what: str = "files", show: int = 10, stacklevel: int = 3) -> None:
    """One warning listing the first ``show`` skipped files and how many more there are."""
    if not skipped:
        return
    lines = [f"  {s.path}: {s.reason}" for s in skipped[:show]]
    more = f"\n  ... and {len(skipped) - show} more" if len(skipped) > show else ""
    warnings.warn(f"Skipped {len(skipped)} {what}:\n" + "\n".join(lines) + more, stacklevel=stacklevel)


def np_or_tensor_to_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float32 CPU tensor view of an array or tensor (shared helper for the index and search)."""
    return (x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).float().cpu()
