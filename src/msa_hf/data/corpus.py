"""Load any RS caption corpus as a ``datasets.DatasetDict`` with one row per image.

Why one loader: RSICD, RSITMD, UCM-Captions, Sydney-Captions and NWPU-Captions come either
as a Karpathy-style JSON plus an image folder or as Hub datasets with their own column and
split names, and every lab re-writes the reader. Every source here ends up in the same
schema, validated the same way, with the same three splits:

``image`` (``datasets.Image``, decoded lazily from the stored path or bytes), ``captions``
(list of str), ``image_id`` (int, unique over the whole corpus), ``file_name`` (str, the
image's path relative to the corpus root, or its name in a Hub dataset).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

from ..sources import is_hub_id
from .validation import CorpusValidationError, ValidationReport, validate_records

logger = logging.getLogger(__name__)

__all__ = [
    "load_corpus",
    "read_corpus",
    "CorpusRecords",
    "validate_corpus",
    "corpus_info",
    "SPLITS",
    "SPLIT_ALIASES",
    "CAPTION_COLUMNS",
]

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "restval": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
# Column names tried, in order, when no mapping is given.
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "picture")
CAPTION_COLUMNS = ("captions", "sentences", "caption", "sentence", "texts", "text", "raw")
FILE_NAME_COLUMNS = ("file_name", "filename", "image_name", "name", "image_path", "path")
IMAGE_ID_COLUMNS = ("image_id", "imgid", "img_id")
_NUMBERED_CAPTION = re.compile(r"^(?:captions?|sentences?|texts?|raw)[_\-]?(\d+)$")
_INFO_MARKER = "msa_hf.corpus="
SHARD_MANIFEST = "shards.json"  # what msa-data shard writes beside data/*.parquet


# ----------------------------------------------------------------------------- readers
def _caption_text(item: Any) -> Any:
    """A caption from a string or a Karpathy sentence dict (``raw``, else ``tokens``).

    Anything else is passed through unchanged, so that validation reports it as malformed.
    """
    if isinstance(item, Mapping):
        if isinstance(item.get("raw"), str):
            return item["raw"]
        tokens = item.get("tokens")
        if isinstance(tokens, list) and tokens and all(isinstance(token, str) for token in tokens):
            return " ".join(tokens)
    return item


def _describe(value: Any) -> str:
    """A JSON value's type and a short preview, for error messages."""
    kind = "null" if value is None else type(value).__name__
    preview = repr(value)
    return f"{kind} {preview[:60] + '...' if len(preview) > 60 else preview}"


def _karpathy_captions(sentences: Any, entry: str) -> tuple[list[Any], str | None]:
    """The captions of one Karpathy entry, and what is wrong with its ``sentences`` if anything."""
    expected = 'expected a list of {"raw": "..."} objects or strings'
    if not isinstance(sentences, list):
        return [], f'{entry}: "sentences" is {_describe(sentences)}; {expected}.'
    captions = [_caption_text(sentence) for sentence in sentences]
    for k, caption in enumerate(captions):
        if isinstance(caption, Mapping) and "raw" in caption:
            return captions, f'{entry}: sentences[{k}]["raw"] is {_describe(caption["raw"])}; {expected}.'
        if isinstance(caption, Mapping):
            return captions, f'{entry}: sentences[{k}] has no "raw" text (keys {sorted(caption)}); {expected}.'
        if not isinstance(caption, str):
            return captions, f"{entry}: sentences[{k}] is {_describe(caption)}; {expected}."
    return captions, None


def _read_json(path: Path) -> Any:
    """Parse a JSON file, naming the file in any error (invalid JSON or invalid UTF-8)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not valid UTF-8 (byte {exc.start}: {exc.reason}); save it as UTF-8 and try again."
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); expected a Karpathy-style caption file.") from None


def _read_karpathy(path: Path, image_root: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(
            f'{path} is not a Karpathy-style caption file: expected {{"images": [{{"filename", '
            f'"split", "sentences": [{{"raw"}}]}}]}} at the top level.'
        )
    root = Path(image_root) if image_root is not None else path.parent
    # In a file that has splits, an entry without one is a problem to report, not a train image.
    has_splits = any(isinstance(entry, Mapping) and "split" in entry for entry in data["images"])
    records = []
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, Mapping) or "filename" not in entry or "sentences" not in entry:
            raise ValueError(
                f'{path}: images[{i}] lacks "filename" or "sentences" (got keys '
                f"{sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__})."
            )
        rel = Path(entry.get("filepath") or "") / str(entry["filename"])
        captions, caption_problem = _karpathy_captions(entry["sentences"], f"images[{i}]")
        records.append(
            {
                "file_name": rel.as_posix(),
                "image": {"path": str(root / rel), "bytes": None},
                "captions": captions,
                "caption_problem": caption_problem,
                "split": entry.get("split", None if has_splits else "train"),
                "image_id": entry.get("imgid"),
                "image_root": str(root),
            }
        )
    name = data.get("dataset") or path.stem
    return records, {"format": "karpathy-json", "name": str(name), "image_root": str(root)}


def _parse_captions(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return [value]
            if isinstance(parsed, list):
                return [_caption_text(x) for x in parsed]
        return [value]
    if isinstance(value, (list, tuple)):
        return [_caption_text(x) for x in value]
    return [value]


def _pick(columns: Sequence[str], mapping: Mapping[str, Any], key: str, candidates: Sequence[str]) -> Any:
    if key in mapping:
        wanted = mapping[key]
        for col in [wanted] if isinstance(wanted, str) else wanted:
            if col not in columns:
                raise ValueError(
                    f"columns[{key!r}] names {col!r}, which is not a column; the columns are {list(columns)}."
                )
        return wanted
    for name in candidates:
        if name in columns:
            return name
    return None


def _caption_columns(columns: Sequence[str], mapping: Mapping[str, Any], where: str) -> list[str]:
    picked = _pick(columns, mapping, "captions", CAPTION_COLUMNS)
    if picked is None:
        numbered = sorted((int(m.group(1)), c) for c in columns if (m := _NUMBERED_CAPTION.match(c)))
        if numbered:
            return [c for _, c in numbered]
        raise ValueError(
            f"{where}: no captions column found among {list(columns)}; expected one of "
            f"{list(CAPTION_COLUMNS)} or numbered columns like caption_1, or pass "
            'columns={"captions": NAME}.'
        )
    return [picked] if isinstance(picked, str) else list(picked)


def _rows_to_records(
    rows: list[dict[str, Any]],
    where: str,
    mapping: Mapping[str, Any],
    split: str,
    resolve: Callable[[str], tuple[str, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Rows of a metadata table -> records, grouping rows that share a file name (one caption per row)."""
    if not rows:
        return []
    columns = list(rows[0])
    name_col = _pick(columns, mapping, "file_name", FILE_NAME_COLUMNS)
    if name_col is None:
        raise ValueError(
            f"{where}: no file name column among {columns}; expected 'file_name' or pass "
            'columns={"file_name": NAME}.'
        )
    cap_cols = _caption_columns(columns, mapping, where)
    id_col = _pick(columns, mapping, "image_id", IMAGE_ID_COLUMNS)
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = str(row[name_col])
        captions = [c for col in cap_cols for c in _parse_captions(row.get(col))]
        if name in grouped:
            grouped[name]["captions"].extend(captions)
            continue
        file_name, image = resolve(name)
        image_id = row.get(id_col) if id_col else None
        grouped[name] = {
            "file_name": file_name,
            "image": image,
            "captions": captions,
            "split": split,
            "image_id": int(image_id) if isinstance(image_id, (int, str)) and str(image_id).isdigit() else None,
        }
    return list(grouped.values())


def _read_table(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}, line {n}: not valid JSON ({exc}).") from None
            return rows
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not valid UTF-8 (byte {exc.start}: {exc.reason}); save it as UTF-8 and try again."
        ) from None


def _metadata_file(folder: Path) -> Path | None:
    for name in ("metadata.jsonl", "metadata.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_imagefolder(
    root: Path, mapping: Mapping[str, Any], image_root: Path | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Hub's imagefolder layout: ``metadata.jsonl``/``.csv`` at the root or in split folders."""
    tables: list[tuple[Path, str | None]] = []
    top = _metadata_file(root)
    if top is not None:
        tables.append((top, None))
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = _metadata_file(child)
        if meta is not None:
            if child.name.lower() not in SPLIT_ALIASES:
                raise ValueError(
                    f"{meta}: folder {child.name!r} is not a split name; expected one of {sorted(SPLIT_ALIASES)}."
                )
            tables.append((meta, child.name))
    base_root = Path(image_root) if image_root is not None else root
    records: list[dict[str, Any]] = []
    for meta, split in tables:
        folder = meta.parent.relative_to(root)

        def resolve(name: str, folder: Path = folder) -> tuple[str, dict[str, Any]]:
            rel = (folder / name).as_posix()
            return rel, {"path": str(base_root / rel), "bytes": None}

        rows = _read_table(meta)
        if split is None:  # root table: a leading split folder in file_name gives the split
            by_split: dict[str, list[dict[str, Any]]] = {}
            name_col = _pick(list(rows[0]) if rows else [], mapping, "file_name", FILE_NAME_COLUMNS) or "file_name"
            for row in rows:
                head = str(row.get(name_col, "")).split("/", 1)[0].lower()
                by_split.setdefault(
                    head if head in SPLIT_ALIASES and "/" in str(row.get(name_col, "")) else "train", []
                ).append(row)
            for s, part in by_split.items():
                records += _rows_to_records(part, str(meta), mapping, s, resolve)
        else:
            records += _rows_to_records(rows, str(meta), mapping, split, resolve)
    for record in records:
        record["image_root"] = str(base_root)
    return records, {"format": "imagefolder", "name": root.name, "image_root": str(base_root)}


def _records_from_hf(
    dd: Any, mapping: Mapping[str, Any], where: str, image_root: Path | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A ``datasets`` DatasetDict (Hub or saved to disk) -> records, via a column mapping."""
    import datasets

    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    records: list[dict[str, Any]] = []
    for split_name, ds in dd.items():
        columns = list(ds.column_names)
        image_col = _pick(columns, mapping, "image", ())
        if image_col is None:
            image_col = next((c for c in columns if isinstance(ds.features[c], datasets.Image)), None)
        if image_col is None:
            image_col = _pick(columns, {}, "image", IMAGE_COLUMNS)
        if image_col is None:
            raise ValueError(
                f"{where} [{split_name}]: no image column among {columns}; pass columns={{'image': NAME}}."
            )
        cap_cols = _caption_columns(columns, mapping, f"{where} [{split_name}]")
        name_col = _pick(columns, mapping, "file_name", FILE_NAME_COLUMNS)
        id_col = _pick(columns, mapping, "image_id", IMAGE_ID_COLUMNS)
        keep = list(
            dict.fromkeys([image_col, *cap_cols] + ([name_col] if name_col else []) + ([id_col] if id_col else []))
        )
        view = ds.select_columns(keep)
        if isinstance(view.features[image_col], datasets.Image):
            view = view.cast_column(image_col, datasets.Image(decode=False))
        table = view.to_dict()
        base = Path(image_root) if image_root is not None else None
        rows = [{k: table[k][i] for k in keep} for i in range(len(view))]
        for i, row in enumerate(rows):
            img = row[image_col]
            if isinstance(img, str):  # a column of paths
                path = Path(img)
                img = {"path": str(base / path if base is not None and not path.is_absolute() else path), "bytes": None}
            elif isinstance(img, Mapping):
                img = {"path": img.get("path"), "bytes": img.get("bytes")}
                if img["bytes"] is None and img["path"] and base is not None and not Path(img["path"]).is_absolute():
                    img["path"] = str(base / img["path"])
            else:
                raise ValueError(
                    f"{where} [{split_name}] row {i}: column {image_col!r} holds {type(img).__name__}, "
                    "expected an image (datasets.Image) or a path."
                )
            if name_col:
                file_name = str(row[name_col])
            elif img.get("path"):
                file_name = Path(img["path"]).name
            else:
                file_name = f"{split_name}/{i:06d}"
            image_id = row.get(id_col) if id_col else None
            records.append(
                {
                    "file_name": file_name,
                    "image": img,
                    "captions": [c for col in cap_cols for c in _parse_captions(row[col])],
                    "split": split_name,
                    "image_id": image_id if isinstance(image_id, int) else None,
                }
            )
    return records, {"format": "datasets", "name": where}


def _karpathy_in(folder: Path) -> Path | None:
    """The Karpathy-style JSON in a folder; Karpathy's own naming (``dataset_*.json``) wins a tie."""
    candidates = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("dataset_dict.json", "dataset_info.json", "state.json"):
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                head = fh.read(4096)
        except OSError:
            continue
        if '"images"' in head:
            candidates.append(path)
    if len(candidates) > 1:
        candidates = [path for path in candidates if path.name.startswith("dataset_")] or candidates
    if len(candidates) > 1:
        raise ValueError(
            f"{folder} holds several Karpathy-style JSON files ({[p.name for p in candidates]}); pass the one to load."
        )
    return candidates[0] if candidates else None


def _read_source(
    source: Any, image_root: Any, mapping: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import datasets

    if isinstance(source, (datasets.DatasetDict, datasets.Dataset)):
        return _records_from_hf(source, mapping, "in-memory dataset", image_root)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path, a Hub dataset id or a datasets.DatasetDict, got {type(source).__name__}."
        )
    path = Path(source).expanduser()
    root = Path(image_root).expanduser() if image_root is not None else None
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _read_karpathy(path, root)
        if path.name in ("metadata.jsonl", "metadata.csv"):
            return _read_imagefolder(path.parent, mapping, root)
        raise ValueError(f"{path}: expected a Karpathy-style .json file, a metadata.jsonl/.csv, or a folder.")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _records_from_hf(datasets.load_from_disk(str(path)), mapping, str(path), root)
        if (path / SHARD_MANIFEST).is_file():  # msa-data shard's Parquet shards
            return _records_from_hf(datasets.load_dataset("parquet", data_dir=str(path)), mapping, str(path), root)
        has_meta = _metadata_file(path) is not None or any(
            _metadata_file(c) is not None for c in path.iterdir() if c.is_dir() and c.name.lower() in SPLIT_ALIASES
        )
        if has_meta:
            return _read_imagefolder(path, mapping, root)
        karpathy = _karpathy_in(path)
        if karpathy is not None:
            return _read_karpathy(karpathy, root)
        raise ValueError(
            f"{path}: cannot tell what corpus this folder holds; expected a Karpathy-style JSON "
            "(e.g. the dataset_*.json that `msa-data synth` writes), metadata.jsonl/metadata.csv (imagefolder), "
            "or a folder written by datasets' save_to_disk."
        )
    if isinstance(source, str) and is_hub_id(source):
        try:
            loaded = datasets.load_dataset(source)
        except Exception as exc:
            raise FileNotFoundError(
                f"{source!r} is not a local file or folder, and loading it as a Hub dataset "
                f"failed ({type(exc).__name__}: {exc})."
            ) from exc
        return _records_from_hf(loaded, mapping, source, root)
    raise FileNotFoundError(
        f"{source}: no such file or folder (expected a Karpathy JSON, an imagefolder, a "
        "save_to_disk folder or a Hub dataset id)."
    )


# ----------------------------------------------------------------------------- splits
def _canonical_split(name: Any, where: str) -> str | None:
    """The canonical split name; ``None`` (an entry without a split) is left for validation to report."""
    if name is None:
        return None
    canonical = SPLIT_ALIASES.get(str(name).lower())
    if canonical is None:
        raise ValueError(f"{where}: unknown split name {name!r}; expected one of {sorted(SPLIT_ALIASES)}.")
    return canonical


def _derive_splits(by_split: dict[str, list[int]], fraction: float, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """Carve missing validation/test splits out of train (seeded).

    Returns what was derived and how, and which splits stay empty and why. Train must keep
    at least one image; when it is too small to give every missing split its share, none is
    carved (a test-only corpus, or one with a single train image, still loads and evaluates).
    """
    derived: dict[str, str] = {}
    empty: dict[str, str] = {}
    if not by_split["train"]:
        empty["train"] = "the source has no train images"
    missing = [s for s in ("validation", "test") if not by_split.get(s)]
    if not missing:
        return derived, empty
    train = by_split.get("train", [])
    n_each = max(1, int(round(fraction * len(train))))
    if len(train) < n_each * len(missing) + 1:
        for split in missing:
            empty[split] = (
                f"the source has no {split} images and no train images to carve them from"
                if not train
                else f"the source has no {split} images and its train split ({len(train)} images) is too small "
                f"to carve {n_each} out for each of {missing} and keep one (validation_fraction={fraction})"
            )
        return derived, empty
    order = np.random.default_rng(seed).permutation(len(train))
    taken: set[int] = set()
    for k, split in enumerate(missing):
        chosen = sorted(int(i) for i in order[k * n_each : (k + 1) * n_each])
        by_split[split] = [train[i] for i in chosen]
        taken.update(chosen)
        derived[split] = (
            f"{n_each} of {len(train)} train images (fraction {fraction}, seed {seed}, numpy default_rng permutation)"
        )
    by_split["train"] = [idx for i, idx in enumerate(train) if i not in taken]
    return derived, empty


def _read_records(
    source: Any, image_root: Any, columns: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Read any source into records with canonical split names; also its metadata and display name."""
    records, meta = _read_source(source, image_root, dict(columns or {}))
    name = str(source) if isinstance(source, (str, os.PathLike)) else meta["name"]
    if not records:
        raise ValueError(f"{name}: the corpus has no images.")
    for r in records:
        r["split"] = _canonical_split(r["split"], name)
    return records, meta, name


# ----------------------------------------------------------------------------- public API
def validate_corpus(
    source: Any,
    *,
    image_root: str | os.PathLike | None = None,
    columns: Mapping[str, Any] | None = None,
    check_images: bool = True,
    progress: bool = False,
    allow_outside_root: bool = False,
) -> ValidationReport:
    """Check a corpus the way :func:`load_corpus` does, and return the full report instead of raising.

    The arguments mean what they mean for :func:`load_corpus`. What ``load_corpus(...,
    on_bad="error")`` would refuse is in ``report.problems``; ``report.ok`` means it loads as is.

    Example:
        >>> import tempfile
        >>> from msa_hf.data import generate_synth_corpus
        >>> report = validate_corpus(generate_synth_corpus(tempfile.mkdtemp() + "/rs", n_images=4, image_size=32))
        >>> report.ok, report.n_images
        (True, 4)
    """
    records, _meta, name = _read_records(source, image_root, columns)
    return validate_records(
        records, name, check_images=check_images, progress=progress, allow_outside_root=allow_outside_root
    )


@dataclasses.dataclass
class CorpusRecords:
    """A corpus read, checked and split, before it becomes ``datasets``: what :func:`load_corpus` and
    ``msa-data shard`` share, so both read, validate, number and split a source the same way."""

    name: str
    meta: dict[str, Any]
    splits: dict[str, list[dict[str, Any]]]  # split -> records: file_name, image {path, bytes}, captions, image_id
    derived: dict[str, str]  # split -> how it was carved out of train
    empty: dict[str, str]  # split -> why it has no images
    dropped: int
    report: ValidationReport


def read_corpus(
    source: Any,
    *,
    image_root: str | os.PathLike | None = None,
    columns: Mapping[str, Any] | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    on_bad: str = "error",
    check_images: bool = True,
    progress: bool = False,
    allow_outside_root: bool = False,
) -> CorpusRecords:
    """The records of every split of ``source``; the arguments mean what they mean for :func:`load_corpus`."""
    if on_bad not in ("error", "drop"):
        raise ValueError(f'on_bad must be "error" or "drop", got {on_bad!r}.')
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    records, meta, name = _read_records(source, image_root, columns)
    report = validate_records(
        records, name, check_images=check_images, progress=progress, allow_outside_root=allow_outside_root
    )
    dropped = 0
    if not report.ok:
        if on_bad == "error":
            raise CorpusValidationError(report)
        bad = report.bad_indices
        dropped = len(bad)
        logger.warning('%s\nDropped %d of %d images (on_bad="drop").', report.format(), dropped, len(records))
        records = [r for i, r in enumerate(records) if i not in bad]
        if not records:
            raise ValueError(f"{name}: every image was dropped by validation.")

    ids = [r["image_id"] for r in records]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or len(set(ids)) != len(ids):
        for k, r in enumerate(records):
            r["image_id"] = k

    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for k, r in enumerate(records):
        by_split[r["split"]].append(k)
    derived, empty = _derive_splits(by_split, validation_fraction, seed)
    for split, how in derived.items():
        logger.warning("%s has no %s split: derived it from train: %s.", name, split, how)
    for split, why in empty.items():
        logger.warning("%s: the %s split is empty: %s.", name, split, why)

    return CorpusRecords(
        name=name,
        meta=meta,
        splits={split: [records[k] for k in by_split[split]] for split in SPLITS},
        derived=derived,
        empty=empty,
        dropped=dropped,
        report=report,
    )


def load_corpus(
    source: Any,
    *,
    image_root: str | os.PathLike | None = None,
    columns: Mapping[str, Any] | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    on_bad: str = "error",
    check_images: bool = True,
    progress: bool = False,
    allow_outside_root: bool = False,
) -> datasets.DatasetDict:
    """Load an RS caption corpus as a ``DatasetDict`` with splits ``train``/``validation``/``test``.

    One row per image: ``image`` (``datasets.Image``: stores the path or bytes, decodes on
    access, so data-loader workers do the decoding), ``captions`` (list of str), ``image_id``
    (unique int) and ``file_name``.

    Args:
        source: a Karpathy-style JSON file (images are found under ``image_root``, default the
            JSON's folder, honouring each entry's ``filepath``); a folder holding one (e.g. from
            ``msa-data synth``); a folder in the Hub's imagefolder layout (``metadata.jsonl`` or
            ``metadata.csv``, at the root or in ``train/``, ``valid/``, ... folders); a folder
            written by ``save_to_disk``; a ``datasets.DatasetDict``; or a Hub dataset id.
        image_root: where image paths are resolved (default: the corpus folder).
        columns: for tabular sources, which column is which, e.g. ``{"image": "img",
            "captions": "sentences", "file_name": "filename"}``; ``captions`` may be a list of
            columns (``["caption_1", ..., "caption_5"]``). Common names are detected without it.
        seed, validation_fraction: a split missing from the source (RSITMD has no ``val``) is
            carved out of ``train`` (never ``test``): ``round(validation_fraction * n_train)``
            images chosen by a seeded permutation. It is logged and stored in the split's
            ``info.description`` (see :func:`corpus_info`). When train is too small to give
            every missing split its share and keep one image, nothing is carved: the missing
            splits stay empty (logged, and ``empty_because`` in :func:`corpus_info`), so a
            test-only corpus still loads and can be evaluated.
        on_bad: ``"error"`` raises :class:`CorpusValidationError` with a report of image
            paths outside the corpus folder, missing or unreadable images, malformed or empty
            captions, entries without a split (in a file whose other entries have one),
            duplicate file names and unusual caption counts;
            ``"drop"`` drops those images and logs the report and how many were dropped.
            Entries are never moved between splits.
        check_images: decode every image once to find unreadable files (about 0.5 ms per
            256-px JPEG); ``False`` only checks that the files exist.
        progress: show a progress bar while the images are checked.
        allow_outside_root: accept image paths of a Karpathy JSON or an imagefolder that
            resolve (after symbolic links) outside ``image_root``, e.g. ``"../x.jpg"``, an
            absolute path, or a link to a shared image store. By default they are a problem
            (``outside_root``) and such a file is never opened.

    Example:
        >>> import tempfile
        >>> from msa_hf.data import generate_synth_corpus, load_corpus
        >>> json_path = generate_synth_corpus(tempfile.mkdtemp() + "/rs-synth", n_images=12, image_size=32)
        >>> corpus = load_corpus(json_path)
        >>> {split: corpus[split].num_rows for split in corpus}
        {'train': 4, 'validation': 4, 'test': 4}
        >>> sorted(corpus["train"].features)
        ['captions', 'file_name', 'image', 'image_id']
    """
    import datasets

    read = read_corpus(
        source,
        image_root=image_root,
        columns=columns,
        seed=seed,
        validation_fraction=validation_fraction,
        on_bad=on_bad,
        check_images=check_images,
        progress=progress,
        allow_outside_root=allow_outside_root,
    )
    name, meta, derived, empty = read.name, read.meta, read.derived, read.empty
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "image_id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
        }
    )
    out = {}
    for split in SPLITS:
        rows = read.splits[split]
        info = {
            "source": name,
            "format": meta["format"],
            "split": split,
            "derived_from_train": derived.get(split),
            "empty_because": empty.get(split),
            "dropped_images": read.dropped,
            "problems": read.report.counts(),
            "image_root": meta.get("image_root"),
        }
        summary = f"{meta['name']} ({meta['format']}), split {split}"
        if split in derived:
            summary += f", derived from train: {derived[split]}"
        description = f"{summary}\n{_INFO_MARKER}{json.dumps(info)}"
        out[split] = datasets.Dataset.from_dict(
            {
                "image": [r["image"] for r in rows],
                "captions": [list(r["captions"]) for r in rows],
                "image_id": [int(r["image_id"]) for r in rows],
                "file_name": [r["file_name"] for r in rows],
            },
            features=features,
            info=datasets.DatasetInfo(description=description, features=features),
            split=split,
        )
    return datasets.DatasetDict(out)


def corpus_info(dataset: Any) -> dict[str, Any]:
    """Provenance stored by :func:`load_corpus` in a split's ``info.description``.

    Keys: ``source``, ``format``, ``split``, ``derived_from_train`` (None, or how the split was
    carved out of train), ``empty_because`` (None, or why the split has no images),
    ``dropped_images``, ``problems`` (problem kind -> number of entries, before dropping),
    ``image_root``. For a ``DatasetDict``, a dict of
    those per split.
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        return {split: corpus_info(ds) for split, ds in dataset.items()}
    description = dataset.info.description or ""
    marker = description.find(_INFO_MARKER)
    if marker < 0:
        raise ValueError("this dataset was not made by msa_hf.data.load_corpus (no provenance in info.description).")
    return json.loads(description[marker + len(_INFO_MARKER) :].splitlines()[0])
