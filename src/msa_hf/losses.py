"""The three MSA losses (method spec section 5), as plain functions of tensors.

They take already-computed embeddings and MSCMAT scores, so they can be unit-tested against
a loop over the spec's formulas and reused by any trainer. Reductions match the original
code exactly (the triplet loss is summed, not averaged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _same_image_mask(image_ids: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """``mask[i, j]`` is True where caption j is a positive for image i (the diagonal at least)."""
    mask = torch.eye(size, dtype=torch.bool, device=device)
    if image_ids is not None:
        if image_ids.shape != (size,):
            raise ValueError(f"`image_ids` must have shape ({size},) to match the batch, got {tuple(image_ids.shape)}.")
        mask = mask | (image_ids[:, None] == image_ids[None, :])
    return mask


def _check_square(name: str, matrix: torch.Tensor) -> None:
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(
            f"`{name}` needs as many images as texts (pair i is the positive), got shape {tuple(matrix.shape)}."
        )


def triplet_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    margin: float = 0.5,
    image_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """VSE++ triplet loss with the hardest in-batch negative in both directions, summed.

    Args:
        image_embeds: ``B×D`` L2-normalised image embeddings.
        text_embeds: ``B×D`` L2-normalised text embeddings; row i is image i's caption.
        margin: the margin ``m``.
        image_ids: optional ``B`` ids; captions of the same image are then never negatives.

    Example:

    ```python
    >>> import torch, torch.nn.functional as F
    >>> v = F.normalize(torch.randn(4, 8), dim=-1); t = F.normalize(torch.randn(4, 8), dim=-1)
    >>> triplet_loss(v, t).shape
    torch.Size([])
    ```
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"`image_embeds` {tuple(image_embeds.shape)} and `text_embeds` {tuple(text_embeds.shape)} must match."
        )
    scores = image_embeds @ text_embeds.t()
    positives = scores.diagonal()
    not_negative = _same_image_mask(image_ids, scores.shape[0], scores.device)
    # A large finite fill keeps the gradient finite when a row has no negative at all.
    negatives = scores.masked_fill(not_negative, torch.finfo(scores.dtype).min)
    hardest_text = negatives.max(dim=1).values  # hardest caption for each image
    hardest_image = negatives.max(dim=0).values  # hardest image for each caption
    cost_text = (margin - positives + hardest_text).clamp(min=0)
    cost_image = (margin - positives + hardest_image).clamp(min=0)
    return cost_text.sum() + cost_image.sum()


def mscma_loss(scale_logits: torch.Tensor, image_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-scale cross-modal alignment: image→text cross-entropy per scale, summed over scales.

    The sigmoid MSCMAT scores are used directly as logits (no temperature), as in the original.

    Args:
        scale_logits: ``S×B×B`` MSCMAT scores, rows images, columns texts.
        image_ids: optional ``B`` ids; other captions of the same image then leave the softmax.
    """
    _check_square("scale_logits", scale_logits)
    batch = scale_logits.shape[-1]
    target = torch.arange(batch, device=scale_logits.device)
    if image_ids is not None:
        others = _same_image_mask(image_ids, batch, scale_logits.device) & ~torch.eye(
            batch, dtype=torch.bool, device=scale_logits.device
        )
        scale_logits = scale_logits.masked_fill(others, float("-inf"))
    losses = [F.cross_entropy(logits, target) for logits in scale_logits]
    return torch.stack(losses).sum()


def csmmc_loss(scale_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Cross-scale consistency: distil the last (deepest) scale into every smaller one.

    For each text, the distribution over images (column softmax at ``temperature``) of scale k
    is pulled towards the deepest scale's by ``KL(P_k || Q)``, averaged over all ``B²`` entries
    (PyTorch ``kl_div(..., reduction="mean")``). The teacher gets no gradient.

    Args:
        scale_logits: ``S×B×B`` MSCMAT scores, rows images, columns texts.
        temperature: the softmax temperature ``τ``.
    """
    _check_square("scale_logits", scale_logits)
    if scale_logits.shape[0] < 2:
        return scale_logits.sum() * 0.0
    log_teacher = F.log_softmax(scale_logits[-1].detach() / temperature, dim=0)
    log_students = F.log_softmax(scale_logits[:-1] / temperature, dim=1)  # dim 1 = images of S-1×B×B
    kl = log_students.exp() * (log_students - log_teacher)
    return kl.mean(dim=(1, 2)).sum()


__all__ = ["triplet_loss", "mscma_loss", "csmmc_loss"]
