"""Hyper-parameter tuning (issue 18): search spaces declared per model in `properties/search/<Model>.yaml`.

`load_search_space(model)` reads and checks a model's space; `suggest(trial, space)` draws one setting from it
through Optuna's trial API (`suggest_float` / `suggest_int` / `suggest_categorical`).
"""
from mmrecbole.tuning.space import SearchParam, load_search_space, models_with_search_space, suggest

__all__ = ["SearchParam", "load_search_space", "models_with_search_space", "suggest"]
