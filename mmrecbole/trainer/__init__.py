"""Trainers. `registry.get_trainer` looks here for `<Model>Trainer` first, then uses RecBole's trainer for the
model type; either way the class gets compat.SafeCheckpointMixin (safe atomic checkpoints, seen-item masking)."""
