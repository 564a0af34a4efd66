"""Rendering whole scenes and writing the ``rs-synth`` corpus as a Karpathy-style JSON plus PNGs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...io_utils import atomic_directory
from .captions import write_captions
from .layout import build_layout
from .objects import place_objects, plan_siblings
from .scene import Layout, ObjectKind, ObjectPlan, SynthScene, scene_facts

SYNTH_DATASET_NAME = "rs-synth"
SYNTH_JSON_NAME = "dataset_rs_synth.json"
GENERATOR_VERSION = 1
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~3x faster than 6 on these textured images, <2% larger
SPLIT_FRACTIONS = (0.1, 0.1)  # validation, test; by layout group


class SceneRenderer:
    """Renders scenes by index, keeping the latest layout so that siblings share one render."""

    def __init__(self, seed: int, image_size: int, variants_per_layout: int) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
        if variants_per_layout < 1:
            raise ValueError(f"variants_per_layout must be >= 1, got {variants_per_layout}.")
        self.seed, self.size, self.variants_per_layout = int(seed), int(image_size), int(variants_per_layout)
        self._group: int | None = None
        self._layout: Layout | None = None
        self._plans: list[dict[ObjectKind, ObjectPlan]] = []

    def __call__(self, index: int) -> SynthScene:
        group, sibling = divmod(index, self.variants_per_layout)
        if group != self._group or self._layout is None:
            self._layout = build_layout(self.seed, group, self.size)
            self._plans = plan_siblings(self.seed, group, self._layout, self.variants_per_layout)
            self._group = group
        layout = self._layout
        rng = np.random.default_rng([self.seed, index, 2])
        image, objects = place_objects(rng, layout, self._plans[sibling])
        captions = write_captions(layout, objects, rng)
        return SynthScene(image=image, captions=captions, layout_id=group, scene=scene_facts(layout, objects))


def render_scene(index: int, *, seed: int = 0, image_size: int = 224, variants_per_layout: int = 4) -> SynthScene:
    """Render scene ``index`` of the ``rs-synth`` corpus with this seed (no files written).

    Example:
        >>> scene = render_scene(0, seed=0, image_size=64)
        >>> scene.image.size, len(scene.captions)
        ((64, 64), 5)
    """
    return SceneRenderer(seed, image_size, variants_per_layout)(index)


def splits_for_groups(n_groups: int, seed: int) -> list[str]:
    """Assign whole layout groups to splits (about 80/10/10), at least one group each when >= 3 groups."""
    n_validation = max(1, round(SPLIT_FRACTIONS[0] * n_groups)) if n_groups >= 3 else 0
    n_test = max(1, round(SPLIT_FRACTIONS[1] * n_groups)) if n_groups >= 3 else 0
    order = np.random.default_rng([seed, 3]).permutation(n_groups)
    splits = ["train"] * n_groups
    for group in order[:n_validation]:
        splits[int(group)] = "val"
    for group in order[n_validation : n_validation + n_test]:
        splits[int(group)] = "test"
    return splits


def caption_tokens(caption: str) -> list[str]:
    """The Karpathy JSON's ``tokens``: words without the final full stop."""
    return [token for token in caption.replace(".", " ").split() if token]


def write_corpus(
    out: Path, n_images: int, seed: int, image_size: int, variants_per_layout: int, progress: bool
) -> Path:
    """Write the images and the JSON into ``out`` (no atomicity here: see :func:`generate_synth_corpus`)."""
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    renderer = SceneRenderer(seed, image_size, variants_per_layout)
    n_groups = -(-n_images // variants_per_layout)
    group_split = splits_for_groups(n_groups, seed)
    width = max(5, len(str(n_images - 1)))
    entries = []
    indices: Any = range(n_images)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="rs-synth", unit="img")
    sentence_id = 0
    for index in indices:
        scene = renderer(index)
        name = f"{index:0{width}d}.png"
        scene.image.save(images_dir / name, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        sentences = []
        for caption in scene.captions:
            sentences.append({"raw": caption, "tokens": caption_tokens(caption), "imgid": index, "sentid": sentence_id})
            sentence_id += 1
        entries.append(
            {
                "filepath": "images",
                "filename": name,
                "imgid": index,
                "split": group_split[scene.layout_id],
                "layout_id": scene.layout_id,
                "sentids": [sentence["sentid"] for sentence in sentences],
                "sentences": sentences,
                "scene": scene.scene,
            }
        )
    meta = {
        "dataset": SYNTH_DATASET_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_images": n_images,
        "image_size": image_size,
        "variants_per_layout": variants_per_layout,
        "images": entries,
    }
    path = out / SYNTH_JSON_NAME
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


def _check_only_synth_output(out: Path) -> None:
    """Refuse to overwrite ``out`` unless everything in it is what an earlier run wrote (its
    JSON and the images that JSON lists): replacing the folder would delete anything else."""
    manifest = out / SYNTH_JSON_NAME
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        written = {Path(SYNTH_JSON_NAME), Path("images")} | {
            Path(entry["filepath"]) / entry["filename"] for entry in meta["images"]
        }
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(
            f"{out} is not empty and holds no rs-synth corpus ({SYNTH_JSON_NAME} is missing or unreadable); "
            f"overwrite only replaces an earlier `msa-data synth` output: choose another folder."
        ) from None
    others = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.relative_to(out) not in written)
    if others:
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise FileExistsError(
            f"{out} holds files that `msa-data synth` did not write ({', '.join(others[:3])}{more}); overwrite "
            f"only replaces an earlier rs-synth output, so move them away or choose another folder."
        )


def generate_synth_corpus(
    out_dir: str | os.PathLike,
    *,
    n_images: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    variants_per_layout: int = 4,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``rs-synth`` to ``out_dir`` as a Karpathy JSON + ``images/*.png``; return the JSON path.

    The corpus is generated in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a folder that looks complete. ``overwrite`` replaces only an
    earlier output: a folder holding anything its ``dataset_rs_synth.json`` does not list is
    refused (``FileExistsError``), since replacing the folder would delete it. Splits are about 80/10/10 by
    layout group (siblings never straddle splits).

    Example:
        >>> import tempfile
        >>> path = generate_synth_corpus(tempfile.mkdtemp() + "/rs-synth", n_images=8, image_size=32)
        >>> path.name, len(list(path.parent.joinpath("images").iterdir()))
        ('dataset_rs_synth.json', 8)
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}.")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) or choose another folder."
            )
        _check_only_synth_output(out)
    with atomic_directory(out, overwrite=overwrite) as staging:
        write_corpus(staging, n_images, seed, image_size, variants_per_layout, progress)
    return out / SYNTH_JSON_NAME


def ensure_synth_corpus(
    directory: str | os.PathLike,
    *,
    n_images: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    variants_per_layout: int = 4,
    progress: bool = True,
) -> Path:
    """Return the JSON path of the ``rs-synth`` corpus in ``directory``, generating it if missing.

    An existing corpus made with other parameters is an error rather than silently reused
    (the caller asked for a specific corpus) or silently replaced (it may be someone's data).
    """
    directory = Path(directory)
    path = directory / SYNTH_JSON_NAME
    wanted = {
        "seed": seed,
        "n_images": n_images,
        "image_size": image_size,
        "variants_per_layout": variants_per_layout,
        "generator_version": GENERATOR_VERSION,
    }
    if not path.is_file():
        try:
            generate_synth_corpus(
                directory,
                n_images=n_images,
                seed=seed,
                image_size=image_size,
                variants_per_layout=variants_per_layout,
                progress=progress,
            )
        except (FileExistsError, OSError):
            if not path.is_file():  # not a concurrent writer that just finished: a real problem
                raise
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    found = {k: meta.get(k) for k in wanted}
    if found != wanted:
        raise ValueError(
            f"{path} holds an rs-synth corpus made with {found}, not the requested {wanted}; "
            "use another directory or delete this one."
        )
    return path
