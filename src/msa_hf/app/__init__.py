"""``msa-app``: search an image archive in the browser (text → images, image → images and captions, zero-shot).

A Gradio app over one model and one ``msa-index`` index, both loaded once at start::

    msa-app --model outputs/default/best --index ./archive.idx [--host 127.0.0.1] [--port 7860]

``app.py`` at the repository root runs the same app as a Hugging Face Space, reading
``MSA_APP_MODEL`` / ``MSA_APP_INDEX`` (and optionally ``MSA_APP_IMAGES``) from the environment.
Needs the ``app`` extra (``pip install "msa_hf[app]"``). The search logic lives in
:mod:`msa_hf.app.service` (no Gradio needed), the page in :mod:`msa_hf.app.ui`.
"""

from __future__ import annotations

from ..lazy_imports import lazy_attributes

_LAZY = {  # loaded on first access: `msa-app --help` answers before torch or Gradio are imported
    "AppError": ".service",
    "CaptionScore": ".service",
    "ImageSearchResult": ".service",
    "SearchService": ".service",
    "SearchPage": ".ui",
    "build_demo": ".ui",
    "launch": ".ui",
    "main": ".cli",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
