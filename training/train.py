"""Train MSA from a recipe: ``python training/train.py [RECIPE.yaml] [key=value ...]``.

With no recipe it runs ``training/configs/default.yaml``, the package's main job: MSA on the
offline pretrained towers, trained on the embedded rs-synth corpus in a few minutes on a CPU.
Runs unchanged under ``accelerate launch`` and ``torchrun``. See ``msa_hf_train.cli``.
"""

import sys
from pathlib import Path

from msa_hf_train.cli import main

if __name__ == "__main__":
    sys.exit(main(default_recipe=Path(__file__).resolve().parent / "configs" / "default.yaml"))
