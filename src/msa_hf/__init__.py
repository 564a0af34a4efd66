"""msa_hf: MSA remote-sensing image-text retrieval, Hugging Face native.

Importing the package registers MSA with transformers' Auto classes, so
``AutoModel.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)`` work on
any saved MSA folder without ``trust_remote_code``. The import itself is light (no torch): the
names below load on first use, and the registration runs once transformers' Auto classes are
imported (:mod:`msa_hf.auto_registration`), so commands answer ``--help`` at once.
"""

from __future__ import annotations

from . import auto_registration
from .lazy_imports import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "MSAConfig": ".configuration_msa",
    "IMAGE_VIEW_GROUPS": ".configuration_msa",
    "PRESETS": ".configuration_msa",
    "Preset": ".configuration_msa",
    "CheckpointMismatchError": ".loading_msa",
    "MSAModel": ".modeling_msa",
    "MSAForZeroShotImageClassification": ".modeling_msa",
    "MSAPreTrainedModel": ".modeling_msa",
    "MSAOutput": ".modeling_msa",
    "MSATrainingInputs": ".modeling_msa",
    "MSCMAT": ".modeling_msa",
    "image_view": ".modeling_msa",
    "MSAImageProcessor": ".processing_msa",
    "MSAProcessor": ".processing_msa",
    "to_float_rgb": ".processing_msa",
    "param_groups": ".optimization",
    "create_model_and_processor": ".factory",
    "triplet_loss": ".losses",
    "mscma_loss": ".losses",
    "csmmc_loss": ".losses",
}

__all__ = list(_LAZY)

auto_registration.install()


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, extra_dir=("__version__", "auto_registration"))
