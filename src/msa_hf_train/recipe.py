"""Training recipes: a YAML file of keys plus ``key=value`` overrides, checked before any heavy work.

A recipe is the whole description of a run, so the resolved recipe is saved beside the model it
produced (``best/recipe.yaml``) and a run can be repeated from it exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from msa_hf.cli_utils import UsageError


class RecipeError(UsageError):
    """A recipe key is unknown, has the wrong type or names something that does not exist (exit 2)."""


@dataclasses.dataclass
class Recipe:
    """Every key a training recipe may set, with its default.

    Learning rates follow the original recipe (AdamW, lr 1e-5 everywhere, weight decay 0.1,
    no schedule); the offline presets train faster with larger rates for the fresh heads, which
    their YAML files set.
    """

    # What to train, on what, where.
    model: str = "msa-effnetlite0-minilm"
    revision: str | None = None
    tokenizer: str | None = None
    config_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    corpus: str = "rs-synth"
    corpus_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Stream the train split from Parquet shards (msa-data shard) or a Hub dataset instead of loading it.
    streaming: bool = False
    shuffle_buffer: int = 10000
    max_bad_fraction: float = 0.01
    output_dir: str = "outputs/default"
    cache_dir: str | None = None
    seed: int = 0
    # How long and in what steps.
    num_epochs: int = 10
    max_steps: int = 0
    per_device_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    # Optimisation.
    learning_rate: float = 1e-5
    vision_lr: float | None = None
    text_lr: float | None = None
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    # Evaluate and save an exponential moving average of the weights (timm's ModelEmaV3, with its warm-up).
    ema_decay: float | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    channels_last: bool = True
    # Which parts train.
    freeze_vision_stages: int | Literal["all"] | None = None
    freeze_text_layers: int | Literal["all"] | None = None
    cache_frozen_vision: bool = True
    augment: Literal["none", "flips", "dihedral"] = "none"
    # Evaluation, checkpoints, logging.
    eval_every: int | Literal["epoch"] = "epoch"
    save_every: int | Literal["epoch"] = "epoch"
    keep_last: int = 2
    eval_batch_size: int = 64
    num_workers: int = 2
    resume_from_checkpoint: str | None = None
    resume_allow_changes: bool = False
    overwrite_output_dir: bool = False
    report_to: str | list[str] = "tensorboard"
    log_every: int = 10
    progress: bool = True
    push_to_hub: bool = False
    hub_repo_id: str | None = None

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


KEYS = tuple(field.name for field in dataclasses.fields(Recipe))
_HINTS = typing.get_type_hints(Recipe)


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (parsed from YAML) fits the annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(option, value) for option in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin in (list, dict):
        return isinstance(value, origin)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _coerce(annotation: Any, value: Any) -> Any:
    """YAML 1.1 reads ``2e-4`` (no dot) as a string and ``no`` as ``false``; read them as the key expects.

    ``mixed_precision=no`` is Accelerate's own spelling, so a ``false`` where ``'no'`` is a choice means ``'no'``.
    """
    options = (
        typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    )
    if value is False and typing.get_origin(annotation) is Literal and "no" in typing.get_args(annotation):
        return "no"
    if float in options and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is not None:
        return origin.__name__
    return annotation.__name__


def _unknown_key(key: str, where: str) -> RecipeError:
    close = difflib.get_close_matches(key, KEYS, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known keys: {', '.join(KEYS)}."
    return RecipeError(f"Unknown recipe key {key!r} in {where}.{hint}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into ``(["a", "b"], value)``, the value typed as YAML."""
    if "=" not in text:
        raise RecipeError(f"Override {text!r} is not key=value (e.g. num_epochs=3 or corpus_kwargs.n_images=200).")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise RecipeError(f"Override {text!r} has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError(f"Override {text!r}: the value is not valid YAML ({error}).") from None
    return key.strip().split("."), value


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file and apply ``key=value`` overrides (see :func:`build_recipe`)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(
            f"Recipe file {path} does not exist (give a YAML file such as training/configs/default.yaml)."
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RecipeError(f"Recipe file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise RecipeError(f"Recipe file {path} must hold a mapping of keys, got a {type(values).__name__}.")
    return build_recipe(values, overrides, where=str(path))


def build_recipe(
    values: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), where: str = "the recipe"
) -> Recipe:
    """Check ``values`` (keys and types), apply ``key=value`` overrides (dotted for nested keys) and build a recipe.

    Example:

    ```python
    >>> recipe = build_recipe({"model": "msa-tiny"}, ["num_epochs=2", "corpus_kwargs.n_images=40"])
    >>> recipe.model, recipe.num_epochs, recipe.corpus_kwargs["n_images"]
    ('msa-tiny', 2, 40)
    >>> build_recipe({}, ["num_epoch=2"])
    Traceback (most recent call last):
    ...
    msa_hf_train.recipe.RecipeError: Unknown recipe key 'num_epoch' in the command line. Did you mean num_epochs?
    ```
    """
    values = {**values}
    for key in values:
        if key not in KEYS:
            raise _unknown_key(str(key), where)
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] not in KEYS:
            raise _unknown_key(keys[0], "the command line")
        target = values
        for part in keys[:-1]:
            current = target.get(part)
            current = {} if current is None else dict(current) if isinstance(current, dict) else current
            if not isinstance(current, dict):
                raise RecipeError(f"Override {text!r}: {part!r} is not a mapping, so it has no key {keys[-1]!r}.")
            target[part] = current
            target = current
        target[keys[-1]] = value
    values = {key: _coerce(_HINTS[key], value) for key, value in values.items()}
    for key, value in values.items():
        if not _accepts(_HINTS[key], value):
            raise RecipeError(
                f"Recipe key {key!r} must be {_describe(_HINTS[key])}, got {value!r} ({type(value).__name__})."
            )
    recipe = Recipe(**values)
    _check_values(recipe)
    return recipe


# The valid range of every numeric key (docs/training.md lists the same): (low, low inclusive, high, high inclusive).
RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "seed": (0, True, 2**32 - 1, True),
    "num_epochs": (1, True, math.inf, False),
    "max_steps": (0, True, math.inf, False),
    "per_device_batch_size": (1, True, math.inf, False),
    "gradient_accumulation_steps": (1, True, math.inf, False),
    "learning_rate": (0, False, math.inf, False),
    "vision_lr": (0, True, math.inf, False),
    "text_lr": (0, True, math.inf, False),
    "weight_decay": (0, True, math.inf, False),
    "adam_beta1": (0, True, 1, False),
    "adam_beta2": (0, True, 1, False),
    "adam_epsilon": (0, False, math.inf, False),
    "warmup_steps": (0, True, math.inf, False),
    "max_grad_norm": (0, False, math.inf, False),
    "ema_decay": (0, False, 1, False),
    "keep_last": (1, True, math.inf, False),
    "eval_batch_size": (1, True, math.inf, False),
    "num_workers": (0, True, math.inf, False),
    "shuffle_buffer": (1, True, math.inf, False),
    "max_bad_fraction": (0, True, 1, True),
    "log_every": (1, True, math.inf, False),
    "eval_every": (1, True, math.inf, False),
    "save_every": (1, True, math.inf, False),
    "freeze_vision_stages": (0, True, math.inf, False),
    "freeze_text_layers": (0, True, math.inf, False),
}


def describe_range(key: str) -> str:
    """``RANGES[key]`` as an interval, e.g. ``(0, inf)`` or ``[0, 1)``."""
    low, low_in, high, high_in = RANGES[key]

    def number(x: float) -> str:
        return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"

    return f"{'[' if low_in else '('}{number(low)}, {number(high)}{']' if high_in else ')'}"


def _in_range(key: str, value: float) -> bool:
    low, low_in, high, high_in = RANGES[key]
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return math.isfinite(value) and above and below


def _numeric_choices(key: str) -> str:
    """``a finite number in [0, 1)``, plus the key's other choices (``'epoch'``, ``null``)."""
    options = typing.get_args(_HINTS[key]) or (_HINTS[key],)
    others = [
        repr(word) for option in options if typing.get_origin(option) is Literal for word in typing.get_args(option)
    ]
    if type(None) in options:
        others.append("null")
    kind = "a whole number" if int in options else "a finite number"
    return " or ".join([f"{kind} in {describe_range(key)}", *others])


def _check_values(recipe: Recipe) -> None:
    """Every number finite and in its range: a negative ``max_grad_norm`` or weight decay would train backwards."""
    for key in RANGES:
        value = getattr(recipe, key)
        if value is None or isinstance(value, str):  # null, 'epoch' or 'all': checked by type above
            continue
        if not _in_range(key, value):
            raise RecipeError(f"Recipe key {key!r} must be {_numeric_choices(key)}, got {value!r}.")
    if recipe.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise RecipeError("mixed_precision='fp16' needs a CUDA GPU; on a CPU use 'bf16' or 'no'.")
    if recipe.streaming and recipe.gradient_accumulation_steps > 1:
        raise RecipeError(
            f"streaming=true takes gradient_accumulation_steps=1, got {recipe.gradient_accumulation_steps}: a stream's "
            "end is only known when it comes, after part of a cycle trained; raise per_device_batch_size instead."
        )
    if recipe.push_to_hub and not recipe.hub_repo_id:
        raise RecipeError("push_to_hub=true needs hub_repo_id (e.g. hub_repo_id=your-name/msa-ucm).")
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    if recipe.lr_scheduler not in names:
        close = difflib.get_close_matches(recipe.lr_scheduler, names, n=2)
        raise RecipeError(
            f"Unknown lr_scheduler {recipe.lr_scheduler!r}; expected one of {names}"
            + (f" (did you mean {close[0]}?)" if close else "")
            + "."
        )


__all__ = [
    "KEYS",
    "RANGES",
    "Recipe",
    "RecipeError",
    "build_recipe",
    "describe_range",
    "load_recipe",
    "parse_override",
]
