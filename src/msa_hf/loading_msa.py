"""Loading checkpoints strictly: every tensor of the model filled, each mismatch named.

transformers' ``from_pretrained`` warns about missing or unexpected tensors and carries on with
freshly initialised ones; for a retrieval model that is a silently wrong result. MSA models
refuse such a checkpoint instead (`check_loading_info`), and replace transformers' per-tensor
tables with their own one-line reports (`quiet_transformers_loading`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import transformers

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint lacks tensors of the model, has others, or has them in another shape."""


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextmanager
def quiet_transformers_loading() -> Iterator[None]:
    """Drop transformers' missing/unexpected-key warnings while MSA loads weights, which it reports itself.

    A filter, not a raised logger level: transformers 5 runs extra checks (and prints their
    warnings) when its loading logger's level is WARNING or above.
    """
    loading_logger = transformers.utils.logging.get_logger("transformers.modeling_utils")
    drop = _DropWarnings()
    loading_logger.addFilter(drop)
    try:
        yield
    finally:
        loading_logger.removeFilter(drop)


HEAD_PREFIXES = ("image_projection.", "text_projection.", "mscmat.")


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _describe_mismatch(entry: str | tuple[str, Any, Any]) -> str:
    """transformers 5 reports ``(key, checkpoint shape, model shape)``; 4.57 only the key."""
    if isinstance(entry, str):
        return entry
    key, in_checkpoint, in_model = entry
    return f"{key} {tuple(in_checkpoint)} vs {tuple(in_model)}"


def check_loading_info(
    model_name: str,
    source: Any,
    info: dict[str, Any],
    allow_missing_heads: bool,
    ignore_mismatched: bool,
    report_only: bool,
) -> None:
    """Raise `CheckpointMismatchError` for anything the checkpoint did not fill exactly.

    With ``report_only`` (the caller asked for ``output_loading_info`` and inspects it, as
    transformers' own tooling does) missing and unexpected tensors are logged instead; a shape
    mismatch still raises unless ``ignore_mismatched``.
    """
    missing = sorted(info["missing_keys"])
    fresh_heads = [key for key in missing if key.startswith(HEAD_PREFIXES)] if allow_missing_heads else []
    missing = [key for key in missing if key not in fresh_heads]
    unexpected = sorted(info["unexpected_keys"])
    mismatched = [] if ignore_mismatched else sorted(_describe_mismatch(entry) for entry in info["mismatched_keys"])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with another shape (checkpoint vs model): {_listing(mismatched)}")
    if report_only and not mismatched and (missing or unexpected):
        logger.warning(
            "%s from %s does not match the checkpoint (returned with output_loading_info): %s.",
            model_name,
            source,
            "; ".join(problems),
        )
    elif problems:
        only_heads = missing and not unexpected and not mismatched and all(k.startswith(HEAD_PREFIXES) for k in missing)
        fix = (
            "Pass allow_missing_heads=True to start the MSA heads fresh on these towers."
            if only_heads
            else "The weights file is incomplete or belongs to another configuration; save it again with "
            "save_pretrained, or load the config it was saved with."
        )
        raise CheckpointMismatchError(
            f"{model_name}.from_pretrained({str(source)!r}): the checkpoint does not match the model: "
            + "; ".join(problems)
            + f". {fix}"
        )
    if fresh_heads:
        logger.warning(
            "%s from %s: the checkpoint has no MSA heads; %d head tensors start fresh (allow_missing_heads=True): %s",
            model_name,
            source,
            len(fresh_heads),
            _listing(fresh_heads),
        )


__all__ = ["HEAD_PREFIXES", "CheckpointMismatchError", "check_loading_info", "quiet_transformers_loading"]
