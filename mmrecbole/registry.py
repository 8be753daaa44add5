"""Find models and pipelines by name: mmrecbole's first, RecBole's as the fallback.

RecBole's `get_model` only searches RecBole's own packages (RecBole issues #489, #1544). As in
RecBole-GNN, we search ours first, so `--model=BPR` (RecBole) and `--model=MMSASRec` (ours) both work, and a model
of ours with the same name as one of RecBole's takes precedence.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from functools import lru_cache

from mmrecbole import compat
from mmrecbole.errors import ConfigError

#: Packages holding our models; each exports its model classes at package level.
OUR_MODEL_PACKAGES = (
    "mmrecbole.model.general_recommender",
    "mmrecbole.model.sequential_recommender",
    "mmrecbole.model.external",
)

#: Pipelines: recommenders that are not one nn.Module trained by a RecBole trainer (e.g. a stacker fitted on other
#: models' scores). name -> module, imported on first use, that implements
#:   run(dataset, config_file_list=None, config_dict=None, cmd_dict=None, saved=True, show_progress=None,
#:       log_dir="log", console_log=True, cmd_text=None) -> the result dict of `quick_start.run`;
#:   plan(dataset, config_dict) -> PipelinePlan: validates the settings (ConfigError naming the key) and hashes them,
#:       for leaderboard caching, without training anything.
#: `quick_start.run` and the leaderboard check this table before building a Config, so a pipeline's settings never
#: pass through (or widen) the model Config's keys.
PIPELINES = {
    "LGBMStacker": "mmrecbole.ensemble.pipeline",
}


@dataclass(frozen=True)
class PipelinePlan:
    """What a leaderboard needs before running a pipeline: a hash of everything that changes its result, and
    whether it reads item content (text/image features)."""

    config_hash: str
    uses_content: bool


def pipeline_names() -> tuple:
    return tuple(sorted(PIPELINES))


def get_pipeline(name):
    """The pipeline module registered under `name`, or None when `name` is not a pipeline."""
    module = PIPELINES.get(name) if isinstance(name, str) else None
    return importlib.import_module(module) if module else None


def our_models() -> dict:
    """{name: class} of the recommender classes our model packages export."""
    from recbole.model.abstract_recommender import AbstractRecommender

    models = {}
    for package_name in OUR_MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        for name, obj in vars(package).items():
            if inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and obj.__module__.startswith("mmrecbole."):
                models[name] = obj
    return models


@lru_cache(maxsize=None)
def _our_model_names() -> tuple:
    return tuple(sorted(our_models()))


def available_models() -> dict:
    """{'mmrecbole': [names], 'recbole': [names]} (RecBole's without the ones we shadow); ours include the
    pipelines."""
    ours = sorted(set(_our_model_names()) | set(PIPELINES))
    theirs = sorted(n for n in compat.recbole_model_names() if n not in ours)
    return {"mmrecbole": ours, "recbole": theirs}


def get_model(name: str) -> type:
    ours = our_models()
    if name in ours:
        return ours[name]
    if name in compat.recbole_model_names():
        return compat.import_recbole_model(name)
    if name in PIPELINES:
        raise ConfigError(f"{name} is a pipeline over other models, not a model class: run it with "
                          f"--model={name} or mmrecbole.quick_start.run('{name}', ...)")
    names = set(ours) | set(compat.recbole_model_names()) | set(PIPELINES)
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        hint = [lowered[name.lower()]]
    else:
        import difflib

        hint = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    raise ConfigError(
        f"unknown model '{name}'"
        + (f"; did you mean {', '.join(hint)}?" if hint else "")
        + " (run_recbole_mm.py --help lists all models)"
    )
