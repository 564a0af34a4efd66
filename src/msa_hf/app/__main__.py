"""``python -m msa_hf.app`` is ``msa-app``."""

from msa_hf.app.cli import main

raise SystemExit(main())
