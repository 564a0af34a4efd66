"""What the benchmark scripts record about the code they measured (imported as a sibling module)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The short commit of this checkout, or ``unknown`` outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"
