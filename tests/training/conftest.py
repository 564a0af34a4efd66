"""A tiny recipe for the training tests: msa-tiny on a small generated rs-synth corpus, seconds per run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """The tiny tokenizer saved as a folder AutoTokenizer reads (what the recipe key `tokenizer` takes)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(folder)
    return folder


def tiny_args(output_dir: Path, cache: Path, *overrides: str) -> list[str]:
    """Command-line overrides of a tiny, fast recipe writing into ``output_dir``."""
    return [
        "model=msa-tiny",
        "corpus=rs-synth",
        "corpus_kwargs={n_images: 24, image_size: 64, seed: 3}",
        f"cache_dir={cache}",
        f"output_dir={output_dir}",
        "num_epochs=2",
        "per_device_batch_size=8",
        "eval_batch_size=16",
        "learning_rate=1e-3",
        "vision_lr=null",
        "text_lr=null",
        "lr_scheduler=constant",
        "warmup_steps=0",
        "freeze_vision_stages=null",
        "augment=none",
        "num_workers=0",
        "report_to=none",
        "progress=false",
        *overrides,
    ]


@pytest.fixture
def tiny_recipe_args(tmp_path: Path, tiny_tokenizer_dir: Path) -> Callable[..., list[str]]:
    """``tiny_recipe_args(output_name, *overrides)``: command-line overrides of a tiny, fast recipe."""
    cache = tmp_path / "msa-train-cache"  # shared by the runs of one test, never across tests

    def args(output: str = "run", *overrides: str) -> list[str]:
        return tiny_args(tmp_path / output, cache, f"tokenizer={tiny_tokenizer_dir}", *overrides)

    return args


@pytest.fixture(scope="module")
def module_recipe_args(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[str]]:
    """``tiny_recipe_args`` for runs shared by a module's tests (msa-tiny's own tokenizer, one cache)."""
    folder = tmp_path_factory.mktemp("runs")

    def args(output: str = "run", *overrides: str) -> list[str]:
        return tiny_args(folder / output, folder / "msa-train-cache", *overrides)

    return args
