"""Hyper-parameter tuning (issue 18): search spaces declared per model in `properties/search/<Model>.yaml`.

`load_search_space(model)` reads and checks a model's space; `suggest(trial, space)` draws one setting from it
through Optuna's trial API (`suggest_float` / `suggest_int` / `suggest_categorical`); `tune(model, dataset, trials)`
runs a validation-only, pruned, resumable Optuna study (mmrecbole.tuning.study).
"""
from mmrecbole.tuning.space import SearchParam, load_search_space, models_with_search_space, suggest
from mmrecbole.tuning.study import TuneResult, tune, write_best

__all__ = ["SearchParam", "TuneResult", "load_search_space", "models_with_search_space", "suggest", "tune",
           "write_best"]
