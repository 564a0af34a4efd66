"""One factory for an MSA model and its processor, whatever names it: a preset, a saved folder, a Hub id.

Training and every command (``msa-eval``, ``msa-index``, ``msa-search``, ``msa-classify``,
``msa-app``, ``msa-push``'s check) ask this module, so a preset with pretrained towers falls back
the same way when its offline packages are missing, config overrides are merged and checked the
same way, a folder or Hub id is loaded by the one loader (:func:`msa_hf.sources.load_pretrained`),
and the model's origin (its towers and the Hub ids a card lists as ``base_model``) is worked out
once (:func:`msa_hf.model_card.model_origin`).
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .cli_utils import UsageError
from .configuration_msa import PRESETS, MSAConfig
from .model_card import ModelOrigin, model_origin
from .modeling_msa import MSAModel
from .pretrained_towers import INSTALL_HINT, offline_preset_available
from .processing_msa import MSAProcessor
from .sources import load_pretrained, resolve_device

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The pretrained preset whose towers timm and transformers download when another preset's offline packages are absent.
HUB_FALLBACK_PRESET = "msa-resnet50-bert-base"


class ConfigOverrideError(UsageError):
    """A config override names no config key or holds a bad value (exit code 2)."""


class CreatedModel(NamedTuple):
    """What :func:`create_model_and_processor` gives: ``model, processor, origin = ...``."""

    model: MSAModel
    processor: MSAProcessor
    origin: ModelOrigin


def merge_config_overrides(
    base: dict[str, Any], overrides: Mapping[str, Any], where: str = "config_overrides"
) -> dict[str, Any]:
    """``base`` (a config as a dict) with ``overrides`` merged in, nested dicts key by key; unknown keys refused.

    A typo such as ``same_text_positve`` would otherwise be stored beside the real key and change
    nothing. A nested mapping (``text_config: {hidden_dropout_prob: 0}``) changes only the keys it
    names; one with another ``model_type`` replaces the sub-config.

    Example:

    ```python
    >>> merge_config_overrides({"a": 1, "sub": {"model_type": "bert", "p": 0.1}}, {"sub": {"p": 0.0}})
    {'a': 1, 'sub': {'model_type': 'bert', 'p': 0.0}}
    >>> merge_config_overrides({"same_text_positives": False}, {"same_text_positve": True})
    Traceback (most recent call last):
    ...
    msa_hf.factory.ConfigOverrideError: Unknown config_overrides key 'same_text_positve'. Did you mean same_text_positives?
    ```
    """
    merged = dict(base)
    for key, value in overrides.items():
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=3, cutoff=0.6)
            hint = (
                f" Did you mean {', '.join(close)}?" if close else f" Known keys: {', '.join(sorted(map(str, base)))}."
            )
            raise ConfigOverrideError(f"Unknown {where} key {key!r}.{hint}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigOverrideError(f"{where}.{key} must be a finite number, got {value!r}.")
        current = base[key]
        nested = isinstance(value, dict) and isinstance(current, dict)
        if nested and value.get("model_type", current.get("model_type")) == current.get("model_type"):
            merged[key] = merge_config_overrides(current, value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def _with_nested(config: MSAConfig, nested: Mapping[str, Any]) -> MSAConfig:
    """``config`` with nested overrides such as ``text_config: {hidden_dropout_prob: 0}`` merged in."""
    return MSAConfig.from_dict(merge_config_overrides(config.to_dict(), nested)) if nested else config


def is_preset(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names a preset (a folder of the same name wins)."""
    return str(name_or_path) in PRESETS and not Path(name_or_path).expanduser().is_dir()


def available_preset(preset: str) -> str:
    """``preset``, or :data:`HUB_FALLBACK_PRESET` (with a warning) when its offline tower packages are missing."""
    if PRESETS[preset].pretrained and not offline_preset_available(preset) and preset != HUB_FALLBACK_PRESET:
        logger.warning(
            "The offline towers of %s are not installed (%s). Falling back to %s, whose weights timm and "
            "transformers download from the Hugging Face Hub.",
            preset,
            INSTALL_HINT,
            HUB_FALLBACK_PRESET,
        )
        return HUB_FALLBACK_PRESET
    return preset


def create_model_and_processor(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    *,
    device: str | torch.device | None = "cpu",
    tokenizer: Any = None,
    **overrides: Any,
) -> CreatedModel:
    """A model (eval mode, on ``device``), its processor and its origin, from a preset, a folder or a Hub id.

    Args:
        name_or_path: a preset of ``msa_hf.PRESETS`` (pretrained towers: falls back to
            :data:`HUB_FALLBACK_PRESET` when the offline packages are missing; an architecture:
            random towers), a folder written by ``save_pretrained``, or a Hub id (a folder of a
            preset's name wins over the preset, a preset over a Hub id without owner).
        revision: branch, tag or commit of a Hub id.
        device: where the model goes: the CPU by default (training moves it itself); ``None``
            is CUDA when available, what the commands' ``--device`` defaults to.
        tokenizer: the tokenizer of an architecture preset (its random text tower has none).
        overrides: `MSAConfig` arguments; a dict value (``text_config={"hidden_dropout_prob": 0}``)
            changes only the keys it names. Unknown keys raise :class:`ConfigOverrideError`.

    Raises:
        ConfigOverrideError: a bad override, or an architecture preset without ``tokenizer``.
        msa_hf.sources.ModelLoadError: a folder or Hub snapshot that holds no MSA model (bad input).
        msa_hf.sources.HubError: the Hub could not be reached or refused the download.

    Example:

    ```python
    >>> from msa_hf import create_model_and_processor
    >>> model, processor, origin = create_model_and_processor("msa-effnetlite0-minilm")  # doctest: +SKIP
    >>> origin.base_models  # doctest: +SKIP
    ('timm/tf_efficientnet_lite0.in1k', 'sentence-transformers/all-MiniLM-L6-v2')
    ```
    """
    target = resolve_device(device)
    created = _build(str(name_or_path), revision, tokenizer, overrides)
    created.model.to(target).eval()
    return created


def _build(name: str, revision: str | None, tokenizer: Any, overrides: Mapping[str, Any]) -> CreatedModel:
    """The model :func:`create_model_and_processor` names, where it was built (the CPU)."""
    top = {key: value for key, value in overrides.items() if not isinstance(value, dict)}
    nested = {key: value for key, value in overrides.items() if isinstance(value, dict)}
    if not is_preset(name):
        update = functools.partial(_with_overrides, overrides=overrides) if overrides else None
        model, processor = load_pretrained(name, revision, update)
        return CreatedModel(model, processor, model_origin(name, model.config))
    preset = available_preset(name)
    if PRESETS[preset].pretrained:
        model, processor = MSAModel.from_preset(preset, **top)
        if nested:  # settings the towers were built with (dropout): rebuild them so, then copy the weights
            rebuilt = MSAModel(_with_nested(model.config, nested))
            try:
                rebuilt.load_state_dict(model.state_dict())
            except RuntimeError:
                raise ConfigOverrideError(
                    f"config_overrides {nested} change the shape of {preset}'s pretrained towers; only settings "
                    "such as dropout can be overridden there."
                ) from None
            model = rebuilt
        return CreatedModel(model, processor, model_origin(preset, model.config))
    if tokenizer is None:
        raise ConfigOverrideError(
            f"{preset!r} is a randomly initialised architecture: pass `tokenizer` (one whose vocabulary fits "
            "its text tower)."
        )
    config = _with_nested(MSAConfig.from_preset(preset, **top), nested)
    return CreatedModel(MSAModel(config), MSAProcessor.from_config(config, tokenizer), model_origin(preset, config))


def _with_overrides(config: MSAConfig, overrides: Mapping[str, Any]) -> MSAConfig:
    """A saved config with every override merged in (checked key by key)."""
    return MSAConfig.from_dict(merge_config_overrides(config.to_dict(), overrides))


__all__ = [
    "HUB_FALLBACK_PRESET",
    "ConfigOverrideError",
    "CreatedModel",
    "available_preset",
    "create_model_and_processor",
    "is_preset",
    "merge_config_overrides",
]
