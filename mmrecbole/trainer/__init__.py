"""Training and evaluation: where a model is fitted, checkpointed and scored.

`trainer_class(model_type, model_name)` picks a model's trainer from its declared contract
(mmrecbole.contract: `trainer_name`), else RecBole's choice for the model type; every one carries
`TrainingMixin` (safe checkpoints, best-epoch tracking, per-user metrics, epoch hooks, named losses).
"""
from __future__ import annotations

from mmrecbole import compat
from mmrecbole.errors import ConfigError
from mmrecbole.trainer.base import MMTrainer, TrainingMixin, with_training
from mmrecbole.trainer.fit_once import FitOnceTrainer

#: Trainers a model class may name in its `trainer_name` (mmrecbole.contract).
TRAINERS = {"MMTrainer": MMTrainer, "FitOnceTrainer": FitOnceTrainer}


def trainer_class(model_type, model_name: str) -> type:
    """The trainer for a model: the one its class declares (`trainer_name`), else RecBole's choice for its name and
    type; always with TrainingMixin."""
    from mmrecbole import registry
    from mmrecbole import contract

    declared = contract.capabilities(registry.get_model(model_name)).trainer_name
    if declared is not None:
        if declared not in TRAINERS:
            raise ConfigError(f"model {model_name} asks for trainer '{declared}', which mmrecbole.trainer lacks "
                              f"(known: {sorted(TRAINERS)})")
        return TRAINERS[declared]
    return with_training(compat.recbole_trainer_class(model_type, model_name))


def make_trainer(config, model):
    """The trainer of `config`'s model, built for `model`."""
    return trainer_class(config["MODEL_TYPE"], config["model"])(config, model)


__all__ = ["FitOnceTrainer", "MMTrainer", "TRAINERS", "TrainingMixin", "make_trainer", "trainer_class",
           "with_training"]
