"""Image files: finding them in a folder and decoding them, the one way every path decodes.

Training, evaluation, the index builder, search by image and classification all decode
through :func:`load_image`, so an image gives the same pixels (and the same embedding)
whichever tool reads it.

Why a ``target_size``: an RS archive can hold 144-megapixel scenes that the model sees at
224 px. Decoding one in full costs 432 MB of RGB plus 1.7 GB as float in the processor
(per data-loader worker); asking the JPEG decoder for a 1/2, 1/4 or 1/8 scale
(:meth:`PIL.Image.Image.draft`, DCT-domain scaling) and box-reducing other formats right
after decoding keeps every worker small. The decoded image always stays at least twice
``target_size`` on both sides, so the processor's own antialiased resize still does the
last step.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "SkippedFile",
    "list_image_files",
    "load_image",
    "read_regular_file",
    "warn_skipped",
]

# Formats PIL decodes that RS archives use (GeoTIFF tiles, JPEG/PNG chips, ...).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jp2", ".ppm", ".pgm"}
)


class ImageLoadError(ValueError):
    """An image file could not be opened or decoded (corrupt, truncated, or not an image)."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that was left out, and why (shown to the user and stored in index manifests)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def list_image_files(
    folder: str | os.PathLike,
    *,
    recursive: bool = True,
    exclude: Iterable[str | os.PathLike] = (),
) -> tuple[list[Path], list[SkippedFile]]:
    """Image files under ``folder`` (sorted, relative paths) and the non-image files skipped.

    Images are recognised by extension (``IMAGE_EXTENSIONS``, case-insensitive); whether they
    decode is checked when they are loaded. Hidden files and folders (``.name``) are ignored
    silently; other files are returned in the skipped list so callers can show them, and so
    are image names that are not regular files (a dangling symbolic link, a FIFO).
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
                problem = _not_a_regular_file(current / name)
                if problem is None:
                    images.append(rel)
                else:
                    skipped.append(SkippedFile(rel.as_posix(), problem))
            else:
                skipped.append(
                    SkippedFile(rel.as_posix(), f"not an image file (extension {Path(name).suffix or 'none'!r})")
                )
    images.sort(key=lambda p: p.as_posix())
    skipped.sort(key=lambda s: s.path)
    return images, skipped


def _not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or ``None``: a dangling link would abort a
    scan and a FIFO would block the first read forever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            return "removed while the folder was being read"
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    except OSError as exc:
        return f"cannot stat it ({type(exc).__name__}: {exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((kind for test, kind in kinds if test(mode)), "a device")


def read_regular_file(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file (``OSError``).

    The file is opened without blocking and checked on the open descriptor, so a FIFO that
    replaced an image after a folder was scanned fails at once instead of hanging the reader.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is not a regular file ({_file_kind(mode)})")
        return f.read()


def _reduce_to(image: Image.Image, target_size: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps both sides >= ``2 * target_size``."""
    factor = min(image.width, image.height) // (2 * target_size)
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode PIL cannot reduce (palette, 16-bit): keep the full image
        return image


def load_image(
    source: str | os.PathLike | bytes | BinaryIO, *, target_size: int | None = None, name: str | None = None
) -> Image.Image:
    """Open and fully decode one image (first frame), raising :class:`ImageLoadError` if it is bad.

    ``source`` is a path, the file's bytes, or a binary file object. ``Image.open`` alone
    only reads the header; decoding here makes a truncated or corrupt file fail with its
    name (``name``, else the path) rather than later inside the processor.

    With ``target_size`` (the processor's ``image_size``), images larger than four times that
    are decoded at a reduced scale that is still at least twice ``target_size`` on both sides
    (JPEG: decoder scaling; other formats: a box reduce after decoding), so the processor's
    antialiased resize still does the final filtering. With a ``target_size``, PIL's
    decompression-bomb warning (above 89 megapixels) is silenced, as large scenes are
    expected in RS archives; images above its hard limit (179 megapixels) are still refused.

    Example:

    ```python
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (4000, 3000)).save(buffer, "JPEG")
    >>> load_image(buffer.getvalue(), target_size=224).size  # decoded at 1/4 scale
    (1000, 750)
    ```
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<image bytes>")
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            if target_size:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                if target_size and image.format == "JPEG":
                    image.draft(image.mode, (2 * target_size, 2 * target_size))
                image.load()
                image.seek(0)
                reduced = _reduce_to(image, target_size) if target_size else image
                return reduced if reduced is not image else image.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, ValueError) as exc:
        layout = _tiff_layout(stream)
        if layout is not None:  # a valid TIFF PIL has no decoder for: not "corrupt"
            raise ImageLoadError(
                f"cannot decode image {label}: a TIFF of {layout}, a sample layout PIL does not decode; if the file "
                f"is intact, convert it to 8- or 16-bit grayscale or RGB (e.g. `gdal_translate -ot UInt16 -b 1 -b 2 "
                f"-b 3 IN.tif OUT.tif`)"
            ) from exc
        if isinstance(exc, UnidentifiedImageError):
            raise ImageLoadError(f"cannot decode image {label}: not in an image format PIL reads (corrupt?)") from exc
        raise ImageLoadError(f"cannot decode image {label}: {type(exc).__name__}: {exc}") from exc
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode image {label}: {type(exc).__name__}: {exc}") from exc


_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}


def _tiff_layout(source: str | os.PathLike | BinaryIO) -> str | None:
    """``"4 band(s) of 16-bit unsigned integer samples, planar (one plane per band)"`` when
    ``source`` is a TIFF whose first directory reads, else ``None`` (not a TIFF, or too damaged
    to tell)."""
    from PIL import TiffImagePlugin

    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")  # PIL warns about each damaged tag; the caller reports the file
            if isinstance(source, (str, os.PathLike)):
                stream: BinaryIO = stack.enter_context(open(source, "rb"))
            else:
                stream = source
                stream.seek(0)
            header = stream.read(8)
            if header[:4] not in (b"II*\x00", b"MM\x00*"):
                return None
            directory = TiffImagePlugin.ImageFileDirectory_v2(header)
            stream.seek(directory.next)
            directory.load(stream)
    except Exception:  # PIL's TIFF parser raises many types on damaged data: then it is no layout to report
        return None
    if any(tag not in directory for tag in (256, 257, 258)):  # no size or bit depth: damaged, not a layout
        return None
    bands = int(directory.get(277, 1))
    bits = directory.get(258, (1,))
    kind = _SAMPLE_FORMATS.get(int((directory.get(339) or (1,))[0]), "unknown-format")
    planar = ", planar (one plane per band)" if directory.get(284) == 2 else ""
    return f"{bands} band(s) of {bits[0] if isinstance(bits, tuple) else bits}-bit {kind} samples{planar}"


def warn_skipped(skipped: Sequence[SkippedFile], what: str = "files", show: int = 10, stacklevel: int = 3) -> None:
    """One warning listing the first ``show`` skipped files and how many more there are."""
    if not skipped:
        return
    lines = [f"  {s.path}: {s.reason}" for s in skipped[:show]]
    more = f"\n  ... and {len(skipped) - show} more" if len(skipped) > show else ""
    warnings.warn(f"Skipped {len(skipped)} {what}:\n" + "\n".join(lines) + more, stacklevel=stacklevel)
