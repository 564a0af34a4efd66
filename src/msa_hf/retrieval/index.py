"""An on-disk image index with text and image search (``msa-index`` / ``msa-search``).

Layout of an index folder::

    INDEX/
      manifest.json            written last: its presence means "complete"
      embeddings.safetensors   {"embeddings": float32 [num_images, dim]}, L2-normalised rows
      .partial/                only while a build is in progress or was interrupted
        plan.json              model identity + files still to encode (validates a resume)
        chunk_000000.safetensors ...  finished chunks, each written atomically

Why this shape:

* **A half-built index never looks complete.** Chunks are written to a temporary name and
  renamed; ``embeddings.safetensors`` is written before ``manifest.json``; an update deletes
  the old manifest first. Loading requires the manifest and checks it against the
  embeddings' shape and checksum.
* **Resumable.** Rerunning the same build picks up the finished chunks if the model and the
  file list are unchanged; otherwise the stale partial work is discarded with a warning.
* **Incremental.** Rebuilding a complete index with the same model re-encodes only files
  that are new or whose size/modification time changed.
* **Model identity.** The manifest stores the model's name/path, Hub revision and a SHA-256
  of its weights (:func:`~msa_hf.retrieval.encoding.model_fingerprint`); searching with other
  weights raises :class:`IndexMismatchError` rather than returning meaningless neighbours.

Search is exact: one matrix product with the normalised embeddings in torch (default), or a
FAISS ``IndexFlatIP`` (``backend="faiss"``, extra ``index``) which returns the same
neighbours. Ties are broken by row order (= sorted file path) in the torch backend.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .encoding import (
    ImageLoadError,
    SkippedFile,
    _encode_image_batch,
    _model_device,
    _progress,
    encode_texts,
    list_image_files,
    load_image,
    load_model_and_processor,
    model_fingerprint,
    processor_fingerprint,
    warn_skipped,
)

__all__ = [
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "ImageIndexError",
    "IndexBuildError",
    "IncompleteIndexError",
    "IndexMismatchError",
    "SearchHit",
    "StaleReport",
    "ImageIndex",
    "build_index",
    "search_index",
    "faiss_available",
]

INDEX_FORMAT = "msa-image-index"
INDEX_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.safetensors"
PARTIAL = ".partial"
PLAN = "plan.json"


class ImageIndexError(Exception):
    """Base class of the index errors; messages say what is wrong and what to run instead."""


class IndexBuildError(ImageIndexError):
    """The index cannot be built from these inputs (empty folder, occupied output folder, ...)."""


class IncompleteIndexError(ImageIndexError):
    """The folder holds an interrupted build (no manifest yet), or is not an index at all."""


class IndexMismatchError(ImageIndexError):
    """The index was built with another model (different weights or embedding size)."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: ``rank`` 1-based, ``score`` the cosine similarity."""

    rank: int
    score: float
    path: str
    relpath: str
    row: int

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, "path": self.path, "relpath": self.relpath, "row": self.row}


@dataclass
class StaleReport:
    """Differences between an index and its image folder now."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    @property
    def is_stale(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def summary(self) -> str:
        if not self.is_stale:
            return "index is up to date with its image folder"
        return (
            f"index is stale: {len(self.added)} new, {len(self.removed)} removed, "
            f"{len(self.modified)} modified image files"
        )


def faiss_available() -> bool:
    """True if ``faiss`` imports (``pip install msa_hf[index]``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- helpers


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _file_record(root: Path, rel: Path) -> dict[str, Any]:
    st = (root / rel).stat()
    return {"path": rel.as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_tensor_atomic(path: Path, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({"embeddings": tensor.contiguous()}, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files; an index is meant to be shared
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe_model(identity: dict[str, Any]) -> str:
    name = identity.get("name_or_path") or "<in-memory model>"
    return f"{name} (weights sha256 {str(identity.get('weights_sha256'))[:12]}…)"


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
        self._faiss_index: Any = None
        self._verified: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    # -- loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageIndex:
        """Load and validate an index folder; errors say how to (re)build it."""
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
        expected_sha = manifest.get("embeddings_sha256")
        if expected_sha and _sha256_file(emb_path) != expected_sha:
            raise IncompleteIndexError(
                f"{emb_path} does not match its manifest (checksum differs): the index is corrupt or was "
                f"modified; rebuild it with `msa-index build ... --out {folder}`."
            )
        embeddings = load_file(str(emb_path))["embeddings"]
        n, d = len(manifest["files"]), int(manifest["embedding_dim"])
        if tuple(embeddings.shape) != (n, d):
            raise IncompleteIndexError(
                f"{emb_path} holds {tuple(embeddings.shape)} but the manifest lists {n} files of dimension {d}; "
                f"rebuild the index."
            )
        return cls(folder, manifest, embeddings.float())

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
    def skipped(self) -> list[SkippedFile]:
        return [SkippedFile(**s) for s in self.manifest.get("skipped", [])]

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __repr__(self) -> str:
        return (
            f"ImageIndex({str(self.path)!r}, {len(self)} images, dim {self.embeddings.shape[1]}, "
            f"model {_describe_model(self.model_identity)})"
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
                f"Index {self.path} was built with model {_describe_model(ours)}, but the model given is "
                f"{_describe_model(identity)}. Its embeddings are not comparable; search with the index's "
                f"model, or rebuild: `msa-index build {self.root} --model NEW_MODEL --out {self.path} --overwrite`."
            )
        self._verified.add(model)

    def stale_files(self, folder: str | os.PathLike | None = None) -> StaleReport:
        """Compare the manifest's files (size, mtime) with the image folder as it is now."""
        root = Path(folder) if folder is not None else self.root
        current, _ = list_image_files(root, recursive=self.manifest.get("recursive", True), exclude=[self.path])
        now = {rel.as_posix(): _file_record(root, rel) for rel in current}
        then = {f["path"]: f for f in self.manifest["files"]}
        skipped_then = {s["path"] for s in self.manifest.get("skipped", [])}
        report = StaleReport()
        report.added = sorted(p for p in now if p not in then and p not in skipped_then)
        report.removed = sorted(p for p in then if p not in now)
        report.modified = sorted(
            p
            for p in then
            if p in now and (now[p]["size"], now[p]["mtime_ns"]) != (then[p]["size"], then[p]["mtime_ns"])
        )
        return report

    # -- search
    def search(
        self, query_embeddings: torch.Tensor | np.ndarray, k: int = 10, backend: str = "torch"
    ) -> list[list[SearchHit]]:
        """Top-``k`` rows for each query embedding (queries are L2-normalised here)."""
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
        if int(k) < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        k = min(int(k), len(self))
        q = torch.nn.functional.normalize(q, dim=-1)
        if backend == "torch":
            scores, rows = self._search_torch(q, k)
        elif backend == "faiss":
            scores, rows = self._search_faiss(q, k)
        else:
            raise ValueError(f"`backend` must be 'torch' or 'faiss', got {backend!r}.")
        root, files = self.root, self.files
        return [
            [
                SearchHit(rank=r + 1, score=float(s), path=str(root / files[i]), relpath=files[i], row=int(i))
                for r, (s, i) in enumerate(zip(srow.tolist(), irow.tolist()))
            ]
            for srow, irow in zip(scores, rows)
        ]

    def _search_torch(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = q @ self.embeddings.t()  # (Q, N)
        out_s, out_i = [], []
        kth = scores.topk(k, dim=1).values[:, -1]
        for qi in range(scores.shape[0]):
            # Everything tied with the k-th score is a candidate; a stable sort keeps ties in
            # row order, so results do not depend on topk's internal order.
            cand = (scores[qi] >= kth[qi]).nonzero().squeeze(1)
            vals, order = torch.sort(scores[qi, cand], descending=True, stable=True)
            out_s.append(vals[:k])
            out_i.append(cand[order[:k]])
        return torch.stack(out_s), torch.stack(out_i)

    def _search_faiss(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("backend='faiss' needs faiss: `pip install msa_hf[index]` (or faiss-cpu).") from exc
        if self._faiss_index is None:
            index = faiss.IndexFlatIP(self.embeddings.shape[1])
            index.add(np.ascontiguousarray(self.embeddings.numpy(), dtype=np.float32))
            self._faiss_index = index
        scores, rows = self._faiss_index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k)
        return torch.from_numpy(scores), torch.from_numpy(rows)

    def search_text(
        self,
        texts: str | Sequence[str],
        model: Any,
        processor: Any,
        k: int = 10,
        backend: str = "torch",
        verify_model: bool = True,
    ) -> list[list[SearchHit]]:
        """Encode ``texts`` with ``model`` and return the top-``k`` images for each."""
        if verify_model:
            self.check_model(model)
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.search(encode_texts(model, processor, texts, progress=False), k=k, backend=backend)

    def search_images(
        self,
        images: Sequence[Any],
        model: Any,
        processor: Any,
        k: int = 10,
        backend: str = "torch",
        verify_model: bool = True,
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
        loaded = [load_image(x) if isinstance(x, (str, os.PathLike)) else x for x in images]
        q = _encode_image_batch(model, processor, loaded, _model_device(model))
        return self.search(q, k=k, backend=backend)


# ----------------------------------------------------------------------------- building


def _load_manifest_if_any(out: Path) -> dict[str, Any] | None:
    try:
        return ImageIndex.load(out).manifest
    except (ImageIndexError, FileNotFoundError):
        return None


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
    num_workers: int = 0,
    progress: bool = True,
) -> ImageIndex:
    """Encode every image under ``image_folder`` into an index at ``out`` (resumable, incremental).

    Non-image files are skipped and listed; images that fail to decode are skipped and listed
    (in the warning and in ``manifest["skipped"]``). An existing index at ``out`` built with the
    same weights is updated (only new or changed files are encoded); one built with other
    weights is replaced only with ``overwrite=True``.

    Raises:
        IndexBuildError: empty folder, no decodable image, ``out`` occupied by something else.
        IndexMismatchError: ``out`` holds an index of another model and ``overwrite`` is False.
    """
    root = Path(image_folder).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    images, skipped = list_image_files(root, recursive=recursive, exclude=[out])
    if not images:
        extra = f" ({len(skipped)} non-image file(s) skipped, e.g. {skipped[0].path})" if skipped else ""
        raise IndexBuildError(f"No image files found in {root}{extra}; expected files ending in .jpg, .png, .tif, ...")

    identity = model_fingerprint(model)
    proc_sha = processor_fingerprint(processor)
    records = [_file_record(root, rel) for rel in images]

    # What is already at `out`?
    reuse: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    old = None
    if out.exists():
        old = _load_manifest_if_any(out)
        if old is not None:
            same_model = old["model"].get("weights_sha256") == identity["weights_sha256"]
            if not same_model and not overwrite:
                raise IndexMismatchError(
                    f"{out} already holds an index built with model {_describe_model(old['model'])}; the model "
                    f"given is {_describe_model(identity)}. Pass --overwrite to replace it, or choose another --out."
                )
            if old.get("root") != str(root) and not overwrite:
                raise IndexBuildError(
                    f"{out} already holds an index of {old.get('root')}, not {root}. Pass --overwrite to replace "
                    f"it, or choose another --out."
                )
            if same_model and not overwrite:
                old_index = ImageIndex.load(out)
                for row, f in enumerate(old["files"]):
                    reuse[f["path"]] = (f, old_index.embeddings[row])
        elif not (out / PARTIAL).is_dir() and any(out.iterdir()) and not overwrite:
            raise IndexBuildError(
                f"Output folder {out} exists, is not empty and is not an MSA index; "
                f"choose another --out (or pass --overwrite to replace its contents)."
            )
        if overwrite:
            for name in (MANIFEST, EMBEDDINGS):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / PARTIAL, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    reused_rows = {
        r["path"]: reuse[r["path"]][1]
        for r in records
        if r["path"] in reuse
        and (reuse[r["path"]][0]["size"], reuse[r["path"]][0]["mtime_ns"]) == (r["size"], r["mtime_ns"])
    }
    todo = [r for r in records if r["path"] not in reused_rows]
    if (
        not todo
        and old is not None
        and old["files"] == records
        and old.get("skipped", []) == [s.to_dict() for s in skipped]
    ):
        return ImageIndex.load(out)  # up to date: nothing to encode or rewrite

    # Resume or start the partial build.
    partial = out / PARTIAL
    plan = {"model": identity, "processor_sha256": proc_sha, "root": str(root), "chunk_size": chunk_size, "todo": todo}
    old_plan = None
    if (partial / PLAN).is_file():
        try:
            old_plan = json.loads((partial / PLAN).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old_plan = None
        if old_plan != plan:
            warnings.warn(
                f"Discarding an interrupted build in {partial}: the model, the settings or the image "
                f"files changed since it started.",
                stacklevel=2,
            )
            shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    if old_plan != plan:
        _write_json_atomic(partial / PLAN, plan)

    device = _model_device(model)
    chunk_results: dict[str, torch.Tensor] = {}
    bad: list[SkippedFile] = []
    n_chunks = (len(todo) + chunk_size - 1) // chunk_size
    done = {c for c in range(n_chunks) if (partial / f"chunk_{c:06d}.safetensors").is_file()}
    initial = sum(min(chunk_size, len(todo) - c * chunk_size) for c in done)
    pool = None
    if num_workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(num_workers)
    try:
        with _progress(len(todo), "Indexing images", progress, "img", initial=initial) as bar:
            for c in range(n_chunks):
                chunk_path = partial / f"chunk_{c:06d}.safetensors"
                if c in done:
                    continue
                chunk = todo[c * chunk_size : (c + 1) * chunk_size]
                ok_paths: list[str] = []
                chunk_bad: list[dict[str, str]] = []
                embs: list[torch.Tensor] = []
                for b0 in range(0, len(chunk), batch_size):
                    batch = chunk[b0 : b0 + batch_size]

                    def _load(rec: dict[str, Any]) -> Any:
                        try:
                            return load_image(root / rec["path"])
                        except (ImageLoadError, OSError) as exc:
                            return exc

                    loaded = list(pool.map(_load, batch)) if pool else [_load(r) for r in batch]
                    good = []
                    for rec, img in zip(batch, loaded):
                        if isinstance(img, Exception):
                            cause = img.__cause__ or img
                            chunk_bad.append(
                                {
                                    "path": rec["path"],
                                    "reason": f"cannot decode image ({type(cause).__name__}: {cause})",
                                }
                            )
                        else:
                            good.append((rec, img))
                    if good:
                        embs.append(_encode_image_batch(model, processor, [g[1] for g in good], device))
                        ok_paths.extend(g[0]["path"] for g in good)
                    bar.update(len(batch))
                dim = embs[0].shape[1] if embs else 0
                tensor = torch.cat(embs) if embs else torch.zeros(0, max(dim, 1))
                _save_tensor_atomic(
                    chunk_path, tensor, {"files": json.dumps(ok_paths), "skipped": json.dumps(chunk_bad)}
                )
    finally:
        if pool:
            pool.shutdown()

    # Gather chunks (also those from an earlier, interrupted run).
    for c in range(n_chunks):
        chunk_path = partial / f"chunk_{c:06d}.safetensors"
        with safe_open(str(chunk_path), framework="pt") as f:
            meta = f.metadata() or {}
            tensor = f.get_tensor("embeddings")
        paths = json.loads(meta.get("files", "[]"))
        bad.extend(SkippedFile(**s) for s in json.loads(meta.get("skipped", "[]")))
        for row, p in enumerate(paths):
            chunk_results[p] = tensor[row]

    final_records = [r for r in records if r["path"] in reused_rows or r["path"] in chunk_results]
    if not final_records:
        raise IndexBuildError(
            f"None of the {len(records)} image files in {root} could be decoded (e.g. {bad[0].path}: {bad[0].reason})."
        )
    embeddings = torch.stack([reused_rows.get(r["path"], chunk_results.get(r["path"])) for r in final_records]).float()
    all_skipped = sorted(skipped + bad, key=lambda s: s.path)

    # Commit: old manifest away first, then embeddings, then the new manifest.
    (out / MANIFEST).unlink(missing_ok=True)
    _save_tensor_atomic(out / EMBEDDINGS, embeddings, {"format": INDEX_FORMAT})
    import msa_hf

    manifest = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "created": _now(),
        "msa_hf_version": getattr(msa_hf, "__version__", None),
        "root": str(root),
        "recursive": recursive,
        "model": identity,
        "processor_sha256": proc_sha,
        "embedding_dim": int(embeddings.shape[1]),
        "normalized": True,
        "similarity": "dot product of L2-normalised embeddings (cosine)",
        "dtype": "float32",
        "num_images": len(final_records),
        "embeddings_file": EMBEDDINGS,
        "embeddings_sha256": _sha256_file(out / EMBEDDINGS),
        "files": final_records,
        "skipped": [s.to_dict() for s in all_skipped],
        "reused": len(reused_rows),
        "encoded": len(final_records) - len(reused_rows),
    }
    _write_json_atomic(out / MANIFEST, manifest)
    shutil.rmtree(partial, ignore_errors=True)
    warn_skipped(all_skipped, what=f"files in {root}", stacklevel=2)
    return ImageIndex(out, manifest, embeddings)


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
    backend: str = "torch",
    device: str | torch.device | None = None,
) -> list[list[SearchHit]]:
    """The Python twin of ``msa-search``: load the index (if a path), the model, and search.

    ``model`` may be an ``MSAModel``, a folder/Hub id (at ``revision``), or ``None`` for the model
    recorded in the index manifest (a Hub model at its recorded commit). Exactly one of ``text``
    (a string or list) and ``image`` (a path, PIL image or list of them) is required. The model
    must have the index's weights.
    """
    if (text is None) == (image is None):
        raise ValueError("Give exactly one of `text` and `image` to search with.")
    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index)
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
        model, loaded_proc = load_model_and_processor(source, device=device, revision=revision)
        processor = processor or loaded_proc
    elif processor is None:
        raise ValueError("`processor` is required when `model` is a model object.")
    if text is not None:
        return idx.search_text(text, model, processor, k=k, backend=backend)
    return idx.search_images(image, model, processor, k=k, backend=backend)
