"""The three MSA losses (docs/method.md, section 5), as plain functions of tensors.

They take already-computed embeddings and MSCMAT scores, so they can be unit-tested against
a loop over the formulas and reused by any trainer. Reductions match the original code
exactly (the triplet loss is summed, not averaged).

Each loss is built from a rectangular block (:func:`hardest_negative_hinge`,
:func:`row_cross_entropy`, :func:`column_distillation`) whose rows may be a slice of a larger
batch: that is how one process of a multi-process run scores its own images against the
captions of every process (global in-batch negatives, see :func:`gather_with_grad`).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def positive_pairs(
    row_index: torch.Tensor,
    column_index: torch.Tensor,
    *,
    row_image_ids: torch.Tensor | None = None,
    column_image_ids: torch.Tensor | None = None,
    row_text_ids: torch.Tensor | None = None,
    column_text_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mask[r, c]`` is True where caption column ``c`` is a positive of image row ``r`` (never a negative).

    Rows and columns carry the index of their (image, caption) pair in the (global) batch; a
    row's own positive is the column with the same index. With image ids, every caption of the
    same image is a positive too (``same_image_positives``). With text ids, every caption whose
    text is one of the image's own captions is a positive (``same_text_positives``): corpora
    such as UCM-Captions reuse one sentence for dozens of images.

    Args:
        row_index: ``R`` pair index of each image row.
        column_index: ``C`` pair index of each caption column.
        row_image_ids, column_image_ids: ``R`` and ``C`` image ids (or both None).
        row_text_ids: ``R×K`` text ids of each image's own captions, padded with ``-1``.
        column_text_ids: ``C`` text id of each caption.

    Example:

    ```python
    >>> import torch
    >>> pairs, ids = torch.arange(3), torch.tensor([7, 7, 9])
    >>> positive_pairs(pairs, pairs, row_image_ids=ids, column_image_ids=ids).int().tolist()
    [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    ```
    """
    mask = row_index[:, None] == column_index[None, :]
    if row_image_ids is not None and column_image_ids is not None:
        mask = mask | (row_image_ids[:, None] == column_image_ids[None, :])
    if row_text_ids is not None and column_text_ids is not None:
        shared = (row_text_ids[:, :, None] == column_text_ids[None, None, :]) & (row_text_ids[:, :, None] >= 0)
        mask = mask | shared.any(dim=1)
    return mask


def hardest_negative_hinge(
    scores: torch.Tensor, targets: torch.Tensor, margin: float, positives: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ_r [m − s[r, targets[r]] + max_{c negative} s[r, c]]_+`` over the rows of ``scores``.

    Args:
        scores: ``R×C`` similarities; each row is a query.
        targets: ``R`` column of each row's own positive.
        margin: the margin ``m``.
        positives: optional ``R×C`` mask of columns that are not negatives (the targets included).
    """
    if positives is None:
        positives = F.one_hot(targets, scores.shape[1]).bool()
    positive = scores.gather(1, targets[:, None])[:, 0]
    # A large finite fill keeps the gradient finite when a row has no negative at all.
    hardest = scores.masked_fill(positives, torch.finfo(scores.dtype).min).max(dim=1).values
    return (margin - positive + hardest).clamp(min=0).sum()


def row_cross_entropy(
    scale_logits: torch.Tensor, targets: torch.Tensor, positives: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of each row towards its target column, averaged over rows, summed over scales.

    Columns marked in ``positives`` other than the target leave the softmax.

    Args:
        scale_logits: ``S×R×C`` scores used as logits (no temperature).
        targets: ``R`` target column of each row.
        positives: optional ``R×C`` mask of positives (the targets included).
    """
    if positives is not None:
        others = positives & ~F.one_hot(targets, scale_logits.shape[-1]).bool()
        scale_logits = scale_logits.masked_fill(others, float("-inf"))
    losses = [F.cross_entropy(logits, targets) for logits in scale_logits]
    return torch.stack(losses).sum()


def column_distillation(scale_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``Σ_{k<S} mean_entries P_k (log P_k − log Q)``, softmax over rows (images) of each column.

    The teacher ``Q`` is the last (deepest) scale and gets no gradient. Works on any ``S×R×C``
    block: a block holding all images and some captions gives each caption's exact term.
    """
    if scale_logits.shape[0] < 2:
        return scale_logits.sum() * 0.0
    log_teacher = F.log_softmax(scale_logits[-1].detach() / temperature, dim=0)
    log_students = F.log_softmax(scale_logits[:-1] / temperature, dim=1)  # dim 1 = images of S-1×R×C
    kl = log_students.exp() * (log_students - log_teacher)
    return kl.mean(dim=(1, 2)).sum()


def _check_square(name: str, matrix: torch.Tensor) -> None:
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(
            f"`{name}` needs as many images as texts (pair i is the positive), got shape {tuple(matrix.shape)}."
        )


def _check_ids(image_ids: torch.Tensor | None, size: int) -> None:
    if image_ids is not None and image_ids.shape != (size,):
        raise ValueError(f"`image_ids` must have shape ({size},) to match the batch, got {tuple(image_ids.shape)}.")


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
    batch = image_embeds.shape[0]
    _check_ids(image_ids, batch)
    scores = image_embeds @ text_embeds.t()
    targets = torch.arange(batch, device=scores.device)
    positives = positive_pairs(targets, targets, row_image_ids=image_ids, column_image_ids=image_ids)
    return hardest_negative_hinge(scores, targets, margin, positives) + hardest_negative_hinge(
        scores.t(), targets, margin, positives.t()
    )


def mscma_loss(scale_logits: torch.Tensor, image_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-scale cross-modal alignment: image→text cross-entropy per scale, summed over scales.

    The sigmoid MSCMAT scores are used directly as logits (no temperature), as in the original.

    Args:
        scale_logits: ``S×B×B`` MSCMAT scores, rows images, columns texts.
        image_ids: optional ``B`` ids; other captions of the same image then leave the softmax.
    """
    _check_square("scale_logits", scale_logits)
    batch = scale_logits.shape[-1]
    _check_ids(image_ids, batch)
    targets = torch.arange(batch, device=scale_logits.device)
    positives = positive_pairs(targets, targets, row_image_ids=image_ids, column_image_ids=image_ids)
    return row_cross_entropy(scale_logits, targets, positives)


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
    return column_distillation(scale_logits, temperature)


def world_size_and_rank() -> tuple[int, int]:
    """``(N, rank)`` of the running ``torch.distributed`` group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, keeping the autograd graph.

    ``accelerator.gather`` and ``dist.all_gather`` return tensors without gradient, so the
    other processes' rows would be constants; ``torch.distributed.nn``'s all-gather sends each
    process the gradient of its own rows back. Every process must pass the same shape
    (see :func:`check_same_batch_size`).
    """
    world_size, _ = world_size_and_rank()
    if world_size == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public differentiable one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor.contiguous()), dim=0)


def check_same_batch_size(batch_size: int, device: torch.device) -> None:
    """Raise unless every process holds ``batch_size`` rows (gathering needs equal shapes)."""
    world_size, _ = world_size_and_rank()
    if world_size == 1:
        return
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([batch_size], device=device))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"Global in-batch negatives need the same batch size on every process, got {[int(s) for s in sizes]}; "
            "use a data loader that pads or drops the last batch (Accelerate's does by default)."
        )


__all__ = [
    "check_same_batch_size",
    "column_distillation",
    "csmmc_loss",
    "gather_with_grad",
    "hardest_negative_hinge",
    "mscma_loss",
    "positive_pairs",
    "row_cross_entropy",
    "triplet_loss",
    "world_size_and_rank",
]
