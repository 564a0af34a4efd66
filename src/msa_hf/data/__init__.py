"""RS caption corpora for MSA: loading, validation, training/evaluation views, and ``rs-synth``.

* :func:`load_corpus` reads a Karpathy-style JSON (RSICD, RSITMD, UCM-, Sydney-, NWPU-Captions),
  an imagefolder with ``metadata.jsonl``/``.csv``, a ``save_to_disk`` folder, a
  ``DatasetDict`` or a Hub id into one schema with ``train``/``validation``/``test`` splits,
  validating it first.
* :func:`shard_corpus` (``msa-data shard``) writes any of those as Parquet shards that
  ``datasets`` streams, for training with ``streaming=true``.
* :func:`training_view`, :func:`evaluation_view` and :class:`MSADataCollator` turn a split into
  model inputs, decoding images lazily in data-loader workers.
* :func:`generate_synth_corpus` / :func:`ensure_synth_corpus` write ``rs-synth``, a
  procedurally generated multi-scale aerial corpus, so everything runs out of the box.

Light to import: every name loads on first access, so ``msa-data`` parses its arguments before
``datasets``, numpy or torch are imported.
"""

from __future__ import annotations

from ..lazy_imports import lazy_attributes

_LAZY = {
    "load_corpus": ".corpus",
    "read_corpus": ".corpus",
    "shard_corpus": ".shard",
    "shard_files": ".shard",
    "validate_corpus": ".corpus",
    "corpus_info": ".corpus",
    "SPLITS": ".corpus",
    "CorpusValidationError": ".validation",
    "ValidationReport": ".validation",
    "Problem": ".validation",
    "validate_records": ".validation",
    "training_view": ".views",
    "evaluation_view": ".views",
    "EvalView": ".views",
    "MSADataCollator": ".views",
    "generate_synth_corpus": ".synth",
    "ensure_synth_corpus": ".synth",
    "render_scene": ".synth",
    "SynthScene": ".synth",
    "SYNTH_JSON_NAME": ".synth",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
