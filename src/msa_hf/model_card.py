"""Model cards for MSA checkpoints, written with huggingface_hub's `ModelCard`.

A card states what the checkpoint is, how to load it, and the retrieval numbers it got,
together with the command that produced them, so a number on the Hub can be reproduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_msa import MSAConfig

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An [MSA](https://arxiv.org/abs/2405.18959) remote-sensing image-text retrieval model in
`msa_hf` format: a dual encoder whose image tower is aligned to the text at
{{ num_scales }} scales separately (MSCMAT), used at test time as cosine similarity between
global image and text embeddings ({{ projection_dim }} dimensions).

- Image tower: {{ vision_tower }}
- Text tower: {{ text_tower }}
- Status: {{ status }}

## Use

```python
import torch
import msa_hf  # registers MSA with transformers' Auto classes
from transformers import AutoModel, AutoProcessor
from PIL import Image

model = AutoModel.from_pretrained("{{ repo_id }}").eval()
processor = AutoProcessor.from_pretrained("{{ repo_id }}")
batch = processor(images=[Image.open("scene.png")], text=["two planes are parked beside the runway"])
with torch.no_grad():
    out = model(**batch)
print(out.logits_per_image)  # cosine similarity, rows = images
```

## Results

{{ results }}

Reproduce with:

```bash
{{ command }}
```

## Limitations

{{ limitations }}
"""


def _results_table(metrics: Mapping[str, float], dataset_name: str, split: str) -> str:
    names = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"]
    header = "| corpus | split | " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 2)
    row = f"| {dataset_name} | {split} | " + " | ".join(f"{metrics[n]:.2f}" for n in names) + " |"
    return "\n".join([header, rule, row])


def build_model_card(
    config: MSAConfig,
    *,
    model_name: str,
    vision_tower: str,
    text_tower: str,
    command: str,
    status: str,
    dataset_name: str,
    split: str = "test",
    metrics: Mapping[str, float] | None = None,
    base_models: list[str] | None = None,
    repo_id: str = "path/to/this/folder",
    limitations: str = "",
) -> ModelCard:
    """Fill the MSA card template; ``metrics`` are percentages as `retrieval_metrics` returns them.

    Example:

    ```python
    >>> from msa_hf import MSAConfig
    >>> card = build_model_card(MSAConfig.from_preset("msa-tiny"), model_name="msa-tiny", vision_tower="test_resnet",
    ...                         text_tower="tiny BERT", command="python demo.py", status="random weights",
    ...                         dataset_name="rs-synth")
    >>> "# msa-tiny" in str(card)
    True
    ```
    """
    eval_results = None
    if metrics:
        eval_results = [
            EvalResult(
                task_type="image-text-retrieval",
                dataset_type=dataset_name,
                dataset_name=dataset_name,
                dataset_split=split,
                metric_type=name,
                metric_name=name,
                metric_value=round(float(metrics[name]), 2),
            )
            for name in ("i2t_r1", "t2i_r1", "mr")
        ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        license="apache-2.0",
        tags=["msa", "msa_hf", "remote-sensing", "image-text-retrieval"],
        base_model=base_models or None,
        eval_results=eval_results,
    )
    values: dict[str, Any] = {
        "model_name": model_name,
        "num_scales": config.num_scales,
        "projection_dim": config.projection_dim,
        "vision_tower": vision_tower,
        "text_tower": text_tower,
        "status": status,
        "repo_id": repo_id,
        "results": _results_table(metrics, dataset_name, split) if metrics else "No evaluation was run.",
        "command": command,
        "limitations": limitations or "Evaluated only on the corpus above; check it on your own imagery first.",
    }
    return ModelCard.from_template(card_data, template_str=CARD_TEMPLATE, **values)


__all__ = ["build_model_card", "CARD_TEMPLATE"]
