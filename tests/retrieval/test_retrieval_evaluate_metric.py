"""The evaluate-compatible metric gives exactly retrieval_metrics, offline."""

from __future__ import annotations

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate")

from msa_hf.retrieval import METRIC_SCRIPT_PATH, RetrievalMetric, retrieval_metrics  # noqa: E402


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.repeat(np.arange(10), 5), [3, 3]])  # image 3 has 7 captions
    sim = rng.standard_normal((10, ids.size)).astype(np.float32)
    return sim, ids


def test_compute_equals_function():
    sim, ids = _data()
    out = RetrievalMetric().compute(predictions=sim.T, references=ids)
    assert out == retrieval_metrics(sim, ids)


def test_add_batch_streams_captions():
    sim, ids = _data(1)
    metric = RetrievalMetric()
    for start in range(0, ids.size, 16):
        metric.add_batch(predictions=sim.T[start : start + 16], references=ids[start : start + 16])
    assert metric.compute() == retrieval_metrics(sim, ids)


def test_evaluate_load_of_the_script(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sim, ids = _data(2)
    metric = evaluate.load(METRIC_SCRIPT_PATH, cache_dir=str(tmp_path))
    assert metric.compute(predictions=sim.T, references=ids, ks=(1, 5)) == retrieval_metrics(sim, ids, ks=(1, 5))


def test_ragged_predictions_error():
    with pytest.raises(ValueError):
        RetrievalMetric().compute(predictions=[[0.1, 0.2], [0.3]], references=[0, 1])
