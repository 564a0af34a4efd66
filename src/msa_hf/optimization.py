"""Optimizer parameter groups with per-tower learning rates.

Pretrained towers usually want a smaller learning rate than the freshly initialised MSA
heads. The original trains everything at one rate (1e-5) with AdamW weight decay 0.1, which
is what the defaults give.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def param_groups(
    model: nn.Module,
    lr: float = 1e-5,
    vision_lr: float | None = None,
    text_lr: float | None = None,
    weight_decay: float = 0.1,
) -> list[dict[str, Any]]:
    """Split an `MSAModel`'s trainable parameters into vision / text / heads groups for an optimizer.

    Frozen parameters (``requires_grad=False``) are left out; empty groups are dropped.

    Example:

    ```python
    >>> import torch
    >>> from msa_hf import MSAConfig, MSAModel
    >>> model = MSAModel(MSAConfig.from_preset("msa-tiny"))
    >>> groups = param_groups(model, lr=1e-4, vision_lr=1e-5)
    >>> [(g["name"], g["lr"]) for g in groups]
    [('vision', 1e-05), ('text', 0.0001), ('heads', 0.0001)]
    >>> optimizer = torch.optim.AdamW(groups)
    ```
    """
    towers = {"vision": "vision_model.", "text": "text_model."}
    rates = {
        "vision": vision_lr if vision_lr is not None else lr,
        "text": text_lr if text_lr is not None else lr,
        "heads": lr,
    }
    buckets: dict[str, list[nn.Parameter]] = {"vision": [], "text": [], "heads": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        bucket = next((tower for tower, prefix in towers.items() if name.startswith(prefix)), "heads")
        buckets[bucket].append(param)
    return [
        {"name": name, "params": params, "lr": rates[name], "weight_decay": weight_decay}
        for name, params in buckets.items()
        if params
    ]


__all__ = ["param_groups"]
