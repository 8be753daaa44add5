"""Ensembles over trained recommenders. `LGBMStacker` (stacker.py) is a LightGBM LambdaRank model with its own
fit / predict / save / load contract; `pipeline.run` is the end-to-end `--model=LGBMStacker` run (base models,
candidates, features, fit on validation, test once)."""
from mmrecbole.ensemble.stacker import LGBMStacker

__all__ = ["LGBMStacker"]
