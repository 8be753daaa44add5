"""Search spaces: `properties/search/<Model>.yaml`, one key per setting of the model.

Each value is a range `{low, high}` (ints if both are ints; `log: true` samples on a log scale; `step` for a grid) or
`{choices: [...]}`. A space is refused, naming the file and key, when a key is not a setting of the model, a bound
breaks the setting's allowed range (config.NUMERIC_RANGES, dropouts in [0, 1)), or the model's default value lies
outside the space: a tuned row must be able to find its untuned setting again, or tuned vs untuned says nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mmrecbole import PROPERTIES_DIR
from mmrecbole.errors import ConfigError

SEARCH_DIR = os.path.join(PROPERTIES_DIR, "search")
_SPEC_KEYS = frozenset({"low", "high", "log", "step", "choices"})
#: Settings that act on item content only: a study of a row without modalities (ID-only MMSASRec) leaves them out.
CONTENT_ONLY_KEYS = frozenset({"adapter_dropout", "modality_dropout"})


@dataclass(frozen=True)
class SearchParam:
    """One dimension: kind 'float' | 'int' | 'categorical'."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Tuple[Any, ...] = ()

    def contains(self, value) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(path: str, model: str, name: str, spec) -> SearchParam:
    from mmrecbole.config import accepts, range_violation

    where = f"{path}: {name}"
    if not accepts(model, name):
        raise ConfigError(f"{where} is not a setting of {model}; a search space lists settings of its model only")
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where} must be a mapping {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; use {sorted(_SPEC_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list and stand alone, got {spec!r}")
        for choice in choices:
            broken = range_violation(name, choice)
            if broken:
                raise ConfigError(f"{where}: choice {choice!r} {broken}")
        return SearchParam(name, "categorical", choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    if not (_number(low) and _number(high)) or low >= high:
        raise ConfigError(f"{where}: needs numbers low < high, got low={low!r}, high={high!r}")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low!r}")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise ConfigError(f"{where}: step must be a number > 0 and cannot go with log: true, got {step!r}")
    for bound in (low, high):
        broken = range_violation(name, bound)
        if broken:
            raise ConfigError(f"{where}: bound {bound!r} {broken}")
    kind = "int" if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)) \
        else "float"
    return SearchParam(name, kind, low=low, high=high, log=log, step=step)


def space_path(model: str) -> str:
    """Where `model`'s own search space lives: properties/search/<model>.yaml (it may not exist)."""
    return os.path.join(SEARCH_DIR, f"{model}.yaml")


def models_with_search_space() -> list:
    if not os.path.isdir(SEARCH_DIR):
        return []
    return sorted(name[: -len(".yaml")] for name in os.listdir(SEARCH_DIR) if name.endswith(".yaml"))


def load_search_space(model: str, path: Optional[str] = None) -> Dict[str, SearchParam]:
    """{setting: SearchParam} of `model` from `path` (default properties/search/<model>.yaml), checked."""
    from mmrecbole.config import Config, read_yaml_file

    path = path or space_path(model)
    if not os.path.isfile(path):
        raise ConfigError(f"no search space for {model}: {path} not found (models with one: "
                          f"{', '.join(models_with_search_space()) or 'none'})")
    raw = read_yaml_file(path)
    if not raw:
        raise ConfigError(f"{path} declares no setting to search")
    space = {name: _param(path, model, name, spec) for name, spec in raw.items()}
    defaults = Config(model, "ml-100k", config_dict={"state": "ERROR"})  # the model's own defaults, no dataset read
    for name, param in space.items():
        if not param.contains(defaults[name]):
            raise ConfigError(f"{path}: {name}'s default {defaults[name]!r} lies outside its search space; widen it "
                              "(a tuned row must be able to find its untuned setting again)")
    return space


def searched_for(space: Dict[str, SearchParam], config) -> Dict[str, SearchParam]:
    """The part of `space` a study of `config` searches: a row without modalities (ID-only) drops the content-only
    settings, which would change nothing."""
    if "modalities" in config.final_config_dict and not config["modalities"]:
        return {k: v for k, v in space.items() if k not in CONTENT_ONLY_KEYS}
    return space


def suggest(trial, space: Dict[str, SearchParam]) -> Dict[str, Any]:
    """One setting per dimension, drawn through an Optuna trial (or anything with its suggest_* methods)."""
    chosen = {}
    for name, param in space.items():
        if param.kind == "categorical":
            chosen[name] = trial.suggest_categorical(name, list(param.choices))
        elif param.kind == "int":
            chosen[name] = trial.suggest_int(name, int(param.low), int(param.high), step=int(param.step or 1),
                                             log=param.log)
        else:
            chosen[name] = trial.suggest_float(name, float(param.low), float(param.high), step=param.step,
                                               log=param.log)
    return chosen
