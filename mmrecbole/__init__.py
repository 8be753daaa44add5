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
#: Environment variable naming the folder that holds the shipped raw data sets (ml-100k-mm/, amazon-office/, ...).
SHARED_DATA_ENV = "MMRECBOLE_SHARED_DATA"


def shared_data_dir(dataset: str) -> str:
    """Default raw folder of a shipped data set: ``$MMRECBOLE_SHARED_DATA/<dataset>`` when the variable is set (a clone
    outside the project's workspace), else ``<project>/../shared/data/<dataset>``."""
    root = _os.environ.get(SHARED_DATA_ENV) or _os.path.join(PROJECT_ROOT, "..", "shared", "data")
    return _os.path.normpath(_os.path.join(_os.path.expanduser(root), dataset))
