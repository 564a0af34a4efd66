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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


class PairFeatures(NamedTuple):
    """What the loss needs from this process's batch of (image, caption) pairs (``MSAModel`` computes it)."""

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    scale_features: list[torch.Tensor]
    text_tokens: torch.Tensor
    text_global: torch.Tensor
    token_mask: torch.Tensor | None


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


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


@dataclass
class LossBlocks:
    """What the loss terms read: this process's pairs scored against the (global) batch.

    Row blocks hold this process's images against every caption; column blocks every image
    against this process's captions (docs/method.md). With one process both are the whole batch.

    Args:
        image_embeds, text_embeds: ``R×D`` this process's normalised embeddings.
        all_image_embeds, all_text_embeds: ``N·R×D`` every process's (gathered with gradient).
        own: ``R`` index of this process's pairs in the global batch.
        rows: ``R×N·R`` positives of this process's images among every caption.
        columns: ``N·R×R`` positives of every image among this process's captions.
        world_size: ``N``, the number of processes whose pairs are in the global batch.
        scale_logits: ``S×R×N·R`` MSCMAT scores of the row block (``None`` when MSCMAT did not run).
        column_logits: ``S×N·R×R`` MSCMAT scores of the column block.
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    all_image_embeds: torch.Tensor
    all_text_embeds: torch.Tensor
    own: torch.Tensor
    rows: torch.Tensor
    columns: torch.Tensor
    world_size: int = 1
    scale_logits: torch.Tensor | None = None
    column_logits: torch.Tensor | None = None

    @classmethod
    def single_process(
        cls,
        batch: int,
        device: torch.device,
        image_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        scale_logits: torch.Tensor | None = None,
        **ids: torch.Tensor | None,
    ) -> LossBlocks:
        """The blocks of one process's batch of ``batch`` pairs (what the public loss functions score).

        ``ids`` are ``image_ids``, ``text_ids`` and ``image_text_ids``, as in :func:`positive_pairs`.
        """
        index = torch.arange(batch, device=device)
        rows = positive_pairs(
            index, index, row_image_ids=ids.get("image_ids"), column_image_ids=ids.get("image_ids"),
            row_text_ids=ids.get("image_text_ids"), column_text_ids=ids.get("text_ids"),
        )  # fmt: skip
        empty = torch.zeros(batch, 0, device=device)
        images = empty if image_embeds is None else image_embeds
        texts = empty if text_embeds is None else text_embeds
        return cls(images, texts, images, texts, index, rows, rows, 1, scale_logits, scale_logits)


# A loss term: a function of the blocks and its options, giving one unweighted scalar.
LossFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LossTerm:
    """One registered loss: ``loss = Σ weight · function(blocks, **options)`` over the terms.

    Args:
        function: ``function(blocks: LossBlocks, **options) -> scalar``.
        weight: the config attribute holding its weight (a config without it weighs it 0).
        options: ``{keyword: config attribute}`` passed to ``function``.
        uses_mscmat: it reads ``scale_logits``/``column_logits``: MSCMAT runs when such a term weighs
            anything (with all of them at weight 0 MSCMAT is skipped and they are 0).
        optional: computed (and reported) only when its weight is above 0: an option, not the paper.
    """

    function: LossFunction
    weight: str
    options: Mapping[str, str] = field(default_factory=dict)
    uses_mscmat: bool = False
    optional: bool = False


def triplet_term(blocks: LossBlocks, margin: float) -> torch.Tensor:
    """VSE++ hinge on the hardest negative, both directions, summed over the global batch.

    This process's share is multiplied by ``N`` to undo DDP's gradient averaging.
    """
    return blocks.world_size * (
        hardest_negative_hinge(blocks.image_embeds @ blocks.all_text_embeds.t(), blocks.own, margin, blocks.rows)
        + hardest_negative_hinge(
            blocks.text_embeds @ blocks.all_image_embeds.t(), blocks.own, margin, blocks.columns.t()
        )
    )


def mscma_term(blocks: LossBlocks) -> torch.Tensor:
    """Per-scale image→text cross-entropy of the MSCMAT scores (a mean: no world-size factor)."""
    return row_cross_entropy(blocks.scale_logits, blocks.own, blocks.rows)


def csmmc_term(blocks: LossBlocks, temperature: float) -> torch.Tensor:
    """The deepest scale distilled into the others, column by column."""
    return column_distillation(blocks.column_logits, temperature)


def contrastive_term(blocks: LossBlocks, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE on the global embeddings (an option, not the paper)."""
    return 0.5 * (
        row_cross_entropy(
            (blocks.image_embeds @ blocks.all_text_embeds.t() / temperature)[None], blocks.own, blocks.rows
        )
        + row_cross_entropy(
            (blocks.text_embeds @ blocks.all_image_embeds.t() / temperature)[None], blocks.own, blocks.columns.t()
        )
    )


# The loss terms, in the order they are summed and reported (``MSAOutput.loss_terms``, the trainer's log).
LOSS_TERMS: dict[str, LossTerm] = {
    "triplet": LossTerm(triplet_term, "triplet_weight", {"margin": "triplet_margin"}),
    "mscma": LossTerm(mscma_term, "mscma_weight", uses_mscmat=True),
    "csmmc": LossTerm(csmmc_term, "csmmc_weight", {"temperature": "csmmc_temperature"}, uses_mscmat=True),
    "contrastive": LossTerm(
        contrastive_term, "contrastive_weight", {"temperature": "contrastive_temperature"}, optional=True
    ),
}


def register_loss(name: str, term: LossTerm) -> None:
    """Add a loss term under ``name`` (reported as ``loss_<name>``); its weight is read from the config."""
    if name in LOSS_TERMS:
        raise ValueError(f"A loss term {name!r} is registered already; pick another name.")
    LOSS_TERMS[name] = term


@dataclass
class MSALossOutput:
    """The weighted total, the unweighted terms by name, and the row block's MSCMAT scores (if it ran)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    scale_logits: torch.Tensor | None


class MSALoss:
    """MSA's training objective: gathers the global batch, builds the blocks, weighs and sums the terms.

    ``MSAModel.forward(return_loss=True)`` runs it; :func:`triplet_loss`, :func:`mscma_loss` and
    :func:`csmmc_loss` are its terms on one process's batch. Weights and options come from the
    config (``triplet_weight``, ``triplet_margin``, ...), one attribute per :data:`LOSS_TERMS` entry.
    """

    def __init__(self, config: Any) -> None:
        self.weights = {name: float(getattr(config, term.weight, 0.0)) for name, term in LOSS_TERMS.items()}
        self.options = {
            name: {keyword: getattr(config, key) for keyword, key in term.options.items()}
            for name, term in LOSS_TERMS.items()
        }
        self.terms = {
            name: term for name, term in LOSS_TERMS.items() if not (term.optional and self.weights[name] <= 0)
        }

    @property
    def uses_mscmat(self) -> bool:
        """Whether MSCMAT runs for the loss (some term that reads its scores weighs anything)."""
        return any(term.uses_mscmat and self.weights[name] != 0 for name, term in self.terms.items())

    def __call__(
        self,
        features: PairFeatures,
        mscmat: Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
        *,
        image_ids: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
        image_text_ids: torch.Tensor | None = None,
        global_negatives: bool = False,
    ) -> MSALossOutput:
        """The loss of this process's pairs against the local batch, or the global one with ``global_negatives``.

        ``mscmat(scale_features, text_tokens, text_global, token_mask)`` scores images against captions.
        """
        blocks = self.blocks(features, image_ids, text_ids, image_text_ids, global_negatives)
        # The terms without MSCMAT first: the autograd graph is built in the same order as always.
        terms = {
            name: term.function(blocks, **self.options[name])
            for name, term in self.terms.items()
            if not term.uses_mscmat
        }
        if self.uses_mscmat:
            self.score(blocks, features, mscmat)
        zero = blocks.image_embeds.new_zeros(())
        terms.update(
            {
                name: term.function(blocks, **self.options[name]) if blocks.scale_logits is not None else zero
                for name, term in self.terms.items()
                if term.uses_mscmat
            }
        )
        names = iter(self.terms)
        first = next(names)
        loss = self.weights[first] * terms[first]
        for name in names:
            loss = loss + self.weights[name] * terms[name]
        return MSALossOutput(loss, {name: terms[name] for name in self.terms}, blocks.scale_logits)

    def blocks(
        self,
        local: PairFeatures,
        image_ids: torch.Tensor | None,
        text_ids: torch.Tensor | None,
        image_text_ids: torch.Tensor | None,
        global_negatives: bool,
    ) -> LossBlocks:
        """Gather the other processes' embeddings (with gradient) and mark the positives of both blocks."""
        batch = local.image_embeds.shape[0]
        device = local.image_embeds.device
        world_size, rank = world_size_and_rank() if global_negatives else (1, 0)
        if world_size > 1:
            check_same_batch_size(batch, device)
        gather = gather_with_grad if world_size > 1 else _identity
        own = torch.arange(batch, device=device) + rank * batch
        everyone = torch.arange(batch * world_size, device=device)
        all_image_ids = None if image_ids is None else gather(image_ids)
        all_text_ids = None if text_ids is None else gather(text_ids)
        all_image_text_ids = None if image_text_ids is None else gather(image_text_ids)
        return LossBlocks(
            local.image_embeds,
            local.text_embeds,
            gather(local.image_embeds),
            gather(local.text_embeds),
            own,
            rows=positive_pairs(
                own,
                everyone,
                row_image_ids=image_ids,
                column_image_ids=all_image_ids,
                row_text_ids=image_text_ids,
                column_text_ids=all_text_ids,
            ),
            columns=positive_pairs(
                everyone,
                own,
                row_image_ids=all_image_ids,
                column_image_ids=image_ids,
                row_text_ids=all_image_text_ids,
                column_text_ids=text_ids,
            ),
            world_size=world_size,
        )

    @staticmethod
    def score(blocks: LossBlocks, local: PairFeatures, mscmat: Callable[..., torch.Tensor]) -> None:
        """Fill the blocks' MSCMAT scores: this process's images × every caption, every image × its captions."""
        if blocks.world_size == 1:
            blocks.scale_logits = blocks.column_logits = mscmat(
                local.scale_features, local.text_tokens, local.text_global, local.token_mask
            )
            return
        blocks.scale_logits = mscmat(
            local.scale_features,
            gather_with_grad(local.text_tokens),
            gather_with_grad(local.text_global),
            None if local.token_mask is None else gather_with_grad(local.token_mask),
        )
        blocks.column_logits = mscmat(
            [gather_with_grad(features) for features in local.scale_features],
            local.text_tokens,
            local.text_global,
            local.token_mask,
        )


def triplet_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    margin: float = 0.5,
    image_ids: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
    image_text_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """VSE++ triplet loss with the hardest in-batch negative in both directions, summed (``MSALoss``'s term).

    Args:
        image_embeds: ``B×D`` L2-normalised image embeddings.
        text_embeds: ``B×D`` L2-normalised text embeddings; row i is image i's caption.
        margin: the margin ``m``.
        image_ids: optional ``B`` ids; captions of the same image are then never negatives.
        text_ids, image_text_ids: optional ``B`` text id of each caption and ``B×K`` ids of each
            image's own captions (padded with -1); a caption whose text is one of the image's own
            is then never its negative (``same_text_positives``).

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
    blocks = LossBlocks.single_process(
        batch,
        image_embeds.device,
        image_embeds,
        text_embeds,
        image_ids=image_ids,
        text_ids=text_ids,
        image_text_ids=image_text_ids,
    )
    return triplet_term(blocks, margin)


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
    return mscma_term(
        LossBlocks.single_process(batch, scale_logits.device, scale_logits=scale_logits, image_ids=image_ids)
    )


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
    blocks = LossBlocks.single_process(scale_logits.shape[-1], scale_logits.device, scale_logits=scale_logits)
    return csmmc_term(blocks, temperature)


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
    "LOSS_TERMS",
    "LossBlocks",
    "LossTerm",
    "MSALoss",
    "MSALossOutput",
    "PairFeatures",
    "check_same_batch_size",
    "contrastive_term",
    "csmmc_term",
    "mscma_term",
    "register_loss",
    "triplet_term",
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
