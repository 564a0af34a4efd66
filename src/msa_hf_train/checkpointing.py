"""Accelerate checkpoints written atomically, the loop's own state beside them, and which one is latest.

A checkpoint is ``checkpoints/step-000123/``: everything ``accelerator.save_state`` writes (model,
optimizer, scheduler, gradient scaler, every process's RNG states) plus ``trainer_state.json``
(epoch, position in the epoch, best score, history). All processes write into one staging
folder that replaces the final name in a single rename, so a killed save never leaves a
checkpoint that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

from msa_hf.io_utils import atomic_directory

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
TRAINER_STATE_NAME = "trainer_state.json"


@dataclasses.dataclass
class TrainerState:
    """Where the loop is: enough to continue from the exact next batch."""

    epoch: int = 0
    batches_done: int = 0  # micro-batches of ``epoch`` already trained
    global_step: int = 0  # optimizer steps
    best_metric: float | None = None
    best_step: int | None = None
    best_epoch: float | None = None
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    losses: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def save(self, folder: Path) -> None:
        (folder / TRAINER_STATE_NAME).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TrainerState:
        path = folder / TRAINER_STATE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a training checkpoint: it has no {TRAINER_STATE_NAME}.")
        return cls(**json.loads(path.read_text()))


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints under ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(requested: str, checkpoints_dir: Path) -> Path:
    """``latest`` or a path, checked to be a finished checkpoint."""
    if requested == "latest":
        found = list_checkpoints(checkpoints_dir)
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint=latest, but {checkpoints_dir} holds no checkpoint (a run stopped before its "
                "first save leaves none); start afresh without resume_from_checkpoint, with "
                "overwrite_output_dir=true to replace what the stopped run left."
            )
        return found[-1]
    path = Path(requested).expanduser()
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint={requested!r} is not a checkpoint folder (no {TRAINER_STATE_NAME}); "
            f"use 'latest' or one of {[p.name for p in list_checkpoints(checkpoints_dir)]}."
        )
    return path


def save_checkpoint(accelerator: Any, checkpoints_dir: Path, state: TrainerState, keep_last: int) -> Path:
    """Save the full training state atomically (all processes call this), then keep only ``keep_last``."""
    from accelerate.utils import broadcast_object_list

    final = checkpoints_dir / checkpoint_name(state.global_step)
    if accelerator.is_main_process:
        with atomic_directory(final) as staging:
            broadcast_object_list([str(staging)])
            accelerator.save_state(str(staging))
            state.save(staging)
            accelerator.wait_for_everyone()
        for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    else:
        shared = [None]
        broadcast_object_list(shared)
        accelerator.save_state(shared[0])
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()
    return final


__all__ = [
    "TRAINER_STATE_NAME",
    "TrainerState",
    "checkpoint_name",
    "list_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
]
