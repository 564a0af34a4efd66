"""RS caption corpora for MSA: loading, validation, training/evaluation views, and ``rs-synth``.

* :func:`load_corpus` reads a Karpathy-style JSON (RSICD, RSITMD, UCM-, Sydney-, NWPU-Captions),
  an imagefolder with ``metadata.jsonl``/``.csv``, a ``save_to_disk`` folder, a
  ``DatasetDict`` or a Hub id into one schema with ``train``/``validation``/``test`` splits,
  validating it first.
* :func:`training_view`, :func:`evaluation_view` and :class:`MSADataCollator` turn a split into
  model inputs, decoding images lazily in data-loader workers.
* :func:`generate_synth_corpus` / :func:`ensure_synth_corpus` write ``rs-synth``, a
  procedurally generated multi-scale aerial corpus, so everything runs out of the box.
"""

from .corpus import SPLITS, corpus_info, load_corpus, validate_corpus
from .synth import SYNTH_JSON_NAME, SynthScene, ensure_synth_corpus, generate_synth_corpus, render_scene
from .validation import CorpusValidationError, Problem, ValidationReport, validate_records
from .views import EvalView, MSADataCollator, evaluation_view, training_view

__all__ = [
    "load_corpus",
    "validate_corpus",
    "corpus_info",
    "SPLITS",
    "CorpusValidationError",
    "ValidationReport",
    "Problem",
    "validate_records",
    "training_view",
    "evaluation_view",
    "EvalView",
    "MSADataCollator",
    "generate_synth_corpus",
    "ensure_synth_corpus",
    "render_scene",
    "SynthScene",
    "SYNTH_JSON_NAME",
]
