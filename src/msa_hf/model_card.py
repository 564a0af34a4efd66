"""Model cards for MSA checkpoints, written with huggingface_hub's `ModelCard` / `ModelCardData`.

A card is how a checkpoint is found and judged on the Hub: its metadata (library, license,
task, tags, datasets, base models, and every retrieval figure in ``model-index``) is what the
Hub indexes, and its body says how to load it (with the package, or as remote code), how it
was trained (recipe and command), how the numbers were measured, what it cannot do, and what
to cite. :func:`build_model_card` writes one from values a job has in hand;
:func:`card_from_folder` rebuilds one from what a saved folder holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_msa import PRESETS, MSAConfig
from .io_utils import atomic_write_text
from .retrieval.metrics import DEFAULT_KS
from .sources import DATA_FILE_SUFFIXES, is_hub_id, looks_like_path

# Figures that go into model-index (percent): both directions' recall at each K, then mR.
RECALL_KEYS: tuple[str, ...] = (
    *(f"i2t_r{k}" for k in DEFAULT_KS),
    *(f"t2i_r{k}" for k in DEFAULT_KS),
    "mr",
)
# Shown in the card's table as well (1-based ranks, lower is better).
RANK_KEYS: tuple[str, ...] = ("i2t_medr", "t2i_medr")
METRIC_NAMES = {
    **{f"i2t_r{k}": f"Image-to-text R@{k}" for k in DEFAULT_KS},
    **{f"t2i_r{k}": f"Text-to-image R@{k}" for k in DEFAULT_KS},
    "mr": "mR (mean of the six recalls)",
    "i2t_medr": "Image-to-text median rank",
    "t2i_medr": "Text-to-image median rank",
}
TAGS = ["remote-sensing", "image-text-retrieval", "msa", "msa_hf", "multi-scale-alignment"]
# Retrieval is scored like CLIP's zero-shot tasks: the Hub files such dual encoders under this tag.
PIPELINE_TAG = "zero-shot-image-classification"
MODEL_INDEX_TASK = ("image-text-retrieval", "Image-Text Retrieval")
LIBRARY_NAME = "transformers"
DEFAULT_LICENSE = "apache-2.0"
REPO_PLACEHOLDER = "path/or/hub-id"
SPLITS = ("train", "validation", "test")
# What a training run leaves beside the model and the card reads (msa_hf_train writes them under these
# names): the best checkpoint's validation record, the test record, the resolved recipe, and their keys.
METRICS_FILE = "metrics.json"  # {"validation": {metric: value}, "step": ..., "corpus": ...}
TEST_METRICS_FILE = "test_metrics.json"  # {"test": {metric: value}, ..., "corpus": ...}
RECIPE_FILE = "recipe.yaml"
CORPUS_KEY = "corpus"  # the corpus, in both records and in the recipe
MODEL_KEY = "model"  # the recipe's model: a preset, a folder or a Hub id
# Tower names the package accepts (offline packages, short legacy ids) -> canonical Hub ids.
TEXT_TOWER_HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-base-cased": "google-bert/bert-base-cased",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "roberta-base": "FacebookAI/roberta-base",
    "distilbert-base-uncased": "distilbert/distilbert-base-uncased",
}
MSA_CITATION = """@article{yang2024transcending,
  title   = {Transcending Fusion: A Multi-Scale Alignment Method for Remote Sensing Image-Text Retrieval},
  author  = {Yang, Rui and Wang, Shuang and Han, Yingping and Li, Yuanheng and Zhao, Dong and Quan, Dou
             and Guo, Yanhe and Jiao, Licheng},
  journal = {arXiv preprint arXiv:2405.18959},
  year    = {2024},
  url     = {https://arxiv.org/abs/2405.18959}
}"""
DEFAULT_LIMITATIONS = (
    "- Retrieval quality is measured only on the corpora in the results table; remote-sensing imagery "
    "differs widely by sensor, resolution, season and region, so check it on your own imagery first.\n"
    "- Captions are English; the text tower was not trained for other languages.\n"
    "- RS caption corpora are small and repetitive (many near-identical captions), so high recall on "
    "them does not imply open-vocabulary understanding.\n"
    "- The similarity is a cosine between embeddings: use it to rank, not as a calibrated probability."
)
PROTOCOL = (
    "Retrieval is scored as in the MSA paper: each test image has its 5 captions (the standard RS "
    "protocol). Image-to-text R@K counts an image as a hit when any of its captions is among the "
    "top K; text-to-image R@K counts a caption as a hit when its image is among the top K. "
    "Recalls are in percent, mR is the mean of the six recalls, and ranks are 1-based. "
    "Identical scores (identical captions of different images) are ordered by one of three rules: "
    "against the model (`--ties pessimistic`, the default, and the validation rows), in the published "
    "evaluation code's `np.argsort(scores)[::-1]` order (`--ties argsort`: the test rows of a card "
    "written by msa_hf's trainer, comparable with published tables), or as the expectation over a "
    "random order (`--ties expected`); the training status above gives the test mR under the other two. "
    "Training with `msa_hf` selects the checkpoint on the validation split only "
    "(best validation mR); the test split is evaluated once, on the selected checkpoint, and "
    "never drives selection. Reproduce a row with "
    "`msa-eval --model MODEL --corpus CORPUS --split SPLIT --ties RULE`."
)

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An [MSA](https://arxiv.org/abs/2405.18959) (multi-scale alignment) remote-sensing image-text
retrieval model in `msa_hf` format (the authors' code: [yr666666/MSA](https://github.com/yr666666/MSA)).
MSA is a dual encoder whose image tower is aligned to the text at each of its {{ num_scales }}
scales separately (MSCMAT cross-attention during training); at test time retrieval is the
cosine similarity of one global image embedding and one text embedding ({{ projection_dim }}
dimensions).

- **Image tower:** {{ vision_tower }}
- **Text tower:** {{ text_tower }}
{%- if status %}
- **Status:** {{ status }}
{%- endif %}

## Usage

With the `msa_hf` package installed (it registers MSA with transformers' Auto classes):

```python
import torch
import msa_hf  # noqa: F401
from transformers import AutoModel, AutoProcessor
from PIL import Image

model = AutoModel.from_pretrained("{{ repo_id }}").eval()
processor = AutoProcessor.from_pretrained("{{ repo_id }}")
batch = processor(images=[Image.open("scene.png")], text=["two planes are parked beside the runway"])
with torch.no_grad():
    out = model(**batch)
print(out.logits_per_image)  # cosine similarity, rows = images, columns = captions
```

Without the package, the repository's own model code loads it (needs `torch`,
`transformers>=4.57`, `timm` and `safetensors`). This runs Python code from the repository:
read it, and pin a `revision` (a commit hash) you have checked.

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

Command line, with the package installed: `msa-eval --model {{ repo_id }} --corpus CORPUS --split test`,
`msa-index build IMAGES --model {{ repo_id }} --out IMAGES.idx`, `msa-search IMAGES.idx "a query"`,
`msa-classify IMAGES --model {{ repo_id }} --labels airport,farmland,harbor`.

## Results

{{ results }}

## Evaluation protocol

{{ protocol }}

## Training

{{ training }}

## Limitations

{{ limitations }}

## Citation

```bibtex
{{ citation }}
```
"""


@dataclass(frozen=True)
class Evaluation:
    """One retrieval evaluation: corpus name (or Hub dataset id), split, and the metrics in percent.

    ``metrics`` holds the keys :func:`msa_hf.retrieval.retrieval_metrics` returns (``i2t_r1``,
    ..., ``mr``, ``i2t_medr``, ...); keys it does not know are ignored.
    """

    dataset: str
    split: str
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        if not any(key in self.metrics for key in RECALL_KEYS):
            raise ValueError(
                f"Evaluation on {self.dataset}/{self.split} has none of the recall keys {list(RECALL_KEYS)} "
                f"(got {sorted(self.metrics)}); pass the dict retrieval_metrics returns."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, dataset: str | None = None, split: str | None = None) -> Evaluation:
        """Read ``{"dataset"|"corpus": ..., "split": ..., "metrics": {...}}`` (msa-eval's ``metrics.json``).

        A flat mapping of metrics is accepted too when ``dataset`` and ``split`` are given.
        """
        metrics = data.get("metrics", data)
        name = data.get("dataset") or data.get(CORPUS_KEY) or dataset
        split = data.get("split") or split
        if not isinstance(metrics, Mapping) or not name or not split:
            raise ValueError(
                "An evaluation needs 'dataset' (or 'corpus'), 'split' and a 'metrics' mapping; got keys "
                f"{sorted(data)}."
            )
        numbers = {k: float(v) for k, v in metrics.items() if k in METRIC_NAMES and isinstance(v, (int, float))}
        return cls(dataset=dataset_display_name(str(name)), split=str(split), metrics=numbers)


def dataset_display_name(source: str) -> str:
    """A short corpus name for cards: a Hub id stays, a path becomes its folder's name.

    ```python
    >>> dataset_display_name("rs-synth"), dataset_display_name("data/ucm-captions/dataset_ucm.json")
    ('rs-synth', 'ucm-captions')
    >>> dataset_display_name("user/rsicd")
    'user/rsicd'
    ```
    """
    path = Path(source)
    if path.suffix in DATA_FILE_SUFFIXES:
        return path.parent.name or path.stem
    if looks_like_path(source) or path.exists():
        return path.name
    return source


def tower_hub_id(name: str) -> str | None:
    """The Hub id of a pretrained tower the package names, or ``None`` when it has none (a file, a folder).

    timm names map to the Hub weights timm loads for them; short text-model names to their
    canonical ids.

    ```python
    >>> tower_hub_id("tf_efficientnet_lite0"), tower_hub_id("all-MiniLM-L6-v2")
    ('timm/tf_efficientnet_lite0.in1k', 'sentence-transformers/all-MiniLM-L6-v2')
    >>> tower_hub_id("openai/clip-vit-base-patch32"), tower_hub_id("weights.safetensors")
    ('openai/clip-vit-base-patch32', None)
    ```
    """
    if name in TEXT_TOWER_HUB_IDS:
        return TEXT_TOWER_HUB_IDS[name]
    if Path(name).suffix or Path(name).expanduser().exists():
        return None
    import timm

    if "/" not in name and timm.is_model(name):
        pretrained = timm.models.get_pretrained_cfg(name)
        return getattr(pretrained, "hf_hub_id", None) or None
    return name if is_hub_id(name, with_owner=True) else None


def base_model_ids(vision: str, text: str) -> list[str]:
    """Hub ids of both towers (one when vision and text come from the same model, e.g. a CLIP)."""
    ids = [tower_hub_id(vision), tower_hub_id(text)]
    return list(dict.fromkeys(i for i in ids if i))


@dataclass(frozen=True)
class ModelOrigin:
    """Where a model's towers come from, as cards and training reports name them.

    Args:
        vision_tower, text_tower: one line each (a preset's tower names, or what the config says).
        base_models: Hub ids of the pretrained towers, or of the checkpoint fine-tuned; empty for
            random towers.
        title_towers: the tower names a card title is made of (:func:`model_display_name`).
    """

    vision_tower: str
    text_tower: str
    base_models: tuple[str, ...]
    title_towers: tuple[str, str]


def model_origin(name_or_path: str, config: MSAConfig) -> ModelOrigin:
    """The origin of a model built from ``name_or_path`` (a preset, a folder or a Hub id) with ``config``.

    ```python
    >>> origin = model_origin("msa-effnetlite0-minilm", MSAConfig.from_preset("msa-tiny"))
    >>> origin.base_models
    ('timm/tf_efficientnet_lite0.in1k', 'sentence-transformers/all-MiniLM-L6-v2')
    ```
    """
    entry = PRESETS.get(name_or_path)
    if entry is not None and entry.pretrained:
        return ModelOrigin(
            entry.vision, entry.text, tuple(base_model_ids(entry.vision, entry.text)), (entry.vision, entry.text)
        )
    title = config_tower_names(config)
    if entry is not None:  # an architecture: random towers
        return ModelOrigin(f"{config.vision_backbone} (random)", f"{name_or_path} text tower (random)", (), title)
    hub_id = tower_hub_id(name_or_path)  # fine-tuning a Hub checkpoint: that checkpoint is the base
    return ModelOrigin(config.vision_backbone, config.text_config.model_type, (hub_id,) if hub_id else (), title)


def describe_towers(config: MSAConfig) -> tuple[str, str]:
    """Plain descriptions of the two towers from the config (used when the caller gives none)."""
    if config.vision_config is not None:
        vision = f"transformers `{config.vision_config.model_type}`"
    else:
        vision = f"timm `{config.vision_backbone}`"
    scales = ", ".join(f"{i} ({p})" for i, p in zip(config.vision_out_indices, config.vision_pooling))
    text_config = config.text_config
    text = (
        f"transformers `{text_config.model_type}`, {text_config.num_hidden_layers} layers, width "
        f"{text_config.hidden_size}, `{config.text_pooling}` pooling, {config.text_max_length} tokens"
    )
    return f"{vision}, scales from stages {scales}", text


def model_display_name(vision: str, text: str, dataset: str | None = None) -> str:
    """A card title that says what the model is: ``msa-``, both towers and the corpus, Hub-id style.

    ```python
    >>> model_display_name("tf_efficientnet_lite2", "all-MiniLM-L6-v2", "ucm-captions")
    'msa-tf-efficientnet-lite2-all-minilm-l6-v2-ucm-captions'
    >>> model_display_name("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32", "user/rsicd")
    'msa-clip-vit-base-patch32-rsicd'
    ```
    """
    parts = [
        "msa",
        *dict.fromkeys(Path(name).name for name in (vision, text)),
        *([Path(dataset).name] if dataset else []),
    ]
    return "-".join(part.lower().replace("_", "-") for part in parts if part)


def config_tower_names(config: MSAConfig) -> tuple[str, str]:
    """Tower names from a config alone (a folder without a recipe): the timm name or the model types."""
    vision = config.vision_config.model_type if config.vision_config is not None else config.vision_backbone
    return vision, config.text_config.model_type


def _format(value: float | None, key: str) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if key in RANK_KEYS and float(value).is_integer() else f"{value:.2f}"


def results_table(evaluations: Sequence[Evaluation]) -> str:
    """A Markdown table, one row per evaluation: recalls, mR and median ranks."""
    keys = [*RECALL_KEYS, *RANK_KEYS]
    header = "| dataset | split | " + " | ".join(keys) + " |"
    rule = "|---|---|" + "---:|" * len(keys)
    rows = [
        f"| {e.dataset} | {e.split} | " + " | ".join(_format(e.metrics.get(k), k) for k in keys) + " |"
        for e in evaluations
    ]
    return "\n".join([header, rule, *rows])


def _eval_results(evaluations: Sequence[Evaluation]) -> list[EvalResult]:
    task_type, task_name = MODEL_INDEX_TASK
    return [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=e.dataset,
            dataset_name=e.dataset,
            dataset_split=e.split,
            metric_type=key,
            metric_name=METRIC_NAMES[key],
            metric_value=round(float(e.metrics[key]), 2),
        )
        for e in evaluations
        for key in RECALL_KEYS
        if key in e.metrics
    ]


def _training_section(status: str | None, recipe: str | None, command: str | None) -> str:
    parts = []
    if command:
        parts.append(f"Command:\n\n```bash\n{command.strip()}\n```")
    if recipe:
        parts.append(f"Resolved training recipe (`recipe.yaml`):\n\n```yaml\n{recipe.strip()}\n```")
    if not parts:
        parts.append(status or "No training recipe was recorded with this checkpoint.")
    return "\n\n".join(parts)


def build_model_card(
    config: MSAConfig,
    *,
    model_name: str,
    evaluations: Sequence[Evaluation] = (),
    base_models: Sequence[str] = (),
    datasets: Sequence[str] | None = None,
    vision_tower: str | None = None,
    text_tower: str | None = None,
    recipe: str | None = None,
    command: str | None = None,
    status: str | None = None,
    repo_id: str | None = None,
    limitations: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> ModelCard:
    """A complete MSA model card: Hub metadata plus usage, results, protocol, training, limits, citation.

    Args:
        config: the model's config (scales, widths and towers are read from it).
        model_name: the card's title and ``model-index`` name.
        evaluations: every evaluation to report (e.g. validation and test); each recall and
            mR goes into ``model-index``, recalls, mR and median ranks into the table.
        base_models: Hub ids of the pretrained towers (:func:`base_model_ids` maps package
            tower names); empty for towers trained from scratch.
        datasets: dataset names or Hub ids for the metadata; default: the evaluations' datasets.
        vision_tower, text_tower: one-line descriptions; default: read from ``config``.
        recipe: the resolved training recipe (YAML text); command: the command that ran it.
        status: one line on what the checkpoint is (e.g. "trained 20 epochs on RSICD").
        repo_id: the Hub id shown in the usage snippets (default a placeholder).
        limitations: Markdown replacing the default limitations.
        license: an SPDX-like Hub license id.

    Example:

    ```python
    >>> from msa_hf import MSAConfig
    >>> test = Evaluation("rs-synth", "test", {"i2t_r1": 50.0, "t2i_r1": 40.0, "mr": 60.0})
    >>> card = build_model_card(MSAConfig.from_preset("msa-tiny"), model_name="msa-tiny", evaluations=[test])
    >>> card.data.pipeline_tag, [r.metric_type for r in card.data.eval_results]
    ('zero-shot-image-classification', ['i2t_r1', 't2i_r1', 'mr'])
    ```
    """
    evaluations = list(evaluations)
    described_vision, described_text = describe_towers(config)
    names = list(datasets) if datasets is not None else list(dict.fromkeys(e.dataset for e in evaluations))
    card_data = ModelCardData(
        model_name=model_name,
        library_name=LIBRARY_NAME,
        license=license,
        pipeline_tag=PIPELINE_TAG,
        tags=list(TAGS),
        datasets=names or None,
        base_model=list(base_models) or None,
        metrics=["recall"] if evaluations else None,
        eval_results=_eval_results(evaluations) or None,
    )
    values: dict[str, Any] = {
        "model_name": model_name,
        "num_scales": config.num_scales,
        "projection_dim": config.projection_dim,
        "vision_tower": vision_tower or described_vision,
        "text_tower": text_tower or described_text,
        "status": status,
        "repo_id": repo_id or REPO_PLACEHOLDER,
        "results": results_table(evaluations) if evaluations else "No evaluation was run.",
        "protocol": PROTOCOL,
        "training": _training_section(status, recipe, command),
        "limitations": limitations or DEFAULT_LIMITATIONS,
        "citation": MSA_CITATION,
    }
    return ModelCard.from_template(card_data, template_str=CARD_TEMPLATE, **values)


def evaluations_from_record(
    record: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, dataset: str | None = None, split: str | None = None
) -> list[Evaluation]:
    """The evaluations one metrics record holds, in any of the shapes the package writes.

    * msa-eval's ``{"corpus"|"dataset": ..., "split": ..., "metrics": {...}}``, or a list of them;
    * training's ``{"corpus": ..., "validation": {...}, "test": {...}}`` (one per split key);
    * a flat mapping of metrics, read as ``split`` of ``dataset``.

    ```python
    >>> record = {"corpus": "rs-synth", "test": {"i2t_r1": 50.0, "mr": 40.0}, "best_step": 120}
    >>> [(e.dataset, e.split, e.metrics["mr"]) for e in evaluations_from_record(record)]
    [('rs-synth', 'test', 40.0)]
    ```
    """
    if isinstance(record, Sequence) and not isinstance(record, (str, bytes)):
        return [e for entry in record for e in evaluations_from_record(entry, dataset=dataset, split=split)]
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object or a list of them, got {type(record).__name__}")
    name = record.get("dataset") or record.get(CORPUS_KEY) or dataset
    by_split = {key: value for key, value in record.items() if key in SPLITS and isinstance(value, Mapping)}
    if by_split:
        return [Evaluation.from_dict(metrics, dataset=name, split=key) for key, metrics in by_split.items()]
    return [Evaluation.from_dict(record, dataset=name, split=split)]


def evaluations_from_folder(folder: str | os.PathLike, dataset: str | None = None) -> list[Evaluation]:
    """The evaluations a saved folder records in ``metrics.json`` and ``test_metrics.json``.

    Any shape :func:`evaluations_from_record` reads; a flat mapping of metrics is the validation
    split (``metrics.json``, the best checkpoint's) or the test split (``test_metrics.json``) of
    ``dataset``.
    """
    evaluations = []
    for name, split in ((METRICS_FILE, "validation"), (TEST_METRICS_FILE, "test")):
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            evaluations += evaluations_from_record(
                json.loads(path.read_text(encoding="utf-8")), dataset=dataset, split=split
            )
        except (json.JSONDecodeError, ValueError, TypeError) as error:
            raise ValueError(f"{path} is not an evaluation record: {error}") from error
    return evaluations


def card_from_folder(folder: str | os.PathLike, *, repo_id: str | None = None, command: str | None = None) -> ModelCard:
    """Build a card from what a saved folder holds: its config, metrics files and ``recipe.yaml``.

    The recipe's ``model`` names the towers (a preset with pretrained towers gives both Hub ids as
    ``base_model``) and its ``corpus`` names the dataset of flat metrics files.
    """
    folder = Path(folder)
    config = MSAConfig.from_pretrained(folder)
    recipe_path = folder / RECIPE_FILE
    recipe_text = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else None
    recipe = yaml.safe_load(recipe_text) if recipe_text else {}
    recipe = recipe if isinstance(recipe, dict) else {}
    corpus = recipe.get(CORPUS_KEY)
    evaluations = evaluations_from_folder(folder, dataset=dataset_display_name(str(corpus)) if corpus else None)
    origin = model_origin(str(recipe.get(MODEL_KEY) or ""), config)
    datasets = list(dict.fromkeys(e.dataset for e in evaluations if e.dataset))
    name = repo_id or model_display_name(*origin.title_towers, datasets[0] if datasets else None)
    return build_model_card(
        config,
        model_name=name,
        evaluations=evaluations,
        base_models=origin.base_models,
        recipe=recipe_text,
        command=command,
        repo_id=repo_id,
    )


def write_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write ``card`` as ``folder/README.md`` atomically (a crash never leaves half a card)."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path


__all__ = [
    "CARD_TEMPLATE",
    "CORPUS_KEY",
    "METRICS_FILE",
    "MODEL_KEY",
    "RECIPE_FILE",
    "TEST_METRICS_FILE",
    "MSA_CITATION",
    "RECALL_KEYS",
    "Evaluation",
    "ModelOrigin",
    "base_model_ids",
    "build_model_card",
    "card_from_folder",
    "dataset_display_name",
    "describe_towers",
    "evaluations_from_folder",
    "evaluations_from_record",
    "config_tower_names",
    "model_display_name",
    "model_origin",
    "results_table",
    "tower_hub_id",
    "write_card",
]
