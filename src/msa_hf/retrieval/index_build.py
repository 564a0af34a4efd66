"""Building an image index, step by step, on one process or across a launcher's processes.

:func:`build_index` runs these named steps (each is a function here):

1. :func:`scan_folder`: the image files with their size and modification time, and the
   non-image files it skips.
2. :func:`read_existing`: what an index already at ``--out`` offers for reuse, after
   checking that it was built with the same model and folder (or ``--relocate``).
3. :func:`plan_build`: which files keep their embedding (same path, size, mtime and ctime;
   or, when an old index has content hashes, the same SHA-256: a moved or touched file) and
   which must be encoded; files skipped as undecodable stay skipped until they change.
4. :func:`prepare_partial`: resume the finished chunks of an interrupted build of the same
   plan, or discard stale partial work.
5. :func:`encode_chunks`: every process encodes its share of the pending chunks through the
   shared image loader (:func:`msa_hf.data.views.image_loader`); the main process writes
   every chunk file (:func:`write_chunk`).
6. :func:`gather_chunks` reads the chunks back and :func:`commit_index` writes the
   embeddings, then the manifest, then removes ``.partial``.
7. :func:`attach_ann`: with ``--index-factory`` (or when the index had an approximate index),
   build it from the stored embeddings, measure its recall against exact search and add it
   to the manifest. It only needs the stored embeddings, so changing it re-encodes nothing
   (:func:`rebuild_ann`, ``msa-index ann``).

A build holds ``INDEX/.lock`` (:func:`msa_hf.io_utils.exclusive_lock`) from the first step
to the last, so a second build into the same folder refuses with the holder's pid, host and
start time instead of corrupting it.

**Several processes.** Under ``accelerate launch`` or ``torchrun`` every process runs the same
command; the main process scans, plans and broadcasts the plan, process ``r`` encodes
pending chunks ``r, r + W, r + 2W, …``, the chunks of each round are gathered to the main
process, which writes them and commits one index. Chunk boundaries and batches do not
depend on the number of processes, so the index equals a one-process build. Step 7 runs on the
main process (FAISS uses its cores) while the others wait for the outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from msa_hf.data.images import SkippedFile, list_image_files, warn_skipped
from msa_hf.data.views import ImageListView, image_loader
from msa_hf.io_utils import atomic_save_safetensors, atomic_write_bytes, atomic_write_json, exclusive_lock
from msa_hf.sources import model_fingerprint, processor_fingerprint

from .distributed import ProcessGroup, process_group
from .encoding import encode_image_batches, model_device, progress_bar
from .index import (
    EMBEDDINGS,
    INDEX_FORMAT,
    INDEX_FORMAT_VERSION,
    LOCK,
    MANIFEST,
    PARTIAL,
    PLAN,
    ImageIndex,
    IncompleteIndexError,
    IndexBuildError,
    IndexMismatchError,
    describe_model,
    file_record,
    same_stat,
    sha256_file,
)
from .index_ann import ANN_FILE, AnnSettings, ann_path, build_ann

__all__ = [
    "AnnSettings",
    "BuildPlan",
    "Chunk",
    "FolderScan",
    "Reusable",
    "attach_ann",
    "build_index",
    "chunk_rows",
    "commit_index",
    "encode_chunks",
    "gather_chunks",
    "plan_build",
    "prepare_partial",
    "read_existing",
    "rebuild_ann",
    "scan_folder",
    "settings_of",
    "write_chunk",
]


@dataclass
class FolderScan:
    """Step 1: the image files under ``root`` (``path``, ``size``, ``mtime_ns``) and the
    non-image files skipped."""

    root: Path
    records: list[dict[str, Any]]
    skipped: list[SkippedFile]


@dataclass
class Reusable:
    """Step 2: what an existing index offers: embeddings by path and by content hash, and the
    files it skipped as undecodable (with their size and mtime then)."""

    manifest: dict[str, Any] | None = None
    by_path: dict[str, tuple[dict[str, Any], torch.Tensor]] = field(default_factory=dict)
    by_hash: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class BuildPlan:
    """Step 3: every current image file (``records``, in row order), the embeddings kept
    (``reused``, by path), the files to encode (``todo``, cut into chunks) and the files that
    stay skipped."""

    records: list[dict[str, Any]]
    reused: dict[str, torch.Tensor]
    todo: list[dict[str, Any]]
    still_skipped: list[dict[str, Any]]
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self.todo) / self.chunk_size)


def chunk_rows(chunk: int, n_todo: int, chunk_size: int) -> range:
    """Rows of the files to encode that make up chunk ``chunk`` (the unit of resumption)."""
    return range(chunk * chunk_size, min(n_todo, (chunk + 1) * chunk_size))


@dataclass
class Chunk:
    """Step 5: one encoded chunk: ``embeddings[i]`` belongs to ``files[i]`` (content hash
    ``sha256[i]``); ``skipped`` are ``{"path", "reason"}`` of the chunk's files left out."""

    index: int
    files: list[str]
    sha256: list[str]
    embeddings: torch.Tensor
    skipped: list[dict[str, str]]


# ----------------------------------------------------------------------------- the steps


def scan_folder(root: Path, out: Path, recursive: bool = True) -> FolderScan:
    """Step 1 (raises :class:`IndexBuildError` when the folder holds no image file)."""
    images, skipped = list_image_files(root, recursive=recursive, exclude=[out])
    if not images:
        extra = f" ({len(skipped)} non-image file(s) skipped, e.g. {skipped[0].path})" if skipped else ""
        raise IndexBuildError(f"No image files found in {root}{extra}; expected files ending in .jpg, .png, .tif, ...")
    return FolderScan(root, [file_record(root, rel) for rel in images], skipped)


def _holds_user_files(out: Path) -> bool:
    return any(p.name not in (LOCK, PARTIAL) for p in out.iterdir())


def read_existing(
    out: Path, identity: dict[str, Any], root: Path, *, overwrite: bool = False, relocate: bool = False
) -> Reusable:
    """Step 2. An index of the same weights and folder offers its embeddings; with
    ``relocate`` one of another folder does too. With ``overwrite`` nothing is reused (the
    old files stay until the new index replaces them).

    Raises:
        IndexMismatchError: ``out`` holds an index of other weights (and no ``overwrite``).
        IndexBuildError: ``out`` holds an index of another folder (and neither flag), or files
            that are not an index.
    """
    if not out.is_dir():
        return Reusable()
    try:
        old = ImageIndex.load(out)
    except IncompleteIndexError as exc:
        if overwrite:
            return Reusable()
        if (out / MANIFEST).is_file():
            raise IndexBuildError(f"{exc} Pass --overwrite to rebuild it from scratch.") from None
        if _holds_user_files(out):
            raise IndexBuildError(
                f"Output folder {out} exists, is not empty and is not an MSA index; "
                f"choose another --out (or pass --overwrite to replace its contents)."
            ) from None
        return Reusable()
    manifest = old.manifest
    if manifest["model"].get("weights_sha256") != identity["weights_sha256"]:
        if overwrite:
            return Reusable()
        raise IndexMismatchError(
            f"{out} already holds an index built with model {describe_model(manifest['model'])}; the model "
            f"given is {describe_model(identity)}. Pass --overwrite to replace it, or choose another --out."
        )
    if overwrite:
        return Reusable()
    if manifest.get("root") != str(root) and not relocate:
        moved = "" if Path(manifest.get("root", "")).is_dir() else " (which no longer exists)"
        raise IndexBuildError(
            f"{out} already holds an index of {manifest.get('root')}{moved}, not {root}. If the folder moved, pass "
            f"--relocate to keep the embeddings of unchanged files; pass --overwrite to replace the index, or "
            f"choose another --out."
        )
    reusable = Reusable(manifest=manifest)
    for row, record in enumerate(manifest["files"]):
        reusable.by_path[record["path"]] = (record, old.embeddings[row])
        if record.get("sha256"):
            reusable.by_hash[record["sha256"]] = old.embeddings[row]
    reusable.skipped = {s["path"]: s for s in manifest.get("skipped", []) if "size" in s}
    if relocate and manifest.get("root") != str(root) and not reusable.by_hash:
        warnings.warn(
            f"Index {out} has no content hashes (built by an older msa_hf): only files with the same relative "
            f"path, size and modification time keep their embeddings.",
            stacklevel=3,
        )
    return reusable


def plan_build(scan: FolderScan, reusable: Reusable, chunk_size: int, verify: bool = False) -> BuildPlan:
    """Step 3. Content hashes are computed here only for files whose size, mtime or ctime
    changed (every file with ``verify``), and only when the old index has hashes to match
    them against."""
    plan = BuildPlan(records=[], reused={}, todo=[], still_skipped=[], chunk_size=chunk_size)
    for record in scan.records:
        path = record["path"]
        old = reusable.by_path.get(path)
        skipped = reusable.skipped.get(path)
        if old is not None and same_stat(old[0], record) and not verify:
            record = {**record, "sha256": old[0].get("sha256")}
            plan.reused[path] = old[1]
        elif skipped is not None and same_stat(skipped, record):
            plan.still_skipped.append(skipped)
            continue
        elif reusable.by_hash:
            record = {**record, "sha256": sha256_file(scan.root / path)}
            if record["sha256"] in reusable.by_hash:
                plan.reused[path] = reusable.by_hash[record["sha256"]]
            else:
                plan.todo.append(record)
        else:
            plan.todo.append(record)
        plan.records.append(record)
    return plan


def _up_to_date(scan: FolderScan, reusable: Reusable, plan: BuildPlan) -> bool:
    manifest = reusable.manifest
    return (
        manifest is not None
        and not plan.todo
        and manifest.get("root") == str(scan.root)
        and manifest["files"] == plan.records
        and manifest.get("skipped", []) == _all_skipped(scan, plan, [])
    )


def prepare_partial(partial: Path, plan_doc: dict[str, Any], n_chunks: int) -> set[int]:
    """Step 4: the chunks already finished for exactly this plan (an interrupted build's
    work); partial work of another plan is discarded with a warning."""
    old_plan = None
    if (partial / PLAN).is_file():
        try:
            old_plan = json.loads((partial / PLAN).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old_plan = None
    if old_plan != plan_doc and partial.exists():
        if old_plan is not None:
            warnings.warn(
                f"Discarding an interrupted build in {partial}: the model, the settings or the image "
                f"files changed since it started.",
                stacklevel=3,
            )
        shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    if old_plan != plan_doc:
        atomic_write_json(partial / PLAN, plan_doc, indent=None)
        return set()
    return {c for c in range(n_chunks) if _chunk_path(partial, c).is_file()}


def _chunk_path(partial: Path, chunk: int) -> Path:
    return partial / f"chunk_{chunk:06d}.safetensors"


def encode_chunks(
    model: Any,
    processor: Any,
    root: Path,
    todo: Sequence[str],
    chunks: Sequence[int],
    *,
    chunk_size: int,
    batch_size: int = 32,
    num_workers: int = 0,
    bar: Any = None,
) -> Iterator[Chunk]:
    """Step 5: encode ``chunks`` (of the relative paths ``todo``) in order, one :class:`Chunk`
    each. Files are read, hashed, decoded and preprocessed in the loader workers; batches
    never straddle a chunk, so chunks come out the same however they are shared out."""
    bounds = {c: chunk_rows(c, len(todo), chunk_size) for c in chunks}
    batches = [list(bounds[c][i : i + batch_size]) for c in chunks for i in range(0, len(bounds[c]), batch_size)]
    if not batches:
        return
    loader = image_loader(
        ImageListView(todo, root, hash_files=True),
        processor,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=model_device(model).type == "cuda",
        id_column="row",
        keep_columns=("sha256",),
        on_error="skip",
    )
    files: list[str] = []
    hashes: list[str] = []
    parts: list[torch.Tensor] = []
    skipped: list[dict[str, str]] = []
    for encoded in encode_image_batches(model, loader, bar=bar):
        chunk = (encoded.ids or [row for row, _ in encoded.failures])[0] // chunk_size
        files += [todo[i] for i in encoded.ids]
        hashes += encoded.columns.get("sha256", [])
        skipped += [{"path": todo[i], "reason": reason} for i, reason in encoded.failures]
        if encoded.ids:
            parts.append(encoded.embeddings)
        if len(files) + len(skipped) == len(bounds[chunk]):
            yield Chunk(chunk, files, hashes, torch.cat(parts) if parts else torch.zeros(0, 0), skipped)
            files, hashes, parts, skipped = [], [], [], []


def write_chunk(partial: Path, chunk: Chunk) -> None:
    """Step 5, main process: one chunk file, atomically (the unit of resumption)."""
    embeddings = chunk.embeddings if chunk.files else torch.zeros(0, 1)
    metadata = {
        "files": json.dumps(chunk.files),
        "sha256": json.dumps(chunk.sha256),
        "skipped": json.dumps(chunk.skipped),
    }
    atomic_save_safetensors(_chunk_path(partial, chunk.index), {"embeddings": embeddings}, metadata)


def gather_chunks(partial: Path, n_chunks: int) -> tuple[dict[str, tuple[str, torch.Tensor]], list[dict[str, str]]]:
    """Step 6: ``{path: (sha256, embedding)}`` of every encoded file and the skipped ones."""
    encoded: dict[str, tuple[str, torch.Tensor]] = {}
    skipped: list[dict[str, str]] = []
    for c in range(n_chunks):
        with safe_open(str(_chunk_path(partial, c)), framework="pt") as f:
            meta = f.metadata() or {}
            tensor = f.get_tensor("embeddings")
        hashes = json.loads(meta.get("sha256", "[]"))
        for row, path in enumerate(json.loads(meta.get("files", "[]"))):
            encoded[path] = (hashes[row] if row < len(hashes) else None, tensor[row])
        skipped += json.loads(meta.get("skipped", "[]"))
    return encoded, skipped


def _all_skipped(scan: FolderScan, plan: BuildPlan, undecodable: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Manifest ``skipped`` entries: non-image files, and image files that could not be
    embedded with the size and mtime they had (so a later change is noticed)."""
    stats = {r["path"]: r for r in plan.todo}
    entries = [s.to_dict() for s in scan.skipped] + list(plan.still_skipped)
    for s in undecodable:
        record = stats.get(s["path"], {})
        seen = {key: record.get(key) for key in ("size", "mtime_ns", "ctime_ns")}
        entries.append({**s, **seen})
    return sorted(entries, key=lambda s: s["path"])


def commit_index(
    out: Path,
    scan: FolderScan,
    plan: BuildPlan,
    encoded: dict[str, tuple[str, torch.Tensor]],
    undecodable: list[dict[str, str]],
    *,
    identity: dict[str, Any],
    processor_sha256: str | None,
    recursive: bool,
) -> ImageIndex:
    """Step 6: write the embeddings, then the manifest (after removing the old one first),
    then remove ``.partial``.

    Raises:
        IndexBuildError: not one image could be embedded; ``.partial`` is removed, so no later
            command reports an interrupted build.
    """
    files: list[dict[str, Any]] = []
    rows: list[torch.Tensor] = []
    for record in plan.records:
        path = record["path"]
        if path in plan.reused:
            files.append(record)
            rows.append(plan.reused[path])
        elif path in encoded:
            sha, embedding = encoded[path]
            files.append({**record, "sha256": sha})
            rows.append(embedding)
    skipped = _all_skipped(scan, plan, undecodable)
    if not files:
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
        example = next((s for s in skipped if "size" in s), skipped[0])
        raise IndexBuildError(
            f"None of the {len(plan.records) + len(plan.still_skipped)} image files in {scan.root} could be "
            f"embedded (e.g. {example['path']}: {example['reason']})."
        )
    embeddings = torch.stack(rows).float()
    (out / MANIFEST).unlink(missing_ok=True)
    atomic_save_safetensors(out / EMBEDDINGS, {"embeddings": embeddings}, {"format": INDEX_FORMAT})
    import msa_hf

    manifest = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "msa_hf_version": getattr(msa_hf, "__version__", None),
        "root": str(scan.root),
        "recursive": recursive,
        "model": identity,
        "processor_sha256": processor_sha256,
        "embedding_dim": int(embeddings.shape[1]),
        "normalized": True,
        "similarity": "dot product of L2-normalised embeddings (cosine)",
        "dtype": "float32",
        "num_images": len(files),
        "embeddings_file": EMBEDDINGS,
        "embeddings_sha256": sha256_file(out / EMBEDDINGS),
        "files": files,
        "skipped": skipped,
        "reused": len(plan.reused),
        "encoded": len(files) - len(plan.reused),
    }
    atomic_write_json(out / MANIFEST, manifest, indent=1)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    warn_skipped([SkippedFile(s["path"], s["reason"]) for s in skipped], what=f"files in {scan.root}", stacklevel=4)
    return ImageIndex(out, manifest, embeddings)


def _same_ann(old: dict[str, Any] | None, wanted: AnnSettings, embeddings_sha256: str) -> bool:
    """Whether the manifest's approximate index is the one ``wanted`` (not exact) asks for, of
    these embeddings."""
    if old is None:
        return False
    asked = {"factory": wanted.factory, "seed": wanted.seed, "recall_queries": wanted.recall_queries}
    asked |= {k: v for k, v in (("nprobe", wanted.nprobe), ("ef_search", wanted.ef_search)) if v is not None}
    if wanted.train_size is not None:
        asked["train_size"] = wanted.train_size
    return old.get("embeddings_sha256") == embeddings_sha256 and all(old.get(k) == v for k, v in asked.items())


def settings_of(ann: dict[str, Any] | None) -> AnnSettings:
    """The settings that rebuild the approximate index a manifest describes (exact if none)."""
    if ann is None:
        return AnnSettings()
    return AnnSettings(
        factory=ann["factory"],
        nprobe=ann.get("nprobe"),
        ef_search=ann.get("ef_search"),
        train_size=ann.get("train_size"),
        seed=ann.get("seed", 0),
        recall_queries=ann.get("recall_queries", 1000),
    )


def attach_ann(index: ImageIndex, wanted: AnnSettings) -> ImageIndex:
    """Step 7: make ``index``'s approximate index the one ``wanted`` asks for, built from its
    stored embeddings (nothing is re-encoded); ``Flat`` removes it. The file is written before
    the manifest that names it, so an interruption leaves a valid exact index."""
    manifest = dict(index.manifest)
    if wanted.exact:
        if manifest.pop("ann", None) is not None:
            atomic_write_json(index.path / MANIFEST, manifest, indent=1)
        (index.path / ANN_FILE).unlink(missing_ok=True)  # also one a re-commit of the embeddings left behind
        return ImageIndex(index.path, manifest, index.embeddings)
    if _same_ann(manifest.get("ann"), wanted, manifest["embeddings_sha256"]):
        return index
    import faiss

    built = build_ann(index.embeddings, wanted)
    data = faiss.serialize_index(built.index)
    path = ann_path(index.path, built.report)
    atomic_write_bytes(path, np.asarray(data).tobytes())
    manifest["ann"] = {
        **built.report,
        "bytes_per_image": round(path.stat().st_size / len(index), 2),
        "sha256": sha256_file(path),
        "embeddings_sha256": manifest["embeddings_sha256"],
    }
    atomic_write_json(index.path / MANIFEST, manifest, indent=1)
    return ImageIndex(index.path, manifest, index.embeddings)


def rebuild_ann(index_folder: str | os.PathLike, wanted: AnnSettings) -> ImageIndex:
    """``msa-index ann``: step 7 alone, on a finished index, under the build lock (no model,
    no image folder: only the stored embeddings are read)."""
    folder = Path(index_folder).expanduser().resolve()
    ImageIndex.load(folder)  # a clear error before the lock file is created in a wrong folder
    with exclusive_lock(folder / LOCK, purpose=f"msa-index ann of {folder}"):
        return attach_ann(ImageIndex.load(folder), wanted)


# ----------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class _Settings:
    root: Path
    out: Path
    batch_size: int
    chunk_size: int
    num_workers: int
    progress: bool


def _encode_and_write(
    group: ProcessGroup, model: Any, processor: Any, settings: _Settings, todo: list[str], pending: list[int]
) -> None:
    """Step 5 for every process: round ``i`` encodes chunk ``pending[i * W + rank]`` on each
    process and writes the round's chunks on the main process."""
    partial = settings.out / PARTIAL
    mine = pending[group.rank :: group.world_size]
    total = sum(len(chunk_rows(c, len(todo), settings.chunk_size)) for c in pending)
    enabled = settings.progress and group.is_main
    with progress_bar(total, "Indexing images", enabled=enabled) as bar:
        chunks = encode_chunks(
            model,
            processor,
            settings.root,
            todo,
            mine,
            chunk_size=settings.chunk_size,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            bar=bar if group.world_size == 1 else None,
        )
        try:
            for _ in range(math.ceil(len(pending) / group.world_size)):
                for chunk in group.all_gather(next(chunks, None)):
                    if chunk is not None and group.is_main:
                        write_chunk(partial, chunk)
                        if group.world_size > 1:
                            bar.update(len(chunk.files) + len(chunk.skipped))
        finally:
            chunks.close()  # stops the loader's worker processes


def _lead(
    group: ProcessGroup,
    model: Any,
    processor: Any,
    settings: _Settings,
    *,
    recursive: bool,
    overwrite: bool,
    relocate: bool,
    verify: bool,
    ann: AnnSettings | None,
) -> ImageIndex:
    """The main process: steps 1-4, then its share of 5, then 6 and 7; followers get the plan
    and the outcome by broadcast, so an error here never leaves them waiting."""
    try:
        scan = scan_folder(settings.root, settings.out, recursive)
        identity = model_fingerprint(model)
        processor_sha = processor_fingerprint(processor)
        reusable = read_existing(settings.out, identity, settings.root, overwrite=overwrite, relocate=relocate)
        wanted = ann if ann is not None else settings_of((reusable.manifest or {}).get("ann"))
        plan = plan_build(scan, reusable, settings.chunk_size, verify=verify)
        if _up_to_date(scan, reusable, plan):
            index = attach_ann(ImageIndex.load(settings.out), wanted)
            group.broadcast(("done", None))
            return index
        plan_doc = {
            "model": identity,
            "processor_sha256": processor_sha,
            "root": str(settings.root),
            "chunk_size": settings.chunk_size,
            "todo": plan.todo,
        }
        done = prepare_partial(settings.out / PARTIAL, plan_doc, plan.n_chunks)
    except Exception as exc:
        group.broadcast(("error", exc))
        raise
    todo = [r["path"] for r in plan.todo]
    pending = [c for c in range(plan.n_chunks) if c not in done]
    group.broadcast(("encode", (todo, pending)))
    _encode_and_write(group, model, processor, settings, todo, pending)
    try:
        encoded, undecodable = gather_chunks(settings.out / PARTIAL, plan.n_chunks)
        index = commit_index(
            settings.out,
            scan,
            plan,
            encoded,
            undecodable,
            identity=identity,
            processor_sha256=processor_sha,
            recursive=recursive,
        )
        index = attach_ann(index, wanted)
    except Exception as exc:
        group.broadcast(("error", exc))
        raise
    group.broadcast(("ok", None))
    return index


def _follow(group: ProcessGroup, model: Any, processor: Any, settings: _Settings) -> None:
    """Any other process: wait for the plan, encode its share, wait for the outcome."""
    kind, payload = group.broadcast(None)
    if kind == "error":
        raise payload
    if kind == "done":
        return None
    todo, pending = payload
    _encode_and_write(group, model, processor, settings, todo, pending)
    kind, payload = group.broadcast(None)
    if kind == "error":
        raise payload
    return None


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (resumable work, user files) or already gone
        folder.rmdir()


def build_index(
    image_folder: str | os.PathLike,
    model: Any,
    processor: Any,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    chunk_size: int = 1024,
    recursive: bool = True,
    overwrite: bool = False,
    relocate: bool = False,
    verify: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    group: ProcessGroup | None = None,
    ann: AnnSettings | None = None,
) -> ImageIndex | None:
    """Encode every image under ``image_folder`` into an index at ``out`` (resumable,
    incremental, relocatable; one process or many).

    Non-image files, images that fail to decode and images whose embedding is not finite are
    skipped and listed (in a warning and in ``manifest["skipped"]``). An existing index at
    ``out`` built with the same weights is updated (only new or changed files are encoded);
    one built with other weights is replaced only with ``overwrite=True``. ``relocate=True``
    accepts an index of another folder (the archive moved) and keeps the embeddings of files
    whose content is unchanged. A file counts as unchanged when its size, mtime and ctime are
    as recorded, or else when its SHA-256 is; ``verify=True`` hashes every file instead.

    ``ann`` adds an approximate index (:class:`AnnSettings`, ``--index-factory``), built from
    the stored embeddings and rebuilt whenever they change; ``None`` keeps the one the index
    has (exact search only for a new index), ``AnnSettings("Flat")`` removes it.

    Under ``accelerate launch`` / ``torchrun`` (``group`` defaults to the launcher's
    processes), every process must call this; the main process returns the index, the
    others ``None``.

    Raises:
        IndexBuildError: empty folder, no decodable image, ``out`` occupied by something else.
        IndexMismatchError: ``out`` holds an index of another model and ``overwrite`` is False.
        msa_hf.io_utils.LockHeldError: another build is writing into ``out``.
    """
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    group = group or process_group()
    settings = _Settings(
        root=Path(image_folder).expanduser().resolve(),
        out=Path(out).expanduser().resolve(),
        batch_size=batch_size,
        chunk_size=chunk_size,
        num_workers=num_workers,
        progress=progress,
    )
    if not group.is_main:
        return _follow(group, model, processor, settings)
    created = not settings.out.exists()
    try:
        settings.out.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(settings.out / LOCK, purpose=f"msa-index build of {settings.root}"):
            return _lead(
                group,
                model,
                processor,
                settings,
                recursive=recursive,
                overwrite=overwrite,
                relocate=relocate,
                verify=verify,
                ann=ann,
            )
    except Exception:
        if created:
            _remove_if_empty(settings.out)
        raise
