"""Trainer of our gradient-trained models: RecBole's Trainer with per-epoch model hooks and named loss terms
(compat.TrainerHooksMixin); the registry adds safe checkpoints. Models select it with
`trainer_name = "MMTrainer"`."""
from recbole.trainer import Trainer

from mmrecbole.compat import TrainerHooksMixin


class MMTrainer(TrainerHooksMixin, Trainer):
    pass
