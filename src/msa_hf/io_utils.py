"""Writing output folders so that a half-written one never looks complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


__all__ = ["atomic_directory"]
