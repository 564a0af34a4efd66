"""Tests of the search app (``msa_hf.app``); a package so its conftest does not shadow ``tests/conftest.py``."""
