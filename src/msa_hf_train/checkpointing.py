"""Accelerate checkpoints written atomically, the loop's own state beside them, and which one is latest.

A checkpoint is ``checkpoints/step-000123/``: everything ``accelerator.save_state`` writes (model,
optimizer, scheduler, gradient scaler, every process's RNG states) plus ``trainer_state.json``
(epoch, position in the epoch, best score, history, and the run's identity: what must match for
a resume to be exact), and with ``ema_decay`` the averaged weights (``ema_model.safetensors``). All processes write into one staging folder; the main process then
writes ``checkpoint_complete.json`` (every file's size and SHA-256) and renames the folder into
place, so a killed save never leaves a checkpoint that looks complete, and a file damaged or
removed later is found before resuming (:func:`checkpoint_problem`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from msa_hf.cli_utils import UsageError
from msa_hf.io_utils import atomic_directory, atomic_write_json

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
TRAINER_STATE_NAME = "trainer_state.json"
COMPLETE_NAME = "checkpoint_complete.json"
EMA_WEIGHTS_NAME = "ema_model.safetensors"


class CheckpointError(UsageError):
    """A checkpoint is damaged, incomplete, or from a run that differs from the recipe (exit 2)."""


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
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)  # what a resume must match
    stream_positions: list[dict[str, Any] | None] | None = None  # streaming: each process's place in its stream

    def save(self, folder: Path) -> None:
        (folder / TRAINER_STATE_NAME).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TrainerState:
        path = folder / TRAINER_STATE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a training checkpoint: it has no {TRAINER_STATE_NAME}.")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path} is damaged ({error}); resume from an earlier checkpoint.") from None


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def write_completion_marker(folder: Path) -> None:
    """Record every file of a finished save (size and SHA-256) in ``COMPLETE_NAME``, written last."""
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    atomic_write_json(folder / COMPLETE_NAME, {"files": files})


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole checkpoint (a file missing, truncated or changed), or None.

    A checkpoint written before completion markers existed has none; it is accepted with a
    warning, as its files cannot be checked.
    """
    try:
        listed = json.loads((folder / COMPLETE_NAME).read_text())["files"]
    except FileNotFoundError:
        if (folder / TRAINER_STATE_NAME).is_file():
            logger.warning("%s has no %s (an older save); its files cannot be verified.", folder, COMPLETE_NAME)
            return None
        return f"it has no {COMPLETE_NAME} or {TRAINER_STATE_NAME}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {COMPLETE_NAME} is unreadable"
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, {entry['size']} were written"
        if _sha256(path) != entry["sha256"]:
            return f"{name} differs from what was written (SHA-256)"
    return None


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints under ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(requested: str, checkpoints_dir: Path) -> Path:
    """``latest`` (the newest whole checkpoint: damaged newer ones are skipped, with a warning) or a path, checked."""
    if requested == "latest":
        found = list_checkpoints(checkpoints_dir)
        for candidate in reversed(found):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate
            logger.warning("Skipping checkpoint %s: %s.", candidate, problem)
        if found:
            raise CheckpointError(
                f"resume_from_checkpoint=latest, but every checkpoint in {checkpoints_dir} is damaged (see the "
                "warnings above); start over with overwrite_output_dir=true."
            )
        raise FileNotFoundError(
            f"resume_from_checkpoint=latest, but {checkpoints_dir} holds no checkpoint (the run stopped before its "
            "first save); start over with overwrite_output_dir=true and without resume_from_checkpoint."
        )
    path = Path(requested).expanduser()
    if not (path / TRAINER_STATE_NAME).is_file() and not (path / COMPLETE_NAME).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint={requested!r} is not a checkpoint folder (no {TRAINER_STATE_NAME}); "
            f"use 'latest' or one of {[p.name for p in list_checkpoints(checkpoints_dir)]}."
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"Checkpoint {path} is damaged: {problem}. Resume from an earlier one or use 'latest'.")
    return path


def identity_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: saved -> current`` for each key (dotted inside mappings) whose value differs."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        before, after = saved.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changes.extend(identity_changes(before, after, f"{prefix}{key}."))
        elif before != after:
            changes.append(f"{prefix}{key}: {before!r} -> {after!r}")
    return changes


def load_ema_weights(folder: Path, ema_model: torch.nn.Module) -> bool:
    """Load a checkpoint's averaged weights into ``ema_model``; False when the checkpoint has none."""
    path = folder / EMA_WEIGHTS_NAME
    if not path.is_file():
        return False
    try:
        load_model(ema_model, path)
    except (OSError, SafetensorError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be loaded into this run's model ({reason}); resume from another checkpoint or with the "
            "recipe it was written with."
        ) from None
    return True


def save_checkpoint(
    accelerator: Any,
    checkpoints_dir: Path,
    state: TrainerState,
    keep_last: int,
    ema_model: torch.nn.Module | None = None,
) -> Path:
    """Save the full training state atomically (all processes call this), then keep only ``keep_last``.

    ``ema_model`` (the same on every process) is written by the main process, as safetensors:
    Accelerate's ``register_for_checkpointing`` would pickle it and load it with ``weights_only=False``.
    """
    from accelerate.utils import broadcast_object_list

    final = checkpoints_dir / checkpoint_name(state.global_step)
    if accelerator.is_main_process:
        with atomic_directory(final) as staging:
            broadcast_object_list([str(staging)])
            accelerator.save_state(str(staging))
            state.save(staging)
            if ema_model is not None:
                save_model(ema_model, str(staging / EMA_WEIGHTS_NAME))
            accelerator.wait_for_everyone()
            write_completion_marker(staging)
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
    "COMPLETE_NAME",
    "EMA_WEIGHTS_NAME",
    "TRAINER_STATE_NAME",
    "CheckpointError",
    "TrainerState",
    "checkpoint_name",
    "checkpoint_problem",
    "identity_changes",
    "list_checkpoints",
    "load_ema_weights",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_completion_marker",
]
