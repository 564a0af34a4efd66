"""Configuration of MSA, the multi-scale alignment image-text retrieval model.

The defaults reproduce the authors' setup (ResNet-50 + BERT-base, see docs/method.md);
every departure from it is an explicit option whose default is the faithful behaviour.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from transformers import AutoConfig

try:  # transformers >= 5 renamed the base class; the old name stays as an alias there.
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CNN_POOLING = ("max", "avg")
TOKEN_POOLING = ("cls", "mean")
TEXT_POOLING = ("cls", "pooler")

# bert-base-uncased's shape: the paper's text tower.
BERT_BASE_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model: ImageNet ResNet-50 stages 1-4 and BERT-base.
    "msa-resnet50-bert-base": {
        "vision_backbone": "resnet50",
        "vision_out_indices": (1, 2, 3, 4),
        "vision_pooling": ("max", "max", "max", "avg"),
        "text_config": BERT_BASE_TEXT_CONFIG,
        "mscmat_num_heads": 12,
    },
    # A few-kilobyte model for tests and smoke runs: timm's test_resnet and a 2-layer BERT.
    "msa-tiny": {
        "vision_backbone": "test_resnet",
        "vision_out_indices": (1, 2, 3, 4),
        "vision_pooling": ("max", "max", "max", "avg"),
        "image_size": 64,
        "text_config": {
            "model_type": "bert",
            "vocab_size": 128,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
        },
        "text_max_length": 16,
        "mscmat_num_heads": 4,
    },
}


def _as_sub_config(name: str, sub_config: Any) -> _BaseConfig:
    """Turn a dict or config into a config object of the sub-model's own class."""
    if isinstance(sub_config, _BaseConfig):
        return sub_config
    if not isinstance(sub_config, dict):
        raise ValueError(f"`{name}` must be a dict or a transformers config, got {type(sub_config).__name__}.")
    sub_config = dict(sub_config)
    model_type = sub_config.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"`{name}` needs a `model_type` key (e.g. 'bert', 'clip_vision_model') to pick its class.")
    return AutoConfig.for_model(model_type, **sub_config)


class MSAConfig(_BaseConfig):
    r"""Configuration for [`MSAModel`].

    Args:
        vision_backbone: timm model name of the image tower (built with ``features_only=True``).
        vision_config: config (or dict with ``model_type``) of a transformers vision model (CLIP
            vision, ViT, ...). When given it is the image tower instead of ``vision_backbone``, and
            its hidden states at ``vision_out_indices`` (0 = embeddings) are the scales.
        vision_out_indices: which backbone stages (or hidden-state layers) are the scales,
            shallow to deep.
        vision_pooling: global pooling per scale: ``"max"`` or ``"avg"`` for timm feature maps,
            ``"cls"`` (first token) or ``"mean"`` (patch tokens) for transformers towers. The
            paper max-pools stages 1-3 and average-pools stage 4.
        image_size: square input side the processor resizes to.
        image_mean, image_std: normalisation constants of the image tower.
        text_config: config (or dict with ``model_type``) of any transformers text encoder.
        text_pooling: global text embedding: ``"cls"`` (first token's last state, the paper) or
            ``"pooler"`` (the encoder's ``pooler_output``, e.g. CLIP's end-of-text state).
        text_max_length: tokens per caption including ``[CLS]``/``[SEP]``; MSCMAT attends the
            ``text_max_length - 1`` positions after ``[CLS]``.
        projection_dim: width of the retrieval embeddings; defaults to the text hidden size
            (the paper uses no text projection).
        mscmat_num_heads: attention heads of each MSCMAT scale.
        mscmat_mask_padding: mask padding tokens in MSCMAT attention. ``False`` is faithful: the
            original attends padding too.
        triplet_margin: margin of the hardest-negative triplet loss.
        mscma_weight, csmmc_weight: weights of the MSCMA and CSMMC losses.
        csmmc_temperature: softmax temperature of the CSMMC distillation.
        same_image_positives: when ``image_ids`` are given, other captions of the same image are
            not negatives (triplet and MSCMA losses). ``False`` is faithful.
        same_text_positives: captions whose text equals one of an image's own captions are not
            negatives of that image (triplet and MSCMA losses); helps corpora that reuse one
            sentence for many images, such as UCM-Captions. ``False`` is faithful.
        mscmat_scales: which scales (indices into ``vision_out_indices``) MSCMAT aligns; ``None``
            (faithful) = all. ``[-1]`` keeps only the deepest scale (then CSMMC has no student).

    Example:

    ```python
    >>> from msa_hf import MSAConfig
    >>> config = MSAConfig.from_preset("msa-tiny")
    >>> config.num_scales, config.projection_dim
    (4, 32)
    ```
    """

    model_type = "msa"

    def __init__(
        self,
        vision_backbone: str = "resnet50",
        vision_config: dict[str, Any] | _BaseConfig | None = None,
        vision_out_indices: Sequence[int] = (1, 2, 3, 4),
        vision_pooling: Sequence[str] = ("max", "max", "max", "avg"),
        image_size: int = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        text_config: dict[str, Any] | _BaseConfig | None = None,
        text_pooling: str = "cls",
        text_max_length: int = 31,
        projection_dim: int | None = None,
        mscmat_num_heads: int = 12,
        mscmat_mask_padding: bool = False,
        triplet_margin: float = 0.5,
        mscma_weight: float = 15.0,
        csmmc_weight: float = 10.0,
        csmmc_temperature: float = 2.0,
        same_image_positives: bool = False,
        same_text_positives: bool = False,
        mscmat_scales: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vision_backbone = vision_backbone
        self.vision_config = None if vision_config is None else _as_sub_config("vision_config", vision_config)
        self.vision_out_indices = [int(i) for i in vision_out_indices]
        self.vision_pooling = [str(p) for p in vision_pooling]
        self.image_size = int(image_size)
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        self.text_config = _as_sub_config("text_config", BERT_BASE_TEXT_CONFIG if text_config is None else text_config)
        self.text_pooling = str(text_pooling)
        self.text_max_length = int(text_max_length)
        self.projection_dim = int(projection_dim) if projection_dim is not None else self.text_config.hidden_size
        self.mscmat_num_heads = int(mscmat_num_heads)
        self.mscmat_mask_padding = bool(mscmat_mask_padding)
        self.triplet_margin = float(triplet_margin)
        self.mscma_weight = float(mscma_weight)
        self.csmmc_weight = float(csmmc_weight)
        self.csmmc_temperature = float(csmmc_temperature)
        self.same_image_positives = bool(same_image_positives)
        self.same_text_positives = bool(same_text_positives)
        self.mscmat_scales = None if mscmat_scales is None else [int(k) for k in mscmat_scales]
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        if len(self.vision_out_indices) < 1:
            raise ValueError("`vision_out_indices` must name at least one backbone stage.")
        if len(self.vision_pooling) != len(self.vision_out_indices):
            raise ValueError(
                f"`vision_pooling` has {len(self.vision_pooling)} entries but `vision_out_indices` selects "
                f"{len(self.vision_out_indices)} scales; give one pooling per scale."
            )
        allowed = CNN_POOLING if self.vision_config is None else TOKEN_POOLING
        unknown = sorted(set(self.vision_pooling) - set(allowed))
        if unknown:
            tower = "a timm feature map" if self.vision_config is None else "a transformers vision tower"
            raise ValueError(f"Unknown `vision_pooling` {unknown} for {tower}; expected each of {list(allowed)}.")
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"Unknown `text_pooling` {self.text_pooling!r}; expected one of {list(TEXT_POOLING)}.")
        hidden = self.text_config.hidden_size
        if hidden % self.mscmat_num_heads != 0:
            raise ValueError(
                f"The text hidden size {hidden} is not divisible by `mscmat_num_heads`={self.mscmat_num_heads}; "
                "MSCMAT splits the text width evenly across heads."
            )
        if self.text_max_length < 2:
            raise ValueError(f"`text_max_length` must be >= 2 ([CLS] plus one token), got {self.text_max_length}.")
        if self.image_size < 1:
            raise ValueError(f"`image_size` must be positive, got {self.image_size}.")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("`image_mean` and `image_std` need one value per RGB channel (3 each).")
        if self.mscmat_scales is not None:
            num_scales = len(self.vision_out_indices)
            bad = [k for k in self.mscmat_scales if not -num_scales <= k < num_scales]
            if bad or not self.mscmat_scales or len(set(self.mscmat_scale_indices)) != len(self.mscmat_scales):
                raise ValueError(
                    f"`mscmat_scales` {self.mscmat_scales} must be distinct indices into the {num_scales} scales "
                    f"(0..{num_scales - 1}, or negative from the deepest), e.g. [-1] for the deepest only."
                )
        if self.csmmc_temperature <= 0:
            raise ValueError(f"`csmmc_temperature` must be > 0, got {self.csmmc_temperature}.")

    @property
    def num_scales(self) -> int:
        return len(self.vision_out_indices)

    @property
    def mscmat_scale_indices(self) -> list[int]:
        """The scales MSCMAT aligns, as sorted non-negative indices (all by default)."""
        if self.mscmat_scales is None:
            return list(range(self.num_scales))
        return sorted(k % self.num_scales for k in self.mscmat_scales)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MSAConfig:
        """Build a named configuration (see ``PRESETS``), with keyword overrides on top."""
        if name not in PRESETS:
            raise ValueError(f"Unknown MSA preset {name!r}; available: {sorted(PRESETS)}.")
        kwargs = copy.deepcopy(PRESETS[name])
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for name in ("text_config", "vision_config"):
            if isinstance(getattr(self, name), _BaseConfig):
                output[name] = getattr(self, name).to_dict()
        return output


__all__ = ["MSAConfig", "PRESETS"]
