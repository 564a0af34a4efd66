"""PEP 562 lazy attributes for msa_hf's packages: names resolve to their module on first use.

Each package keeps a ``{name: module}`` table and gets its ``__getattr__`` and ``__dir__`` from
here, so ``import msa_hf`` (and its sub-packages) stays light until a name is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: Mapping[str, str], extra_dir: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names[name]`` is the (relative) module defining ``name``.

    A resolved name is stored in the package's namespace, so it is imported once.
    """
    namespace = sys.modules[package].__dict__
    listed = sorted([*names, *extra_dir])

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
