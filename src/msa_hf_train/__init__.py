"""msa_hf_train: the Accelerate training loop for MSA, kept apart from the model library (as open_clip_train is).

``python training/train.py [RECIPE.yaml] [key=value ...]`` is its command line; :func:`train`
runs a :class:`Recipe` from Python.
"""

from .recipe import KEYS, Recipe, RecipeError, build_recipe, load_recipe
from .trainer import TrainingDiverged, TrainingInterrupted, TrainingResult, train

__all__ = [
    "KEYS",
    "Recipe",
    "RecipeError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingResult",
    "build_recipe",
    "load_recipe",
    "train",
]
