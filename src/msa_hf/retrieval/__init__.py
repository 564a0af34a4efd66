"""Evaluation and retrieval tools for MSA: metrics, ``msa-eval``, an image index, zero-shot classification.

Light to import: every name loads on first access, so the commands in
:mod:`msa_hf.retrieval.cli` parse their arguments before torch is imported, and ``evaluate``
stays optional (the metric class is loaded only when used).
"""

from __future__ import annotations

from ..lazy_imports import lazy_attributes

_LAZY = {
    # metrics (numpy and torch)
    "DEFAULT_KS": ".metrics",
    "TIE_RULES": ".metrics",
    "RetrievalRanks": ".metrics",
    "format_metrics_table": ".metrics",
    "metrics_from_ranks": ".metrics",
    "retrieval_metrics": ".metrics",
    "retrieval_metrics_from_embeddings": ".metrics",
    "retrieval_ranks": ".metrics",
    "retrieval_ranks_from_embeddings": ".metrics",
    # evaluate-compatible metric
    "RetrievalMetric": ".evaluate_metric",
    "METRIC_SCRIPT_PATH": ".evaluate_metric",
    # the encoder
    "EncodedBatch": ".encoding",
    "encode_image_batches": ".encoding",
    "encode_image_list": ".encoding",
    "encode_images": ".encoding",
    "encode_texts": ".encoding",
    "image_features": ".encoding",
    "text_features": ".encoding",
    # model identity (defined in msa_hf.sources, re-exported for convenience)
    "model_fingerprint": "msa_hf.sources",
    "ModelLoadError": "msa_hf.sources",
    # image files (defined in msa_hf.data.images, re-exported for convenience)
    "list_image_files": "msa_hf.data.images",
    "load_image": "msa_hf.data.images",
    "ImageLoadError": "msa_hf.data.images",
    "SkippedFile": "msa_hf.data.images",
    # index and search
    "ImageIndex": ".index",
    "SearchHit": ".index",
    "ImageIndexError": ".index",
    "IndexBuildError": ".index",
    "IndexMismatchError": ".index",
    "IncompleteIndexError": ".index",
    "StaleReport": ".index",
    "faiss_available": ".index",
    "search_index": ".index",
    "build_index": ".index_build",
    # zero-shot classification
    "DEFAULT_TEMPLATE": ".classify",
    "ClassificationResult": ".classify",
    "zero_shot_classify": ".classify",
    "classify_embeddings": ".classify",
    "classify_folder": ".classify",
    # corpus evaluation
    "EvaluationResult": ".evaluation",
    "evaluate_corpus": ".evaluation",
    "render_retrieval_examples": ".visualize",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
