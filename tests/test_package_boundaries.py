"""Contracts between parts of the repository that no import checks: file writes, extras, shared keys."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import msa_hf

REPO = Path(msa_hf.__file__).resolve().parents[2]
SRC = REPO / "src"


def calls_and_imports(path: Path) -> tuple[set[str], set[str]]:
    """Dotted names called (``os.replace``) and top-level modules imported in a source file."""
    called, imported = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            called.add(f"{node.func.value.id}.{node.func.attr}")
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    return called, imported


def test_atomic_renames_happen_only_in_io_utils():
    renaming = sorted(
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if "os.replace" in calls_and_imports(path)[0]
    )
    assert renaming == ["msa_hf/io_utils.py"]


def test_only_the_factory_loads_a_saved_model():
    """Commands and training get models from msa_hf.create_model_and_processor, never the loader beneath it."""
    loaders = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and any(alias.name == "load_pretrained" for alias in node.names)
    )
    assert loaders == ["msa_hf/factory.py"]


def test_selenium_is_test_tooling_only():
    assert not [path for path in SRC.rglob("*.py") if "selenium" in calls_and_imports(path)[1]]
    pyproject = (REPO / "pyproject.toml").read_text()
    extras = dict(re.findall(r"(?ms)^(\w[\w-]*) = \[(.*?)\]$", pyproject.split("[project.optional-dependencies]")[1]))
    assert "selenium" not in extras["app"] and '"selenium' in extras["dev"]


def test_cards_read_the_recipe_keys_and_files_the_trainer_writes():
    from msa_hf.model_card import CORPUS_KEY, MODEL_KEY, TEST_METRICS_FILE
    from msa_hf_train.recipe import Recipe
    from msa_hf_train.trainer import FINISHED_MARKER

    fields = {field.name for field in dataclasses.fields(Recipe)}
    assert {MODEL_KEY, CORPUS_KEY} <= fields
    assert FINISHED_MARKER == TEST_METRICS_FILE
