"""msa_hf: MSA remote-sensing image-text retrieval, Hugging Face native.

Importing the package registers MSA with transformers' Auto classes, so
``AutoModel.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)`` work on
any saved MSA folder without ``trust_remote_code``.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_msa import PRESETS, MSAConfig, Preset
from .loading_msa import CheckpointMismatchError
from .losses import csmmc_loss, mscma_loss, triplet_loss
from .modeling_msa import MSCMAT, MSAForZeroShotImageClassification, MSAModel, MSAOutput, MSAPreTrainedModel
from .optimization import param_groups
from .processing_msa import MSAImageProcessor, MSAProcessor, to_float_rgb

__version__ = "0.1.0"

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

__all__ = [
    "MSAConfig",
    "PRESETS",
    "Preset",
    "CheckpointMismatchError",
    "MSAModel",
    "MSAForZeroShotImageClassification",
    "MSAPreTrainedModel",
    "MSAOutput",
    "MSCMAT",
    "MSAImageProcessor",
    "MSAProcessor",
    "to_float_rgb",
    "param_groups",
    "triplet_loss",
    "mscma_loss",
    "csmmc_loss",
]
