"""Writing outputs so that a half-written one never looks complete, and one writer at a time.

A folder is written into a staging folder beside it and renamed into place
(:func:`atomic_directory`). Staging and moved-aside folders are named
``.NAME.tmp-HOST-PID-XXXX`` and ``.NAME.old-HOST-PID-XXXX``, so that the next run can tell what
a dead process left behind and clean it up.

A single file is written to a hidden temporary beside it, fsynced and renamed into place
(:func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`,
:func:`atomic_save_safetensors`), with the permissions the umask gives ordinary files
(safetensors and ``mkstemp`` create private ``0600`` files, which would make a shared index
unreadable to colleagues).

:func:`exclusive_lock` is a lock file that names its holder (pid, host, start time), so a
second writer into the same folder refuses with a message instead of corrupting it; the lock
of a process that died is taken over.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())[:40] or "host"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove the staging and moved-aside folders that dead processes on this host left beside ``folder``.

    If a process died between moving the old ``folder`` aside and renaming its new one into
    place, ``folder`` is missing: the old one is put back (the interrupted save is lost, the
    user's previous folder is not). Folders of live processes, and of other hosts sharing
    the file system, are left alone. Returns the folders removed.
    """
    folder = Path(os.path.abspath(folder))
    if not folder.parent.is_dir():
        return []
    host = _host_tag()
    prefixes = {role: f".{folder.name}.{role}-{host}-" for role in ("tmp", "old")}
    removed = []
    for entry in sorted(folder.parent.iterdir()):
        role = next((role for role, prefix in prefixes.items() if entry.name.startswith(prefix)), None)
        if role is None:
            continue
        pid = entry.name[len(prefixes[role]) :].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        previous = entry / folder.name
        if role == "old" and not folder.exists() and previous.is_dir():
            previous.rename(folder)
            logger.warning(
                "%s: restored the previous folder that process %s had moved aside when it died.", folder, pid
            )
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed %s, left behind by process %s", entry, pid)
        removed.append(entry)
    return removed


def _honour_umask(tree: Path) -> None:
    """Give every folder and file under ``tree`` the mode a plain ``mkdir``/``open`` would.

    ``mkdtemp`` makes the staging folder private and some writers (safetensors) create 0600
    files; the saved folder should be as readable as any other the user makes.
    """
    umask = current_umask()
    for root, dirs, files in os.walk(tree):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                executable = 0o111 if mode & stat.S_IXUSR else 0
                os.chmod(path, (0o666 | executable) & ~umask)
    tree.chmod(0o777 & ~umask)


def _check_replaceable(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder; choose a folder to write into.")
    if folder.exists() and not overwrite and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty.")
    cwd = Path.cwd()
    in_use = folder in cwd.parents or (folder == cwd and any(folder.iterdir()))
    if in_use:
        raise ValueError(
            f"{folder} is the current folder or contains it, so it cannot be replaced while in use "
            f"(and replacing it would delete everything in it); write to a new folder such as {folder / 'output'}."
        )


@contextmanager
def atomic_directory(folder: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder beside ``folder``; on success it replaces ``folder`` in one rename.

    If the body raises, the staging folder is removed and ``folder`` is left as it was. What
    dead processes left beside ``folder`` is cleaned up first (:func:`remove_stale_staging`),
    and the result's files get the modes the umask gives (not the 0700/0600 of staging).

    Example:

    ```python
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "model"
    >>> with atomic_directory(out) as staging:
    ...     _ = (staging / "config.json").write_text("{}")
    >>> sorted(p.name for p in out.iterdir())
    ['config.json']
    ```
    """
    folder = Path(os.path.abspath(folder))
    _check_replaceable(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)
    tag = f"{_host_tag()}-{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{tag}", dir=folder.parent))
    try:
        yield staging
        _honour_umask(staging)
        if folder.exists() and any(folder.iterdir()):
            # Move the old folder aside first, so a crash between the renames loses nothing.
            aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-{tag}", dir=folder.parent))
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
    return 0o666 & ~current_umask()


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


def atomic_write_file(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Write ``path`` with ``write(tmp)``, any writer that takes a file name (Parquet, safetensors), and one rename."""
    with _staged_file(Path(path)) as tmp:
        write(tmp)


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
    "atomic_write_file",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
    "exclusive_lock",
    "file_mode",
    "remove_stale_staging",
]
