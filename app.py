"""Hugging Face Spaces entry point: the ``msa-app`` search app, configured by environment variables.

Set the Space variables ``MSA_APP_MODEL`` (a saved MSA folder in the Space, or a Hub id) and
``MSA_APP_INDEX`` (an index folder from ``msa-index build``; ``MSA_APP_IMAGES`` if its image
folder sits elsewhere than where it was built). Spaces set ``GRADIO_SERVER_NAME`` and
``GRADIO_SERVER_PORT``, which ``msa-app`` reads. Locally: ``MSA_APP_MODEL=... MSA_APP_INDEX=... python app.py``.
"""

import sys
from pathlib import Path

try:
    from msa_hf.app.cli import main
except ImportError:  # a Space runs this repository as it is, without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from msa_hf.app.cli import main

if __name__ == "__main__":
    sys.exit(main([]))
