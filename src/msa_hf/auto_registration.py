"""Register MSA with transformers' Auto classes without making ``import msa_hf`` import them.

transformers' Auto classes pull in torch, torchvision and ``torch._dynamo`` (seconds and most of
a gigabyte), and registering a class needs the class, so ``import msa_hf`` cannot register at once
and stay light. Instead it registers as soon as both sides exist: right away when transformers'
Auto machinery is already imported, else the moment it (or one of MSA's model modules) finishes
importing (precisely: when a module of transformers or of MSA's model finishes importing while
none of them is half-imported, so registering cannot run into a circular import). ``import msa_hf`` followed by ``AutoModel.from_pretrained(folder)`` therefore works as
before, and a command's ``--help`` never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# transformers' module that every Auto class imports first.
AUTO_CONFIG_MODULE = "transformers.models.auto.configuration_auto"
# MSA's model modules: registration imports them.
MODEL_MODULES = ("msa_hf.configuration_msa", "msa_hf.modeling_msa", "msa_hf.processing_msa")

_state = {"registered": False, "registering": False}


def register_auto_classes() -> None:
    """Register MSA's config, models and processors with the Auto classes and for ``auto_map`` (once)."""
    if _state["registered"] or _state["registering"]:
        return
    _state["registering"] = True
    try:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModel,
            AutoModelForZeroShotImageClassification,
            AutoProcessor,
        )

        from .configuration_msa import MSAConfig
        from .modeling_msa import MSAForZeroShotImageClassification, MSAModel
        from .processing_msa import MSAImageProcessor, MSAProcessor

        AutoConfig.register(MSAConfig.model_type, MSAConfig, exist_ok=True)
        AutoModel.register(MSAConfig, MSAModel, exist_ok=True)
        AutoModelForZeroShotImageClassification.register(MSAConfig, MSAForZeroShotImageClassification, exist_ok=True)
        AutoImageProcessor.register(MSAConfig, slow_image_processor_class=MSAImageProcessor, exist_ok=True)
        AutoProcessor.register(MSAConfig, MSAProcessor, exist_ok=True)
        # A saved folder names its classes in `auto_map`, so it can also be shared as Hub remote code.
        MSAConfig.register_for_auto_class()
        MSAModel.register_for_auto_class("AutoModel")
        MSAForZeroShotImageClassification.register_for_auto_class("AutoModelForZeroShotImageClassification")
        MSAImageProcessor.register_for_auto_class("AutoImageProcessor")
        MSAProcessor.register_for_auto_class("AutoProcessor")
        _state["registered"] = True
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterAfterImport)]
    finally:
        _state["registering"] = False


def _half_imported(done: str) -> bool:
    """Whether a transformers module or one of MSA's model modules, other than ``done``, is still executing.

    Registering imports both sides; doing it while one of them is half-imported would hit that
    module's circular-import error, so it waits for the outermost such import to finish.
    """
    for name, module in list(sys.modules.items()):
        if name == done or not (name.startswith("transformers.") or name in MODEL_MODULES):
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


def _after_import(name: str) -> None:
    if AUTO_CONFIG_MODULE in sys.modules and not _half_imported(name):
        register_auto_classes()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of transformers' and MSA's model modules to register after one runs."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if _state["registered"] or not (fullname.startswith("transformers.") or fullname in MODEL_MODULES):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_body = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_body(module)
            _after_import(fullname)

        loader.exec_module = exec_module  # this spec's own loader instance: only this module is affected
        return spec


def install() -> None:
    """Register now if transformers' Auto classes are loaded, else as soon as they are."""
    if AUTO_CONFIG_MODULE in sys.modules:
        register_auto_classes()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


__all__ = ["AUTO_CONFIG_MODULE", "MODEL_MODULES", "install", "register_auto_classes"]
