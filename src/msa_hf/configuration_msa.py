"""Configuration of MSA, the multi-scale alignment image-text retrieval model.

The defaults reproduce the authors' setup (ResNet-50 + BERT-base, see docs/method.md);
every departure from it is an explicit option whose default is the faithful behaviour.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig

try:  # transformers >= 5 renamed the base class; the old name stays as an alias there.
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

logger = logging.getLogger(__name__)
CONFIG_NAME = "config.json"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CNN_POOLING = ("max", "avg")
TOKEN_POOLING = ("cls", "mean")
TEXT_POOLING = ("cls", "pooler", "mean")
# Groups of views of an aerial image, which has no canonical orientation. View v turns the image by
# 90°·(v % 4), then mirrors it left-right if v >= 4 (the dihedral group of the square); "flips" is
# its subgroup of the identity, the 180° turn (= double flip) and the two mirror images.
IMAGE_VIEW_GROUPS = {"flips": (0, 2, 4, 6), "dihedral": tuple(range(8))}

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

# all-MiniLM-L6-v2's shape (the text tower of the offline presets).
MINILM_L6_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
PAPER_SCALES: dict[str, Any] = {"vision_out_indices": (1, 2, 3, 4), "vision_pooling": ("max", "max", "max", "avg")}
DEFAULT_MSCMAT_HEADS = 12  # the paper's


@dataclass(frozen=True)
class Preset:
    """A named MSA model: its architecture and, when it has them, where its pretrained towers come from.

    ``MSAConfig.from_preset(name)`` gives the architecture (a config never holds weights);
    ``MSAModel.from_preset(name)`` builds the model with the pretrained towers, which only
    presets with ``pretrained=True`` have.
    """

    description: str
    config: dict[str, Any]
    vision: str | None = None  # the image tower for `MSAModel.from_backbones`
    text: str | None = None  # the text tower for `MSAModel.from_backbones`

    @property
    def pretrained(self) -> bool:
        """Whether the towers come with pretrained weights (the MSA heads always start fresh)."""
        return self.vision is not None and self.text is not None


EFFNET_LITE0_MINILM: dict[str, Any] = {
    "vision_backbone": "tf_efficientnet_lite0",
    **PAPER_SCALES,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
    "text_config": MINILM_L6_TEXT_CONFIG,
}

PRESETS: dict[str, Preset] = {
    "msa-resnet50-bert-base": Preset(
        "The paper's model: ImageNet ResNet-50 (timm, Hub) stages 1-4 and bert-base-uncased (Hub).",
        {"vision_backbone": "resnet50", **PAPER_SCALES, "text_config": BERT_BASE_TEXT_CONFIG},
        vision="resnet50",
        text="bert-base-uncased",
    ),
    "msa-effnetlite0-minilm": Preset(
        "ImageNet EfficientNet-Lite0 and all-MiniLM-L6-v2, both from PyPI packages (no Hub needed).",
        EFFNET_LITE0_MINILM,
        vision="tf_efficientnet_lite0",
        text="all-MiniLM-L6-v2",
    ),
    "msa-effnetlite2-minilm": Preset(
        "ImageNet EfficientNet-Lite2 (260 px) and all-MiniLM-L6-v2, both from PyPI packages.",
        {**EFFNET_LITE0_MINILM, "vision_backbone": "tf_efficientnet_lite2", "image_size": 260},
        vision="tf_efficientnet_lite2",
        text="all-MiniLM-L6-v2",
    ),
    "msa-tiny": Preset(
        "A 0.44 M-parameter random model for tests and smoke runs: timm's test_resnet and a 2-layer BERT.",
        {
            "vision_backbone": "test_resnet",
            **PAPER_SCALES,
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
    ),
}


def get_preset(name: str) -> Preset:
    """The registry entry ``name``, or a ValueError listing the presets there are."""
    if name not in PRESETS:
        choices = ", ".join(f"{key} ({'pretrained' if p.pretrained else 'random'})" for key, p in PRESETS.items())
        raise ValueError(f"Unknown MSA preset {name!r}; available: {choices}.")
    return PRESETS[name]


def default_mscmat_heads(text_width: int) -> int:
    """The largest head count <= 12 (the paper's) that divides the text width: 12 for 768, 8 for 512."""
    return max(h for h in range(1, DEFAULT_MSCMAT_HEADS + 1) if text_width % h == 0)


def _as_sub_config(name: str, sub_config: Any) -> _BaseConfig:
    """Turn a dict or config into a config object of the sub-model's own class."""
    if isinstance(sub_config, _BaseConfig):
        sub_config = copy.deepcopy(sub_config)
    elif isinstance(sub_config, dict):
        sub_config = dict(sub_config)
        model_type = sub_config.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"`{name}` needs a `model_type` key (e.g. 'bert', 'clip_vision_model') to pick its class.")
        sub_config.pop("_name_or_path", None)
        sub_config = AutoConfig.for_model(model_type, **sub_config)
    else:
        raise ValueError(f"`{name}` must be a dict or a transformers config, got {type(sub_config).__name__}.")
    sub_config._name_or_path = ""  # where the tower came from is not part of the model: folders stay portable
    return sub_config


class _PresentSubConfigs:
    """``sub_configs`` that lists only the sub-configs an instance has.

    transformers walks ``config.sub_configs`` to pass ``attn_implementation``, ``dtype`` and the
    output flags to each tower; a timm image tower has no ``vision_config``, and transformers
    4.57 does not skip a ``None`` sub-config. On the class it lists every possible one.
    """

    ALL = {"text_config": AutoConfig, "vision_config": AutoConfig}

    def __get__(self, instance: Any, owner: type) -> dict[str, type]:
        if instance is None:
            return dict(self.ALL)
        return {key: cls for key, cls in self.ALL.items() if instance.__dict__.get(key) is not None}


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
        text_pooling: global text embedding: ``"cls"`` (first token's last state, the paper),
            ``"pooler"`` (the encoder's ``pooler_output``, e.g. CLIP's end-of-text state) or
            ``"mean"`` (mean of the real tokens' last states, how sentence-transformers towers such
            as all-MiniLM-L6-v2 were trained).
        text_max_length: tokens per caption including ``[CLS]``/``[SEP]``; MSCMAT attends the
            ``text_max_length - 1`` positions after ``[CLS]``.
        projection_dim: width of the retrieval embeddings; defaults to the text hidden size
            (the paper uses no text projection).
        mscmat_num_heads: attention heads of each MSCMAT scale. ``None`` (default): the largest
            count <= 12 (the paper's) that divides the text width, e.g. 12 for BERT-base (768)
            and 8 for CLIP ViT-B (512); the choice is logged.
        mscmat_mask_padding: mask padding tokens in MSCMAT attention. ``False`` is faithful: the
            original attends padding too.
        triplet_margin: margin of the hardest-negative triplet loss.
        triplet_weight: weight of the triplet loss (``1`` is faithful). ``0`` with a
            ``contrastive_weight`` gives a CLIP-style InfoNCE fine-tune of the same towers, the
            baseline of ``benchmarks/ablation.py``.
        mscma_weight, csmmc_weight: weights of the MSCMA and CSMMC losses.
        csmmc_temperature: softmax temperature of the CSMMC distillation.
        same_image_positives: when ``image_ids`` are given, other captions of the same image are
            not negatives (triplet and MSCMA losses). ``False`` is faithful.
        same_text_positives: captions whose text equals one of an image's own captions are not
            negatives of that image (triplet and MSCMA losses); helps corpora that reuse one
            sentence for many images, such as UCM-Captions. ``False`` is faithful.
        mscmat_scales: which scales (indices into ``vision_out_indices``) MSCMAT aligns; ``None``
            (faithful) = all. ``[-1]`` keeps only the deepest scale (then CSMMC has no student).
        contrastive_weight, contrastive_temperature: add ``contrastive_weight`` × a symmetric
            InfoNCE loss on the global embeddings (cosine / temperature, both directions, the same
            positives as the triplet loss). ``0`` (faithful) = off. Not part of MSA: a stable,
            dense training signal that helps fresh heads on small corpora.
        image_flip_averaging: at inference (``model.eval()``), the image embedding is the mean of
            the embeddings of the image's views named by ``image_averaging_views``: aerial scenes
            have no canonical orientation. Training is unaffected. ``False`` (faithful) = one pass.
        image_averaging_views: the views ``image_flip_averaging`` averages, a key of
            ``IMAGE_VIEW_GROUPS``: ``"flips"`` (the image and its horizontal, vertical and double
            flip; 4 image-tower passes, the group the ``flips`` training augmentation draws from) or
            ``"dihedral"`` (all 8 rotations and mirror images; 8 passes, the ``dihedral`` one).

    Example:

    ```python
    >>> from msa_hf import MSAConfig
    >>> config = MSAConfig.from_preset("msa-tiny")
    >>> config.num_scales, config.projection_dim
    (4, 32)
    ```
    """

    model_type = "msa"
    sub_configs = _PresentSubConfigs()

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
        mscmat_num_heads: int | None = None,
        mscmat_mask_padding: bool = False,
        triplet_margin: float = 0.5,
        triplet_weight: float = 1.0,
        mscma_weight: float = 15.0,
        csmmc_weight: float = 10.0,
        csmmc_temperature: float = 2.0,
        same_image_positives: bool = False,
        same_text_positives: bool = False,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.05,
        mscmat_scales: Sequence[int] | None = None,
        image_flip_averaging: bool = False,
        image_averaging_views: str = "flips",
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
        if mscmat_num_heads is None:
            mscmat_num_heads = default_mscmat_heads(self.text_config.hidden_size)
            logger.info(
                "mscmat_num_heads not set: using %d, the largest count <= %d dividing the text width %d.",
                mscmat_num_heads,
                DEFAULT_MSCMAT_HEADS,
                self.text_config.hidden_size,
            )
        self.mscmat_num_heads = int(mscmat_num_heads)
        self.mscmat_mask_padding = bool(mscmat_mask_padding)
        self.triplet_margin = float(triplet_margin)
        self.triplet_weight = float(triplet_weight)
        self.mscma_weight = float(mscma_weight)
        self.csmmc_weight = float(csmmc_weight)
        self.csmmc_temperature = float(csmmc_temperature)
        self.same_image_positives = bool(same_image_positives)
        self.same_text_positives = bool(same_text_positives)
        self.contrastive_weight = float(contrastive_weight)
        self.contrastive_temperature = float(contrastive_temperature)
        self.mscmat_scales = None if mscmat_scales is None else [int(k) for k in mscmat_scales]
        self.image_flip_averaging = bool(image_flip_averaging)
        self.image_averaging_views = str(image_averaging_views)
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
        if self.image_averaging_views not in IMAGE_VIEW_GROUPS:
            raise ValueError(
                f"`image_averaging_views` must be one of {sorted(IMAGE_VIEW_GROUPS)}, got {self.image_averaging_views!r}."
            )
        if self.csmmc_temperature <= 0:
            raise ValueError(f"`csmmc_temperature` must be > 0, got {self.csmmc_temperature}.")
        if not self.triplet_weight >= 0:
            raise ValueError(f"`triplet_weight` must be >= 0 (1 is the paper's), got {self.triplet_weight}.")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ValueError(
                f"`contrastive_weight` must be >= 0 and `contrastive_temperature` > 0, got "
                f"{self.contrastive_weight} and {self.contrastive_temperature}."
            )

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
        """The architecture of a named model (see ``PRESETS``), with keyword overrides on top.

        A config holds no weights: ``MSAModel(MSAConfig.from_preset(name))`` is a random model of
        that shape; ``MSAModel.from_preset(name)`` loads the preset's pretrained towers.
        """
        kwargs = copy.deepcopy(get_preset(name).config)
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """Load a saved MSA config; a folder without ``config.json`` or of another model type is refused."""
        folder = Path(str(pretrained_model_name_or_path)) / kwargs.get("subfolder", "")
        if folder.is_dir() and not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{folder}: no {CONFIG_NAME} here. An MSA model folder is written by MSAModel.save_pretrained "
                "(config.json + model.safetensors)."
            )
        if folder.is_dir():
            config_dict, _ = cls.get_config_dict(folder / CONFIG_NAME)
            check_model_type(config_dict, folder)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for name in ("text_config", "vision_config"):
            if isinstance(getattr(self, name), _BaseConfig):
                output[name] = getattr(self, name).to_dict()
        return output


def check_model_type(config_dict: dict[str, Any], source: str | Path) -> None:
    """Refuse the config of another model (e.g. a plain BERT folder) with what to do instead."""
    model_type = config_dict.get("model_type")
    if model_type not in (None, MSAConfig.model_type):
        raise ValueError(
            f"{source} holds a {model_type} model, not an MSA model; build MSA on it with "
            f"MSAModel.from_backbones(vision, text), e.g. MSAModel.from_backbones('resnet50', '{source}') "
            "for a text tower."
        )


__all__ = [
    "IMAGE_VIEW_GROUPS",
    "MSAConfig",
    "PRESETS",
    "Preset",
    "check_model_type",
    "default_mscmat_heads",
    "get_preset",
]
