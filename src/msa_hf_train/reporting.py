"""What a run shows people: plots of the loss terms and validation recall, and the closing summary."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msa_hf.io_utils import atomic_write_text

LOSS_PREFIX = "loss"
RECALLS = ("i2t_r1", "t2i_r1", "mr")


def loss_record(output: Any) -> dict[str, float]:
    """``{"loss": total, "loss_<term>": ...}`` of a model output: every term ``MSALoss`` computed, in its order."""
    return {
        LOSS_PREFIX: float(output.loss.detach()),
        **{f"{LOSS_PREFIX}_{name}": float(value.detach()) for name, value in output.loss_terms.items()},
    }


def is_loss_key(key: str) -> bool:
    """Whether a key of a logged record is a loss term (``loss``, ``loss_triplet``, ...)."""
    return key == LOSS_PREFIX or key.startswith(f"{LOSS_PREFIX}_")


def rewrite_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, one per line (a resume drops the lines written after its checkpoint)."""
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line and flush it to disk."""
    with path.open("a") as stream:
        stream.write(json.dumps(record) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def plot_training(
    losses: Sequence[dict[str, float]], evaluations: Sequence[dict[str, Any]], folder: Path
) -> list[Path]:
    """``losses.png`` (each loss term against the step) and ``validation.png`` (R@1 and mR per evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if losses:
        terms = [key for key in losses[0] if is_loss_key(key)]
        figure, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2))
        steps = [record["step"] for record in losses]
        for axis, term in zip(axes, terms):
            axis.plot(steps, [record[term] for record in losses], color="tab:blue")
            axis.set_title(term)
            axis.set_xlabel("optimizer step")
            axis.grid(alpha=0.3)
        figure.tight_layout()
        written.append(folder / "losses.png")
        figure.savefig(written[-1], dpi=90)
        plt.close(figure)
    if evaluations:
        figure, axis = plt.subplots(figsize=(5.5, 3.5))
        steps = [record["step"] for record in evaluations]
        for name in RECALLS:
            axis.plot(steps, [record["metrics"][name] for record in evaluations], marker="o", label=name)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("validation recall (%)")
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        written.append(folder / "validation.png")
        figure.savefig(written[-1], dpi=90)
        plt.close(figure)
    return written


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


__all__ = [
    "LOSS_PREFIX",
    "append_jsonl",
    "is_loss_key",
    "loss_record",
    "format_duration",
    "plot_training",
    "rewrite_jsonl",
]
