"""transformers' own model conformance suite, fetched for the installed transformers version.

The PyPI source distribution of transformers ships ``tests/test_modeling_common.py``
(``ModelTesterMixin``) and ``tests/test_configuration_common.py`` (``ConfigTester``): the
checks every model inside transformers passes. This module downloads that sdist once per
version with pip (so pip's index, mirror and certificate settings apply), extracts the two
files into a cache folder as the package ``transformers_common_tests``, and adds stand-ins for
the three helper modules the sdist lacks:

* ``generation/test_utils.py``: ``GenerationTesterMixin``, only used by models that generate;
* ``exporters/test_export.py``: ``ExportTesterMixin`` (transformers 5), the ``torch.export``
  tests, which are not part of this conformance check;
* ``utils/test_configuration_utils.py``: ``config_common_kwargs``, read by
  ``ConfigTester.check_config_arguments_init``, which returns early for composite configs.

The cache is ``$MSA_HF_TEST_CACHE`` if set, else ``$XDG_CACHE_HOME/msa_hf`` (``~/.cache/msa_hf``).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import transformers

PACKAGE = "transformers_common_tests"
SUITE_FILES = ("test_modeling_common.py", "test_configuration_common.py")
STAND_INS = {
    "generation/test_utils.py": (
        '"""Stand-in: MSA does not generate, so no generation tests apply."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "exporters/test_export.py": (
        '"""Stand-in: the torch.export tests are outside this conformance check."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "utils/test_configuration_utils.py": (
        '"""Stand-in: common config kwargs, valid on transformers 4.57 and 5.x."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


class SuiteUnavailable(RuntimeError):
    """The transformers sdist could not be fetched (e.g. PyPI is unreachable)."""


def cache_root() -> Path:
    """Where fetched suites live: ``$MSA_HF_TEST_CACHE`` or ``$XDG_CACHE_HOME/msa_hf``."""
    if os.environ.get("MSA_HF_TEST_CACHE"):
        return Path(os.environ["MSA_HF_TEST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msa_hf"


def _download_sdist(version: str, folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"transformers=={version}",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--quiet",
        "-d",
        str(folder),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    archives = sorted(folder.glob("transformers-*.tar.gz"))
    if result.returncode != 0 or not archives:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SuiteUnavailable(f"`pip download transformers=={version} --no-binary :all:` failed: {last}")
    return archives[0]


def _write_package(archive: Path, version: str, target: Path) -> None:
    package = target / PACKAGE
    with tarfile.open(archive) as tar:
        for name in SUITE_FILES:
            member = tar.getmember(f"transformers-{version}/tests/{name}")
            source = tar.extractfile(member)
            if source is None:
                raise SuiteUnavailable(f"{archive} has no tests/{name}")
            package.mkdir(parents=True, exist_ok=True)
            (package / name).write_bytes(source.read())
    (package / "__init__.py").write_text(f'"""transformers {version} tests/ (common suite + stand-ins)."""\n')
    for relative, text in STAND_INS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)


def suite_dir(version: str | None = None) -> Path:
    """The folder holding ``transformers_common_tests`` for ``version``, fetched on first use."""
    version = version or transformers.__version__
    target = cache_root() / "transformers-tests" / version
    if (target / PACKAGE / SUITE_FILES[0]).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        staging = Path(scratch) / "suite"
        archive = _download_sdist(version, Path(scratch))
        _write_package(archive, version, staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / PACKAGE / SUITE_FILES[0]).is_file():
                raise
    return target


def load_suite() -> tuple[ModuleType, ModuleType]:
    """Import ``(test_modeling_common, test_configuration_common)`` of the installed transformers."""
    folder = str(suite_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    with warnings.catch_warnings():  # transformers registers its custom marks in its own conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return (
            importlib.import_module(f"{PACKAGE}.test_modeling_common"),
            importlib.import_module(f"{PACKAGE}.test_configuration_common"),
        )
