"""mmrecbole: multimodal recommendation on RecBole's conventions.

Stages, one package each: data (dataset builders) -> features (item text/image feature tables) -> model ->
trainer (training/eval, safe checkpoints) -> ensemble -> leaderboard. RecBole's version quirks live in
``mmrecbole.compat`` only.
"""
import os as _os

__version__ = "0.1.0"

#: Project root (holds properties/ and dataset/); the package is used from a checkout (`pip install -e .`).
PROJECT_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
PROPERTIES_DIR = _os.path.join(PROJECT_ROOT, "properties")
DATASET_DIR = _os.path.join(PROJECT_ROOT, "dataset")
