"""An on-disk image index with text and image search (``msa-index`` / ``msa-search``).

Layout of an index folder::

    INDEX/
      manifest.json            written last: its presence means "complete"
      embeddings.safetensors   {"embeddings": float32 [num_images, dim]}, L2-normalised rows
      ann.faiss                only with `--index-factory` other than Flat: the approximate index
      .partial/                only while a build is in progress or was interrupted
        plan.json              model identity + files still to encode (validates a resume)
        chunk_000000.safetensors ...  finished chunks, each written atomically
      .lock                    only while a build runs: who is building (pid, host, start)

Why this shape:

* **A half-built index never looks complete.** Every file is written to a temporary name
  and renamed (:mod:`msa_hf.io_utils`); ``embeddings.safetensors`` is written before
  ``manifest.json``; an update deletes the old manifest first. Loading requires the
  manifest and checks it against the embeddings' shape and checksum, and refuses
  non-finite rows.
* **Resumable, incremental, relocatable.** See :mod:`msa_hf.retrieval.index_build`. The
  manifest records each file's size, modification time and SHA-256, so a rebuild re-encodes
  only changed files and a moved archive keeps its embeddings.
* **Model identity.** The manifest stores the model's name/path, Hub revision and a SHA-256
  of its weights (:func:`~msa_hf.sources.model_fingerprint`); searching with other
  weights raises :class:`IndexMismatchError` rather than returning meaningless neighbours.
* **Changes are noticed.** :meth:`ImageIndex.stale_files` (``msa-index status``) lists new,
  removed and modified files, and files skipped as undecodable that changed since; every
  search hit says whether its file is missing or modified since it was embedded. A file
  whose size, mtime or inode change time (ctime) differs from the manifest's is hashed and
  compared with its recorded SHA-256; ``verify=True`` (``--verify``) hashes every file.

**Memory does not grow with the archive.** :meth:`ImageIndex.load` memory-maps
``embeddings.safetensors`` (copy-on-write) instead of reading it, and checks its checksum and
finiteness by reading the file :data:`BLOCK_ROWS` rows at a time (reading the mapped rows
would bring every page of the file into the process). Search with the approximate index
never touches the rows; exact search reads them through the map, :data:`BLOCK_ROWS` at a time.

Exact search scores the normalised embeddings block by block in torch (default), or with
FAISS's exact inner-product search (``faiss.knn``, ``backend="faiss"``, extra ``index``) which
returns the same neighbours. Hits are ordered by score, then row (= sorted file path), in both
backends; of rows tied exactly at the k-th score, torch returns the first. An index built
with ``--index-factory`` (:mod:`msa_hf.retrieval.index_ann`) searches its approximate index
(``backend="ann"``, the default for such an index) with the ``nprobe``/``efSearch`` its
manifest stores, unless the caller overrides them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from msa_hf.data.images import SkippedFile, list_image_files
from msa_hf.factory import create_model_and_processor
from msa_hf.sources import model_fingerprint, processor_fingerprint

from .encoding import encode_images, encode_texts
from .index_ann import ann_path, check_search_params, set_search_params

__all__ = [
    "BLOCK_ROWS",
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "ImageIndexError",
    "IndexBuildError",
    "IncompleteIndexError",
    "IndexMismatchError",
    "SearchHit",
    "StaleReport",
    "ImageIndex",
    "search_index",
    "faiss_available",
    "file_record",
    "describe_model",
    "relocate_hint",
    "same_stat",
    "sha256_file",
    "unchanged",
]

INDEX_FORMAT = "msa-image-index"
INDEX_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.safetensors"
PARTIAL = ".partial"
PLAN = "plan.json"
LOCK = ".lock"
BLOCK_ROWS = 16384
"""Rows that loading checks and exact search scores at a time (24 MiB at D = 384): the
memory both need beyond the mapped file, whatever the number of images."""
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


class ImageIndexError(ValueError):
    """Base class of the index errors; messages say what is wrong and what to run instead.

    Each means an input the user gave (a folder, an index, a model) does not fit: exit code 2
    in the CLIs. A build that cannot start because another one is running raises
    :class:`msa_hf.io_utils.LockHeldError` instead (exit code 1)."""


class IndexBuildError(ImageIndexError):
    """The index cannot be built from these inputs (empty folder, occupied output folder, ...)."""


class IncompleteIndexError(ImageIndexError):
    """The folder holds an interrupted build (no manifest yet), or is not an index at all."""


class IndexMismatchError(ImageIndexError):
    """The index was built with another model (different weights or embedding size)."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: ``rank`` 1-based, ``score`` the cosine similarity.

    ``stale`` is ``None`` when the file is as it was embedded, else why the score may be
    out of date (``"missing"`` or ``"modified"``).
    """

    rank: int
    score: float
    path: str
    relpath: str
    row: int
    stale: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": self.score,
            "path": self.path,
            "relpath": self.relpath,
            "row": self.row,
            "stale": self.stale,
        }


@dataclass
class StaleReport:
    """Differences between an index and its image folder now.

    ``changed_skipped`` are files the build skipped as unreadable that have changed since
    (e.g. a corrupt file replaced by a good one): a rebuild would now index them.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    changed_skipped: list[str] = field(default_factory=list)

    @property
    def is_stale(self) -> bool:
        return bool(self.added or self.removed or self.modified or self.changed_skipped)

    def summary(self) -> str:
        if not self.is_stale:
            return "index is up to date with its image folder"
        retry = f", {len(self.changed_skipped)} previously skipped changed" if self.changed_skipped else ""
        return (
            f"index is stale: {len(self.added)} new, {len(self.removed)} removed, "
            f"{len(self.modified)} modified image files{retry}"
        )


def faiss_available() -> bool:
    """True if ``faiss`` imports (``pip install msa_hf[index]``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- helpers


def file_record(root: Path, rel: Path | str) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns", "ctime_ns"}`` of ``root / rel``: the cheap identity of a file.

    ``ctime_ns`` (the inode change time, which no tool can set back) is what reveals an edit
    that kept the size and the modification time, as ``cp -p`` and ``rsync -a`` do.
    """
    st = (root / rel).stat()
    return {"path": Path(rel).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def same_stat(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two file records have the same size, modification time and (where both
    recorded it: older indexes did not) inode change time."""
    if (a.get("size"), a.get("mtime_ns")) != (b.get("size"), b.get("mtime_ns")):
        return False
    return a.get("ctime_ns") is None or b.get("ctime_ns") is None or a["ctime_ns"] == b["ctime_ns"]


def unchanged(root: Path, now: dict[str, Any], then: dict[str, Any], verify: bool = False) -> bool:
    """Whether the file ``now`` describes still has the content recorded in ``then``.

    The same size, mtime and ctime mean unchanged (nothing is read); when they differ and the
    record has a SHA-256, the content decides (a ``touch`` or ``chmod`` is not a change).
    ``verify`` hashes every file whatever its stat says.
    """
    if same_stat(now, then) and not verify:
        return True
    if not then.get("sha256"):
        return same_stat(now, then)
    return now.get("size") == then.get("size") and sha256_file(root / then["path"]) == then["sha256"]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _embeddings_offset(f: BinaryIO, path: Path, n: int, d: int, rebuild: str) -> int:
    """Byte offset of the ``(n, d)`` float32 ``embeddings`` tensor in the safetensors file ``f``.

    A safetensors file is an 8-byte little-endian header length, a JSON header (per tensor its
    ``dtype``, ``shape`` and ``data_offsets`` from the end of the header) and the raw data; the
    header is checked here so that mapping it cannot read past the file or misread its rows.
    """
    size = os.fstat(f.fileno()).st_size

    def bad(what: str) -> IncompleteIndexError:
        return IncompleteIndexError(f"{path} is not a valid embeddings file ({what}); rebuild the index: {rebuild}.")

    f.seek(0)
    prefix = f.read(8)
    header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if not 0 < header_len <= min(size - 8, MAX_HEADER_BYTES):
        raise bad(f"header length {header_len} does not fit the file's {size} bytes")
    try:
        header = json.loads(f.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"header is not JSON: {exc}") from None
    entry = header.get("embeddings") if isinstance(header, dict) else None
    if not isinstance(entry, dict):
        found = sorted(k for k in header if k != "__metadata__") if isinstance(header, dict) else header
        raise bad(f"no 'embeddings' tensor, found {found}")
    if entry.get("dtype") != "F32":
        raise bad(f"dtype {entry.get('dtype')!r}, expected 'F32' (float32)")
    shape = tuple(entry["shape"]) if isinstance(entry.get("shape"), list) else entry.get("shape")
    if shape != (n, d):
        raise IncompleteIndexError(
            f"{path} holds {shape} but the manifest lists {n} files of dimension {d}; rebuild the index: {rebuild}."
        )
    offsets = entry.get("data_offsets")
    if (
        not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets))
        or not 0 <= offsets[0] <= offsets[1]
        or offsets[1] - offsets[0] != n * d * 4
        or 8 + header_len + offsets[1] > size
    ):
        raise bad(f"data_offsets {offsets} do not hold {n}x{d} float32 values within its {size} bytes")
    return 8 + header_len + offsets[0]


def _check_embeddings(f: BinaryIO, start: int, n: int, d: int) -> tuple[str, list[int]]:
    """SHA-256 of the whole file ``f`` and the rows (of the ``(n, d)`` float32 tensor at byte
    ``start``) holding a NaN or infinity, in one read of :data:`BLOCK_ROWS` rows at a time.

    Read rather than mapped: checking the mapped rows would bring every page of the file into
    the process's resident memory, which search with an approximate index never needs.
    """
    digest = hashlib.sha256()
    bad_rows: list[int] = []
    buffer = np.empty((min(n, BLOCK_ROWS), d), dtype=np.float32)
    f.seek(0)
    digest.update(f.read(start))
    for first in range(0, n, BLOCK_ROWS):
        block = buffer[: min(BLOCK_ROWS, n - first)]
        if f.readinto(memoryview(block).cast("B")) != block.nbytes:
            raise IncompleteIndexError(f"{f.name} became shorter while it was read; reload the index.")
        digest.update(block)
        bad_rows.extend((first + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
    for rest in iter(lambda: f.read(1 << 22), b""):
        digest.update(rest)
    return digest.hexdigest(), bad_rows


def describe_model(identity: dict[str, Any]) -> str:
    """``name (weights sha256 0123456789ab…)`` for messages."""
    name = identity.get("name_or_path") or "<in-memory model>"
    return f"{name} (weights sha256 {str(identity.get('weights_sha256'))[:12]}…)"


def relocate_hint(index_path: Path, old_root: Path | str) -> str:
    """What to run when the image folder an index was built from is gone."""
    return (
        f"The image folder {old_root} that index {index_path} was built from no longer exists. If it moved, run "
        f"`msa-index build NEW_FOLDER --out {index_path} --relocate` (keeps the embeddings of files whose content "
        f"is unchanged), or compare with `msa-index status {index_path} --folder NEW_FOLDER`."
    )


# ----------------------------------------------------------------------------- the index


class ImageIndex:
    """A loaded index: file list, normalised embeddings and the manifest that describes them.

    Use :meth:`load` (or :func:`build_index`), then :meth:`search_text` / :meth:`search_images`
    with a model, or :meth:`search` with query embeddings you computed yourself.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any], embeddings: torch.Tensor) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.embeddings = embeddings
        self._ann_index: Any = None
        self._ann_lock = threading.Lock()  # search parameters are set on the shared FAISS index
        self._verified: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    # -- loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageIndex:
        """Load and validate an index folder; errors say how to (re)build it.

        ``embeddings`` is a copy-on-write memory map of ``embeddings.safetensors``: resident
        memory stays flat in the number of images (the page cache holds what searches read), and
        writing into it changes this process's copy, never the file.
        """
        folder = Path(path).expanduser()
        if not folder.exists():
            raise FileNotFoundError(
                f"Index {folder} does not exist; create it with `msa-index build IMAGE_FOLDER --model M --out {folder}`."
            )
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            partial = folder / PARTIAL
            if partial.is_dir():
                done = len(list(partial.glob("chunk_*.safetensors")))
                raise IncompleteIndexError(
                    f"Index {folder} is incomplete: a build was interrupted ({done} chunk(s) finished, no "
                    f"manifest.json yet). Rerun the same `msa-index build ... --out {folder}` to resume it."
                )
            raise IncompleteIndexError(f"{folder} is not an MSA image index (no {MANIFEST}).")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IncompleteIndexError(f"{manifest_path} is not valid JSON ({exc}); rebuild the index.") from exc
        if manifest.get("format") != INDEX_FORMAT:
            raise IncompleteIndexError(
                f"{manifest_path} is not an MSA image index manifest (format {manifest.get('format')!r})."
            )
        if int(manifest.get("format_version", 0)) > INDEX_FORMAT_VERSION:
            raise IncompleteIndexError(
                f"Index {folder} has format version {manifest['format_version']}, newer than this msa_hf "
                f"supports ({INDEX_FORMAT_VERSION}); upgrade msa_hf."
            )
        emb_path = folder / manifest.get("embeddings_file", EMBEDDINGS)
        if not emb_path.is_file():
            raise IncompleteIndexError(f"Index {folder} lacks {emb_path.name}; rebuild it with `msa-index build`.")
        n, d = len(manifest["files"]), int(manifest["embedding_dim"])
        rebuild = f"`msa-index build {manifest.get('root')} --out {folder} --overwrite`"
        with open(emb_path, "rb") as f:  # one open file: the bytes checked are the bytes mapped
            start = _embeddings_offset(f, emb_path, n, d, rebuild)
            sha, bad_rows = _check_embeddings(f, start, n, d)
            expected_sha = manifest.get("embeddings_sha256")
            if expected_sha and sha != expected_sha:
                raise IncompleteIndexError(
                    f"{emb_path} does not match its manifest (checksum differs): the index is corrupt or was "
                    f"modified; rebuild it with `msa-index build ... --out {folder}`."
                )
            if bad_rows:
                raise IncompleteIndexError(
                    f"Index {folder} holds non-finite embeddings for {len(bad_rows)} file(s) (e.g. "
                    f"{manifest['files'][bad_rows[0]]['path']}), written by an older msa_hf; they would rank "
                    f"arbitrarily. Rebuild it: {rebuild}."
                )
            # Copy-on-write, as the tensor loaded into RAM used to be: a write changes only this
            # process's copy of a page, never the file. (Not safetensors' loader: older versions read it.)
            mapped = np.memmap(f, dtype=np.float32, mode="c", offset=start, shape=(n, d))
        return cls(folder, manifest, torch.from_numpy(mapped))

    # -- properties
    @property
    def root(self) -> Path:
        """The image folder the index was built from."""
        return Path(self.manifest["root"])

    @property
    def files(self) -> list[str]:
        """File paths relative to :attr:`root`, in row order (sorted)."""
        return [f["path"] for f in self.manifest["files"]]

    @property
    def model_identity(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def ann(self) -> dict[str, Any] | None:
        """The manifest's description of the approximate index (factory, search defaults,
        measured recall), or ``None`` when the index has exact search only."""
        return self.manifest.get("ann")

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files left out of the index, and why."""
        return [SkippedFile(s["path"], s["reason"]) for s in self.manifest.get("skipped", [])]

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __repr__(self) -> str:
        return (
            f"ImageIndex({str(self.path)!r}, {len(self)} images, dim {self.embeddings.shape[1]}, "
            f"model {describe_model(self.model_identity)})"
        )

    # -- validation
    def check_model(self, model: torch.nn.Module, identity: dict[str, Any] | None = None) -> None:
        """Raise :class:`IndexMismatchError` unless ``model`` has exactly the weights the index was built with."""
        if model in self._verified:
            return
        identity = identity or model_fingerprint(model)
        ours = self.model_identity
        if identity["weights_sha256"] != ours.get("weights_sha256"):
            raise IndexMismatchError(
                f"Index {self.path} was built with model {describe_model(ours)}, but the model given is "
                f"{describe_model(identity)}. Its embeddings are not comparable; search with the index's "
                f"model, or rebuild: `msa-index build {self.root} --model NEW_MODEL --out {self.path} --overwrite`."
            )
        self._verified.add(model)

    def stale_files(self, folder: str | os.PathLike | None = None, verify: bool = False) -> StaleReport:
        """Compare the manifest with the image folder as it is now.

        A file counts as modified when its size, modification time or inode change time
        changed and, where the manifest has its SHA-256, its content too (a ``touch`` is not a
        change; see :func:`unchanged`). ``verify`` compares the content of every file. Files
        the build skipped as unreadable count when they changed since.

        Raises:
            FileNotFoundError: the folder is gone; the message says how to relocate the index.
        """
        root = Path(folder) if folder is not None else self.root
        if not root.is_dir():
            if folder is None:
                raise FileNotFoundError(relocate_hint(self.path, root))
            raise NotADirectoryError(f"--folder {root} is not a folder.")
        current, _ = list_image_files(root, recursive=self.manifest.get("recursive", True), exclude=[self.path])
        now = {rel.as_posix(): file_record(root, rel) for rel in current}
        then = {f["path"]: f for f in self.manifest["files"]}
        skipped_then = {s["path"]: s for s in self.manifest.get("skipped", [])}
        report = StaleReport()
        report.added = sorted(p for p in now if p not in then and p not in skipped_then)
        report.removed = sorted(p for p in then if p not in now)
        report.modified = sorted(p for p in then if p in now and not unchanged(root, now[p], then[p], verify))
        report.changed_skipped = sorted(
            p for p, s in skipped_then.items() if p in now and "size" in s and not same_stat(now[p], s)
        )
        return report

    def file_status(self, row: int) -> str | None:
        """``None`` if row ``row``'s file is as it was embedded, else ``"missing"`` or
        ``"modified"``. One ``stat`` (and a hash only when the stat changed, :func:`unchanged`):
        cheap enough for every search hit."""
        record = self.manifest["files"][row]
        try:
            now = file_record(self.root, record["path"])
        except (FileNotFoundError, NotADirectoryError):
            return "missing"
        return None if unchanged(self.root, now, record) else "modified"

    # -- search
    def search_settings(
        self, backend: str | None = None, nprobe: int | None = None, ef_search: int | None = None
    ) -> str:
        """The backend a search with these settings uses: ``backend``, or by default ``"ann"``
        when the index has an approximate index and ``"torch"`` otherwise.

        Raises:
            ValueError: an unknown backend, ``"ann"`` on an index without one, or ``nprobe``/
                ``ef_search`` where they do not apply (exact search, or an index without that part).
        """
        asked, backend = backend, backend or ("ann" if self.ann else "torch")
        if backend not in ("torch", "faiss", "ann"):
            raise ValueError(f"`backend` must be 'torch', 'faiss' or 'ann', got {backend!r}.")
        if backend == "ann" and not self.ann:
            raise ValueError(
                f"--backend ann: index {self.path} has exact search only; add an approximate index with "
                f"`msa-index ann {self.path} --index-factory IVF4096,PQ32`."
            )
        if backend != "ann" and (nprobe is not None or ef_search is not None):
            flag = "--nprobe" if nprobe is not None else "--ef-search"
            why = f"--backend {asked} is exact search" if asked else f"index {self.path} has exact search only"
            raise ValueError(
                f"{flag} applies to approximate search, but {why}; leave it out (or build an approximate index: "
                f"`msa-index ann {self.path} --index-factory IVF4096,PQ32`)."
            )
        if backend == "ann":
            check_search_params(self._ann(), self.ann["factory"], nprobe, ef_search)
        return backend

    def search(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        k: int = 10,
        backend: str | None = None,
        check_files: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` rows for each query embedding (queries are L2-normalised here).

        ``backend`` defaults to the approximate index where the index has one (``nprobe``/
        ``ef_search`` override its stored defaults), else exact search in torch; see
        :meth:`search_settings`. With ``check_files`` each hit's file is checked
        (:meth:`file_status`) and its ``stale`` field says if it is missing or modified since it
        was embedded. Approximate search may return fewer than ``k`` hits (too few probed lists).
        """
        q = (
            (
                query_embeddings.detach()
                if isinstance(query_embeddings, torch.Tensor)
                else torch.as_tensor(np.asarray(query_embeddings))
            )
            .float()
            .cpu()
        )
        if q.ndim == 1:
            q = q.unsqueeze(0)
        if q.ndim != 2 or q.shape[1] != self.embeddings.shape[1]:
            raise IndexMismatchError(
                f"Query embeddings have shape {tuple(q.shape)} but index {self.path} holds dimension "
                f"{self.embeddings.shape[1]}: the query model differs from the index's model."
            )
        if not bool(torch.isfinite(q).all()):
            bad = (~torch.isfinite(q).all(dim=1)).nonzero().squeeze(1).tolist()
            raise ValueError(f"Query embedding(s) {bad} are not finite (NaN or infinite pixel values?).")
        if int(k) < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        k = min(int(k), len(self))
        q = torch.nn.functional.normalize(q, dim=-1)
        backend = self.search_settings(backend, nprobe, ef_search)
        if backend == "torch":
            scores, rows = self._search_torch(q, k)
        elif backend == "faiss":
            scores, rows = self._search_faiss(q, k)
        else:
            scores, rows = self._search_ann(q, k, nprobe, ef_search)
        root, records = self.root, self.manifest["files"]
        return [
            [
                SearchHit(
                    rank=r + 1,
                    score=float(s),
                    path=str(root / records[i]["path"]),
                    relpath=records[i]["path"],
                    row=int(i),
                    stale=self.file_status(int(i)) if check_files else None,
                )
                for r, (s, i) in enumerate((s, i) for s, i in zip(srow.tolist(), irow.tolist()) if i >= 0)
            ]
            for srow, irow in zip(scores, rows)
        ]

    def _search_torch(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k``, :data:`BLOCK_ROWS` rows at a time: ``Q x (k + BLOCK_ROWS)`` scores in
        memory, never ``Q x N``. The best so far come first and each block in row order, so a
        stable sort keeps every tie in row order, as one sort of all ``N`` scores would."""
        n, nq = len(self), q.shape[0]
        best_s, best_i = q.new_empty((nq, 0)), torch.empty((nq, 0), dtype=torch.long)
        for first in range(0, n, BLOCK_ROWS):
            last = min(n, first + BLOCK_ROWS)
            scores = torch.cat([best_s, q @ self.embeddings[first:last].t()], dim=1)
            rows = torch.cat([best_i, torch.arange(first, last).expand(nq, -1)], dim=1)
            keep = min(k, scores.shape[1])
            kth = scores.topk(keep, dim=1).values[:, -1]
            out_s, out_i = [], []
            for qi in range(nq):
                # Everything tied with the k-th score is a candidate; a stable sort keeps ties in
                # row order, so results do not depend on topk's internal order.
                cand = (scores[qi] >= kth[qi]).nonzero().squeeze(1)
                vals, order = torch.sort(scores[qi, cand], descending=True, stable=True)
                out_s.append(vals[:keep])
                out_i.append(rows[qi, cand[order[:keep]]])
            best_s, best_i = torch.stack(out_s), torch.stack(out_i)
        return best_s, best_i

    def _search_faiss(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FAISS's exact inner-product search (``faiss.knn``) over blocks of the mapped rows,
        merged by (score, row): an ``IndexFlatIP`` would hold its own copy of all ``N x D``
        floats. The hits equal one search over all rows, except which of several rows tied
        exactly at the k-th score make the cut: FAISS leaves that unspecified, in one search as
        in blocks (the torch backend takes the lowest rows)."""
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("backend='faiss' needs faiss: `pip install msa_hf[index]` (or faiss-cpu).") from exc
        xq = np.ascontiguousarray(q.numpy(), dtype=np.float32)
        rows = self.embeddings.numpy()
        scores, found = [], []
        for first in range(0, len(self), BLOCK_ROWS):
            block = np.ascontiguousarray(rows[first : first + BLOCK_ROWS], dtype=np.float32)
            s, i = faiss.knn(xq, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            scores.append(s)
            found.append(i + first)
        best_s, best_i = _row_ordered(np.concatenate(scores, axis=1), np.concatenate(found, axis=1))
        return best_s[:, :k], best_i[:, :k]

    def _ann(self) -> Any:
        """The approximate index, read on first use and checked against the manifest."""
        if self._ann_index is None:
            import faiss

            ann = self.ann
            path = ann_path(self.path, ann)
            rebuild = f"rebuild it: `msa-index ann {self.path} --index-factory {ann['factory']}`."
            if not path.is_file() or sha256_file(path) != ann.get("sha256"):
                raise IncompleteIndexError(
                    f"Index {self.path} lacks its approximate index {path.name} or it does not match the manifest; "
                    f"{rebuild}"
                )
            index = faiss.read_index(str(path))
            if index.ntotal != len(self):
                raise IncompleteIndexError(
                    f"{path} holds {index.ntotal} vectors but index {self.path} has {len(self)} images; {rebuild}"
                )
            self._ann_index = index
        return self._ann_index

    def _search_ann(
        self, q: torch.Tensor, k: int, nprobe: int | None, ef_search: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ann = self.ann
        index = self._ann()
        with self._ann_lock:
            set_search_params(index, ann["factory"], nprobe or ann.get("nprobe"), ef_search or ann.get("ef_search"))
            return _row_ordered(*index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k))

    def search_text(
        self,
        texts: str | Sequence[str],
        model: Any,
        processor: Any,
        k: int = 10,
        backend: str | None = None,
        verify_model: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[SearchHit]]:
        """Encode ``texts`` with ``model`` and return the top-``k`` images for each.

        An empty or whitespace-only query is refused (``ValueError``): it would still rank
        every image, by nothing the user asked for. A query longer than the model's
        ``text_max_length`` tokens is truncated with a warning.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("No query given: pass at least one text.")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                where = "The query" if len(texts) == 1 else f"Query {i + 1}"
                raise ValueError(f"{where} is empty ({text!r}): type what the images should show.")
        if verify_model:
            self.check_model(model)
        for i in processor.truncated(texts):
            where = "The query" if len(texts) == 1 else f"Query {i + 1}"
            warnings.warn(
                f"{where} is longer than the {processor.text_max_length} tokens the model reads; it was truncated "
                f"and only its start counts: {texts[i][:60]!r}...",
                stacklevel=2,
            )
        query = encode_texts(model, processor, texts, progress=False)
        return self.search(query, k=k, backend=backend, nprobe=nprobe, ef_search=ef_search)

    def search_images(
        self,
        images: Sequence[Any],
        model: Any,
        processor: Any,
        k: int = 10,
        backend: str | None = None,
        verify_model: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[SearchHit]]:
        """Encode query images (PIL, arrays or file paths) and return the top-``k`` indexed images."""
        if verify_model:
            self.check_model(model)
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        proc_sha = processor_fingerprint(processor)
        if proc_sha and self.manifest.get("processor_sha256") and proc_sha != self.manifest["processor_sha256"]:
            warnings.warn(
                f"The image processor's settings differ from those index {self.path} was built with; "
                f"image-query scores may be off.",
                stacklevel=2,
            )
        q = encode_images(model, processor, images, progress=False, desc="Encoding queries")
        return self.search(q, k=k, backend=backend, nprobe=nprobe, ef_search=ef_search)


# ----------------------------------------------------------------------------- one-call search


def search_index(
    index: ImageIndex | str | os.PathLike,
    text: str | Sequence[str] | None = None,
    image: Any = None,
    *,
    k: int = 10,
    model: Any = None,
    processor: Any = None,
    revision: str | None = None,
    backend: str | None = None,
    device: str | torch.device | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> list[list[SearchHit]]:
    """The Python twin of ``msa-search``: load the index (if a path), the model, and search.

    ``model`` may be an ``MSAModel``, a folder/Hub id (at ``revision``), or ``None`` for the model
    recorded in the index manifest (a Hub model at its recorded commit). Exactly one of ``text``
    (a string or list) and ``image`` (a path, PIL image or list of them) is required. The model
    must have the index's weights. ``backend``, ``nprobe`` and ``ef_search`` are
    :meth:`ImageIndex.search`'s.
    """
    if (text is None) == (image is None):
        raise ValueError("Give exactly one of `text` and `image` to search with.")
    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index)
    idx.search_settings(backend, nprobe, ef_search)  # before loading a model for nothing
    if model is None or isinstance(model, (str, os.PathLike)):
        if model is None and revision is not None:
            raise ValueError(
                "`revision` (--revision) needs `model` (--model): the index's own model loads at its recorded commit."
            )
        source = model if model is not None else idx.model_identity.get("name_or_path")
        if model is None and not Path(str(source or "")).expanduser().exists():
            revision = idx.model_identity.get("revision")
        if not source:
            raise ValueError(
                f"Index {idx.path} was built from an in-memory model and does not record where it lives; "
                f"pass `model` (--model) explicitly."
            )
        model, loaded_proc, _ = create_model_and_processor(source, revision, device=device)
        processor = processor or loaded_proc
    elif processor is None:
        raise ValueError("`processor` is required when `model` is a model object.")
    options = {"k": k, "backend": backend, "nprobe": nprobe, "ef_search": ef_search}
    if text is not None:
        return idx.search_text(text, model, processor, **options)
    return idx.search_images(image, model, processor, **options)


def _row_ordered(scores: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """FAISS results with ties ordered by row, as the torch backend orders them."""
    order = np.lexsort((rows, -scores), axis=-1)
    return torch.from_numpy(np.take_along_axis(scores, order, -1)), torch.from_numpy(
        np.take_along_axis(rows, order, -1)
    )
