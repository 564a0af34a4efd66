"""``python training/train.py [RECIPE.yaml] [key=value ...]``: train MSA from a recipe.

Also runs unchanged under ``accelerate launch training/train.py ...`` and
``torchrun --nproc_per_node N training/train.py ...``. Exit codes follow ``msa_hf.cli_utils``:
0 done, 1 runtime failure (e.g. the loss diverged), 2 bad recipe, 128 + signal number after
an interrupted run saved its state.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from msa_hf.cli_utils import run_command

from .recipe import KEYS, load_recipe
from .trainer import TrainingInterrupted, train


def build_parser(default_recipe: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train MSA: validation-based selection, test once, a from_pretrained folder in OUTPUT_DIR/best.",
        epilog=f"Recipe keys: {', '.join(KEYS)}. Example: python training/train.py num_epochs=3 output_dir=outputs/quick",
    )
    parser.add_argument(
        "arguments",
        nargs="*",
        metavar="[RECIPE.yaml] [key=value ...]",
        help=f"a recipe file (default {default_recipe}) and overrides of its keys, dotted for nested keys, "
        "typed as YAML (e.g. corpus_kwargs.n_images=200 report_to=none)",
    )
    return parser


def _configure_logging() -> None:
    """Our progress lines on the main process; the libraries' per-file chatter (bars, INFO lines) off."""
    import datasets
    import huggingface_hub
    from transformers.utils import logging as transformers_logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # The launcher's RANK, not accelerate's state: that is created once, by the trainer, with its own settings.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    for name in ("msa_hf", "msa_hf_train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    for name in ("accelerate", "timm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    datasets.disable_progress_bars()


def main(argv: Sequence[str] | None = None, default_recipe: Path | None = None) -> int:
    """Parse ``[RECIPE.yaml] [key=value ...]``, train, return the exit code."""
    default_recipe = default_recipe or Path("training/configs/default.yaml")
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args: argparse.Namespace) -> int:
        arguments = list(args.arguments)
        recipe_path = arguments.pop(0) if arguments and "=" not in arguments[0] else default_recipe
        recipe = load_recipe(recipe_path, arguments)
        _configure_logging()
        try:
            train(recipe, command=shlex.join(["python", "training/train.py", *argv]))
        except TrainingInterrupted as interrupted:
            print(f"train.py: {interrupted}", file=sys.stderr)
            return 128 + interrupted.signal_number
        return 0

    return run_command("train.py", body, build_parser(default_recipe), argv)


__all__ = ["build_parser", "main"]
