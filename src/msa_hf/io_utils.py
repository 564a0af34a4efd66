"""Writing output folders so that a half-written one never looks complete.

A folder is written into a staging folder beside it and renamed into place. Staging and
moved-aside folders are named ``.NAME.tmp-HOST-PID-XXXX`` and ``.NAME.old-HOST-PID-XXXX``, so
that the next run can tell what a dead process left behind and clean it up.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


__all__ = ["atomic_directory", "current_umask", "remove_stale_staging"]
