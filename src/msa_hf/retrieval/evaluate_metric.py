"""Image-text retrieval Recall@K as a Hugging Face ``evaluate`` metric.

Two ways to get it, both offline:

    >>> from msa_hf.retrieval import RetrievalMetric
    >>> metric = RetrievalMetric()

    >>> import evaluate
    >>> from msa_hf.retrieval import METRIC_SCRIPT_PATH
    >>> metric = evaluate.load(METRIC_SCRIPT_PATH)   # this file is also a metric script

``evaluate`` sees one *example per caption*: ``predictions`` is that caption's row of scores
against every image (i.e. a column of the images × captions similarity, so pass
``similarity.T``), ``references`` is the index of the caption's image. That shape lets
``add_batch`` stream captions in any batches, and any number of captions per image works.

    >>> import numpy as np
    >>> sim = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]])       # 2 images x 3 captions
    >>> out = metric.compute(predictions=sim.T, references=[0, 0, 1])
    >>> out["i2t_r1"], round(out["t2i_r1"], 2)
    (50.0, 33.33)

The values are exactly :func:`msa_hf.retrieval.retrieval_metrics` (same tie rule).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import evaluate
import numpy as np

from msa_hf.retrieval.metrics import DEFAULT_KS, retrieval_metrics

__all__ = ["RetrievalMetric", "METRIC_SCRIPT_PATH"]

METRIC_SCRIPT_PATH: str = str(Path(__file__).resolve())

_DESCRIPTION = """\
Image-text retrieval metrics for corpora with several captions per image (remote-sensing
protocol): image->text and text->image Recall@1/5/10 in percent, mR (mean of the six recalls),
and 1-based median/mean ranks. A competitor tied with the ground truth counts as ranked ahead.
"""

_INPUTS = """\
Args:
    predictions: one row per caption, the caption's similarity to every image
        (the transpose of an images x captions similarity matrix).
    references: one int per caption, the row index of the caption's image.
    ks: optional tuple of K values (default (1, 5, 10)).
Returns:
    dict with i2t_r{K}, t2i_r{K}, mr, i2t_medr, i2t_meanr, t2i_medr, t2i_meanr,
    num_images, num_captions.
"""

_CITATION = """\
@article{yang2024msa,
  title={Transcending Fusion: A Multi-Scale Alignment Method for Remote Sensing Image-Text Retrieval},
  author={Yang, Rui and others},
  journal={arXiv preprint arXiv:2405.18959},
  year={2024}
}
"""


class RetrievalMetric(evaluate.Metric):
    """``evaluate.Metric`` wrapper of :func:`msa_hf.retrieval.retrieval_metrics` (one example per caption)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS) -> dict[str, float]:
        try:
            similarity = np.asarray(predictions, dtype=np.float32)
        except ValueError as exc:
            raise ValueError("`predictions` rows must all have the same length (one score per image).") from exc
        if similarity.ndim != 2:
            raise ValueError(
                f"`predictions` must be one row of image scores per caption, got shape {similarity.shape}."
            )
        return retrieval_metrics(similarity.T, np.asarray(references), ks=ks)
