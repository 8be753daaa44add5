"""Trainers. `registry.get_trainer` looks here for `<Model>Trainer` first, then uses RecBole's trainer for the
model type; either way the class gets compat.SafeCheckpointMixin (safe atomic checkpoints, seen-item masking)."""
from mmrecbole.trainer.mm_trainer import MMTrainer  # noqa: F401
from mmrecbole.trainer.fit_once import FitOnceTrainer  # noqa: F401  (models fitted in one pass, e.g. implicit's)
