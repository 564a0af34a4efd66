"""``msa_hf.retrieval`` is the one place to import the retrieval tools from: every public name resolves."""

from __future__ import annotations

import inspect

import msa_hf.retrieval as retrieval


def test_every_exported_name_resolves() -> None:
    missing = [name for name in retrieval.__all__ if not hasattr(retrieval, name)]
    assert missing == []


def test_the_default_prompt_template_is_exported() -> None:
    from msa_hf.retrieval import DEFAULT_TEMPLATE, zero_shot_classify

    assert inspect.signature(zero_shot_classify).parameters["templates"].default == DEFAULT_TEMPLATE
    assert DEFAULT_TEMPLATE.count("{}") == 1
