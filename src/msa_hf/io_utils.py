"""Writing outputs so that a half-written one never looks complete, and one writer at a time.

* :func:`atomic_directory`: a whole output folder appears in one rename.
* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` /
  :func:`atomic_save_safetensors`: one file appears in one rename, fsynced, with the
  permissions the umask gives ordinary files (safetensors and ``mkstemp`` create private
  ``0600`` files, which would make a shared index unreadable to colleagues).
* :func:`exclusive_lock`: a lock file that names its holder (pid, host, start time), so a
  second writer into the same folder refuses with a message instead of corrupting it; the
  lock of a process that died on this host is taken over.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_directory(folder: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder beside ``folder``; on success it replaces ``folder`` in one rename.

    If the body raises, the staging folder is removed and ``folder`` is left as it was.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        if folder.exists() and any(folder.iterdir()):
            # Move the old folder aside first, so a crash between the renames loses nothing.
            aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            folder.rename(aside / folder.name)
            staging.rename(folder)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            staging.replace(folder)  # also replaces an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (usually ``0o644``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def _staged_file(path: Path) -> Iterator[Path]:
    """A unique hidden temporary beside ``path``; renamed over ``path`` if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(folder / "a.bin", b"new")
    >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'new', ['a.bin'])
    ```
    """
    with _staged_file(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """:func:`atomic_write_text` of ``data`` as JSON (with a trailing newline)."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` through a temporary file and one rename."""
    from safetensors.torch import save_file

    with _staged_file(Path(path)) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata or {}))


class LockHeldError(RuntimeError):
    """Another live process holds the lock (a runtime condition, not bad input: exit code 1)."""


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # gone, being written right now, or garbage
    return holder if isinstance(holder, dict) else {}


def _describe_holder(holder: Mapping[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process"
    return f"pid {holder['pid']} on host {holder.get('host')} (since {holder.get('started')})"


@contextmanager
def exclusive_lock(path: str | os.PathLike, purpose: str = "") -> Iterator[dict[str, Any]]:
    """Hold the lock file ``path`` for the body; refuse at once if another process holds it.

    The lock is an ``flock`` on ``path`` (POSIX; over NFS Linux maps it to a byte-range
    lock), so the kernel releases it when its holder dies however it dies: a lock file left
    behind by a killed process is simply taken over, with a warning naming the dead holder.
    The file holds ``{"pid", "host", "started", "purpose", "command"}`` so the refusal can
    say who is writing.

    Raises:
        LockHeldError: a live process holds the lock.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with exclusive_lock(lock, purpose="demo") as me:
    ...     me["pid"] == os.getpid() and lock.exists()
    True
    >>> lock.exists()
    False
    ```
    """
    import fcntl  # POSIX only, like the rename semantics everything here relies on
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path)
            raise LockHeldError(
                f"{path.parent} is in use by {_describe_holder(holder)}: {holder.get('purpose') or 'a writer'}"
                f"{' (' + holder['command'] + ')' if holder.get('command') else ''}. Wait for it to finish "
                f"(lock file {path})."
            ) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: start over
    previous = _read_holder(path)
    if previous.get("pid"):
        warnings.warn(
            f"Took over the lock {path} left by {_describe_holder(previous)}, which no longer runs.", stacklevel=3
        )
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "purpose": purpose,
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode("utf-8"))
    os.fsync(fd)
    try:
        yield me
    finally:
        path.unlink(missing_ok=True)  # before unlocking, so a waiter never locks a file about to vanish
        os.close(fd)


__all__ = [
    "LockHeldError",
    "atomic_directory",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "exclusive_lock",
    "file_mode",
]
