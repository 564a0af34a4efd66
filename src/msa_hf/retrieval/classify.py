"""Zero-shot scene classification with an image-text retrieval model (``msa-classify``).

Each label becomes one or more prompts (``"an aerial image of {}"``); the label's text
embedding is the normalised mean of its prompts' embeddings (prompt ensembling, as in CLIP).
An image's label probabilities are ``softmax(scale * cosine(image, label))``.

MSA is trained with a margin loss and has no learned temperature, so ``scale`` (default 100,
CLIP's value) only calibrates how peaked the probabilities are; it never changes the
predicted label or the accuracy.

Labels are used verbatim except that ``_`` and ``-`` become spaces in the prompt, so folder
names like ``dense_residential`` read naturally. When a folder is organised by class (every
image in a first-level subfolder) the subfolder names are matched to labels ignoring case,
spaces, ``_`` and ``-``, and accuracy is reported.
"""

from __future__ import annotations

import math
import os
import re
import string
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msa_hf.data.images import SkippedFile, list_image_files, warn_skipped
from msa_hf.modeling_msa import ZERO_SHOT_LOGIT_SCALE

from .encoding import encode_image_list, encode_images, encode_texts

__all__ = [
    "DEFAULT_TEMPLATE",
    "DEFAULT_SCALE",
    "ClassificationResult",
    "FolderClassification",
    "label_text_embeddings",
    "zero_shot_classify",
    "classify_embeddings",
    "classify_folder",
    "normalize_label",
]

DEFAULT_TEMPLATE = "an aerial image of {}"
DEFAULT_SCALE = ZERO_SHOT_LOGIT_SCALE


def normalize_label(name: str) -> str:
    """Key used to match folder names to labels: lowercase letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _prompt_label(label: str) -> str:
    return re.sub(r"[_\-]+", " ", label).strip()


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        labels = [x for x in labels.split(",")]
    labels = [str(x).strip() for x in labels]
    if any(not x for x in labels):
        raise ValueError("`labels` contains an empty label (check for a doubled or trailing comma).")
    if len(labels) < 2:
        raise ValueError(f"Need at least two labels to classify, got {labels}.")
    keys = [normalize_label(x) for x in labels]
    dupes = sorted({x for x, key in zip(labels, keys) if keys.count(key) > 1})
    if dupes:
        raise ValueError(f"`labels` has duplicates (ignoring case, spaces, '_' and '-'): {dupes}.")
    return labels


def _check_templates(templates: str | Sequence[str]) -> list[str]:
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise ValueError("Give at least one template.")
    for t in templates:
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
        except ValueError:  # an unmatched brace
            fields = None
        if fields != [""]:
            raise ValueError(
                f"Template {t!r} must contain exactly one '{{}}' where the label goes and no other "
                f"{{...}} field (write a literal brace as '{{{{' or '}}}}'), e.g. {DEFAULT_TEMPLATE!r}."
            )
    return templates


def _check_scale(scale: float) -> float:
    """A finite, positive softmax scale: NaN or infinity would turn every probability into NaN."""
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"`scale` (--scale) must be a finite number > 0, got {scale}; the default is {DEFAULT_SCALE:g}."
        )
    return float(scale)


def label_text_embeddings(
    model: Any, processor: Any, labels: Sequence[str], templates: str | Sequence[str] = DEFAULT_TEMPLATE
) -> torch.Tensor:
    """One L2-normalised embedding per label: the renormalised mean over its prompts."""
    labels = _check_labels(labels)
    templates = _check_templates(templates)
    prompts = [t.format(_prompt_label(label)) for label in labels for t in templates]
    emb = encode_texts(model, processor, prompts, progress=False)
    emb = emb.view(len(labels), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1)


@dataclass
class ClassificationResult:
    """Per-image label probabilities (rows images, columns ``labels``) and the argmax."""

    labels: list[str]
    probs: np.ndarray
    scale: float

    @property
    def predictions(self) -> list[str]:
        return [self.labels[i] for i in self.probs.argmax(axis=1)]


def zero_shot_classify(
    images: Sequence[Any],
    labels: Sequence[str],
    model: Any,
    processor: Any,
    *,
    templates: str | Sequence[str] = DEFAULT_TEMPLATE,
    scale: float = DEFAULT_SCALE,
    batch_size: int = 32,
    progress: bool = True,
) -> ClassificationResult:
    """Label probabilities for ``images`` (PIL images, arrays or paths) over ``labels``.

    Example:
        >>> result = zero_shot_classify([img], ["airport", "farmland"], model, processor)  # doctest: +SKIP
        >>> result.predictions, result.probs.shape  # doctest: +SKIP
        (['airport'], (1, 2))
    """
    labels = _check_labels(labels)
    scale = _check_scale(scale)
    _check_templates(templates)
    image_emb = encode_images(
        model, processor, images, batch_size=batch_size, progress=progress, desc="Classifying images"
    )
    return classify_embeddings(image_emb, labels, model, processor, templates=templates, scale=scale)


def classify_embeddings(
    image_embeds: torch.Tensor,
    labels: Sequence[str],
    model: Any,
    processor: Any,
    *,
    templates: str | Sequence[str] = DEFAULT_TEMPLATE,
    scale: float = DEFAULT_SCALE,
) -> ClassificationResult:
    """Label probabilities for L2-normalised image embeddings (rows) over ``labels``."""
    labels = _check_labels(labels)
    scale = _check_scale(scale)
    label_emb = label_text_embeddings(model, processor, labels, templates)
    probs = torch.softmax(scale * image_embeds @ label_emb.t(), dim=-1).numpy()
    return ClassificationResult(labels=labels, probs=probs, scale=scale)


@dataclass
class FolderClassification(ClassificationResult):
    """:class:`ClassificationResult` for a folder, plus ground truth when it is organised by class."""

    files: list[str] = field(default_factory=list)
    true_labels: list[str | None] | None = None
    skipped: list[SkippedFile] = field(default_factory=list)
    unmatched_folders: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        """Percent of images (with a known class) whose top label is their folder's class."""
        if self.true_labels is None:
            return None
        pairs = [(p, t) for p, t in zip(self.predictions, self.true_labels) if t is not None]
        return 100.0 * float(np.mean([p == t for p, t in pairs])) if pairs else None

    @property
    def per_class_accuracy(self) -> dict[str, float]:
        if self.true_labels is None:
            return {}
        out: dict[str, float] = {}
        for label in self.labels:
            hits = [p == label for p, t in zip(self.predictions, self.true_labels) if t == label]
            if hits:
                out[label] = 100.0 * float(np.mean(hits))
        return out

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        rows = []
        for i, f in enumerate(self.files):
            order = np.argsort(-self.probs[i], kind="stable")[: top or len(self.labels)]
            row: dict[str, Any] = {
                "file": f,
                "prediction": self.labels[order[0]],
                "probs": {self.labels[j]: float(self.probs[i, j]) for j in order},
            }
            if self.true_labels is not None:
                row["label"] = self.true_labels[i]
            rows.append(row)
        return {
            "labels": self.labels,
            "scale": self.scale,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "num_images": len(self.files),
            "images": rows,
            "skipped": [s.to_dict() for s in self.skipped],
            "unmatched_folders": self.unmatched_folders,
        }


def class_folders(files: Sequence[Path]) -> list[str] | None:
    """The first-level folder of every file, or ``None`` if some file sits at the top level."""
    classes = [f.parts[0] if len(f.parts) > 1 else None for f in files]
    return None if any(c is None for c in classes) else classes  # type: ignore[return-value]


def classify_folder(
    folder: str | os.PathLike,
    model: Any,
    processor: Any,
    labels: Sequence[str] | None = None,
    *,
    templates: str | Sequence[str] = DEFAULT_TEMPLATE,
    scale: float = DEFAULT_SCALE,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
) -> FolderClassification:
    """Classify every image under ``folder``; report accuracy if it is organised by class.

    ``labels=None`` takes the labels from the class subfolders' names (the folder must then
    be organised by class). Non-image and undecodable files are skipped with a warning.
    Images are decoded in ``num_workers`` loader workers, a batch at a time.
    """
    scale = _check_scale(scale)
    root = Path(folder).expanduser()
    files, skipped = list_image_files(root)
    if not files:
        extra = f" ({len(skipped)} non-image file(s), e.g. {skipped[0].path})" if skipped else ""
        raise ValueError(f"No image files found in {root}{extra}.")
    if labels is not None:
        labels = _check_labels(labels)
        _check_templates(templates)
    encoded = encode_image_list(
        model,
        processor,
        files,
        root=root,
        batch_size=batch_size,
        num_workers=num_workers,
        desc="Classifying images",
        progress=progress,
    )
    skipped += [SkippedFile(files[row].as_posix(), reason) for row, reason in encoded.failures]
    warn_skipped(skipped, what=f"files in {root}", stacklevel=2)
    kept = [files[row] for row in encoded.ids]
    if not kept:
        raise ValueError(f"None of the image files in {root} could be decoded.")

    folders = class_folders(kept)
    if labels is None:
        if folders is None:
            raise ValueError(
                f"--labels is required: {root} is not organised in class subfolders (some images are at its top level)."
            )
        labels = sorted(set(folders), key=str.lower)
    labels = _check_labels(labels)

    true_labels: list[str | None] | None = None
    unmatched: list[str] = []
    if folders is not None:
        by_key = {normalize_label(x): x for x in labels}
        true_labels = [by_key.get(normalize_label(f)) for f in folders]
        unmatched = sorted({f for f, t in zip(folders, true_labels) if t is None})
        if unmatched:
            warnings.warn(
                f"Class folders with no matching label are left out of the accuracy: {unmatched}.", stacklevel=2
            )
        if all(t is None for t in true_labels):
            true_labels = None  # subfolders are not classes of these labels: no accuracy

    result = classify_embeddings(encoded.embeddings, labels, model, processor, templates=templates, scale=scale)
    return FolderClassification(
        labels=result.labels,
        probs=result.probs,
        scale=result.scale,
        files=[f.as_posix() for f in kept],
        true_labels=true_labels,
        skipped=sorted(skipped, key=lambda s: s.path),
        unmatched_folders=unmatched,
    )
