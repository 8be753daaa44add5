"""mmrecbole models (external); the registry finds the classes exported here.

`implicit`'s recommenders fitted once on RecBole's training split and scored by RecBole's evaluator
(implicit_models.py; trainer: mmrecbole.trainer.FitOnceTrainer)."""
from mmrecbole.model.external.implicit_models import ImplicitALS, ImplicitBPR, ImplicitItemKNN, ImplicitLMF

__all__ = ["ImplicitALS", "ImplicitBPR", "ImplicitItemKNN", "ImplicitLMF"]
