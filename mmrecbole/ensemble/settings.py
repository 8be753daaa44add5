"""The stacker's settings: its own keys (properties/model/LGBMStacker.yaml), the settings its base models share, each
base model's resolved Config, and one hash over all of them.

A run's settings arrive as for any model (config files, a config_dict, command-line flags). A key of
LGBMStacker.yaml is the stacker's; any other key must be one a model Config knows (seed, data_path, epochs,
metrics...) and is passed to every base model, so base models and the stacker share one protocol. Anything else is
refused with the key, where it came from and the closest known key, as our Config does.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

from mmrecbole import PROPERTIES_DIR, registry
from mmrecbole import contract
from mmrecbole.trainer.evaluation import metrics_needing_more_than_ranked_lists
from mmrecbole.config import (Config, accepts, closest, describe_source, key_owners, known_keys, read_layers,
                              read_yaml_file, settings_for, type_mismatch)
from mmrecbole.errors import ConfigError
from mmrecbole.runs import PROTOCOL_KEYS, config_hash

STACKER_NAME = "LGBMStacker"
PROPERTY_FILE = os.path.join(PROPERTIES_DIR, "model", f"{STACKER_NAME}.yaml")
#: The model whose Config carries the shared protocol for the stacker's own data and metrics: a general model
#: without keys of its own, so RecBole builds the plain Dataset split every general leaderboard row uses (the
#: stacker reads training histories, item popularity, timestamps and validation/test targets from it).
PROTOCOL_MODEL = "Pop"
#: lightgbm.LGBMRanker arguments the stacker sets itself.
_FIXED_LGBM = {"objective": "lambdarank (the stacker is a LambdaRank model)",
               "random_state": "the run's seed (set `seed`)", "seed": "the run's seed (set `seed`)"}
_ENTRY_KEYS = {"name", "label", "settings"}
BACKENDS = ["local", "dask"]
#: Keys that say where the fit runs: left out of the config hash on the local backend (they change nothing there).
BACKEND_KEYS = ("stacker_backend", "dask_scheduler", "dask_workers")
#: tree_learner values DaskLGBMRanker accepts (lightgbm.dask replaces any other with "data", with a warning).
_DASK_TREE_LEARNERS = ["data", "data_parallel", "feature", "feature_parallel", "voting", "voting_parallel"]
#: A scheduler address as Dask writes them: [protocol://]host[:port], host a name, an IPv4 or a [bracketed] IPv6.
_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(?::\d+)?$")


@dataclass
class BaseModelSpec:
    """One base model: its name, unique label, own settings and the Config it is trained with."""

    name: str
    label: str
    settings: dict
    config: Config
    config_hash: str

    @property
    def run_settings(self) -> dict:
        """The config_dict quick_start.run trains this base model with (shared settings + its own)."""
        return dict(self.config.external_config_dict)

    @property
    def feature_prefix(self) -> str:
        return feature_prefix(self.label)


def feature_prefix(label: str) -> str:
    """A label as the start of LightGBM feature names (LightGBM refuses JSON special characters in them)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_") or "model"


@dataclass
class StackerSettings:
    dataset: str
    values: dict                 # the stacker's own keys, defaults filled in
    shared: dict                 # keys passed to every base model
    protocol: Config             # PROTOCOL_MODEL's Config with the shared settings: split, metrics, seed, paths
    base_models: list = field(default_factory=list)

    def __getitem__(self, key):
        return self.values[key]

    @property
    def seed(self) -> int:
        return int(self.protocol["seed"])

    @property
    def max_topk(self) -> int:
        return max(self.protocol["topk"])

    @property
    def config_hash(self) -> str:
        """Everything that changes the stacker's result except the seed (as mmrecbole.runs.config_hash)."""
        values = self.values if self.values["stacker_backend"] != "local" else {
            k: v for k, v in self.values.items() if k not in BACKEND_KEYS}
        plain = {"stacker": values, "protocol": config_hash(self.protocol),
                 "base_models": [[b.label, b.name, b.config_hash] for b in self.base_models]}
        return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def available_modalities(self) -> list:
        """The content_modalities that have a feature table: named in mm_feature_files or stored under
        <data_path>/<dataset>/features/. Others are skipped (the stacker never builds feature tables itself)."""
        from mmrecbole.features import feature_path

        files = self.protocol["mm_feature_files"] or {}
        return [m for m in self.values["content_modalities"]
                if m in files or os.path.isfile(feature_path(self.dataset, m, self.protocol["data_path"]))]

    @property
    def uses_content(self) -> bool:
        reads = [contract.reads_item_content(b.config)
                 for b in self.base_models]
        return any(reads) or bool(self.available_modalities())


def stacker_defaults() -> dict:
    return read_yaml_file(PROPERTY_FILE)


def _check_type(key, value, default, where):
    expected = type_mismatch(value, default)
    if expected:
        raise ConfigError(f"{STACKER_NAME} setting '{key}' in {where} must be {expected}, got {value!r}")


def _split_layers(dataset, layers, defaults):
    """(stacker values, shared settings, shared raw texts, sources) from the layers, strict about keys."""
    values, shared, sources = copy.deepcopy(defaults), {}, {}
    everything = known_keys() | set(defaults)
    for source, layer in layers:
        for key, value in layer.items():
            where = describe_source(source, key)
            if key in defaults:
                _check_type(key, value, defaults[key], where)
                values[key] = value
                sources[key] = where
            elif key == "dataset":
                if value != dataset:
                    raise ConfigError(f"dataset '{value}' in {where} differs from the run's dataset '{dataset}'")
            elif key == "model":
                if value != STACKER_NAME:
                    raise ConfigError(f"model '{value}' in {where}: this run is {STACKER_NAME}; base models go "
                                      "under base_models")
            elif key in known_keys():
                shared[key] = value
                sources[key] = where
            else:
                hint = closest(key, everything)
                raise ConfigError(f"unknown config key '{key}' in {where}"
                                  + (f"; did you mean '{hint}'?" if hint else "")
                                  + f" ({STACKER_NAME} keys come from {os.path.relpath(PROPERTY_FILE)}, other keys "
                                    "from RecBole's and properties/ YAML files)")
    return values, shared, sources


def _check_lgbm_params(params, where):
    from lightgbm.basic import _ConfigAliases
    from lightgbm import LGBMRanker

    # Every LightGBM parameter and alias (LightGBM's own table, read from its library), plus the scikit-learn names.
    names = set(LGBMRanker().get_params())
    for name, aliases in _ConfigAliases._get_all_param_aliases().items():
        names.add(name)
        names.update(aliases)
    for key in params:
        if key in _FIXED_LGBM:
            raise ConfigError(f"lgbm_params.{key} in {where} is fixed to {_FIXED_LGBM[key]}; remove it")
        if key not in names:
            hint = closest(str(key), names)
            raise ConfigError(f"unknown LightGBM parameter lgbm_params.{key} in {where}"
                              + (f"; did you mean '{hint}'?" if hint else ""))


def _check_backend(values, where):
    backend = values["stacker_backend"]
    if backend not in BACKENDS:
        raise ConfigError(f"stacker_backend ({where('stacker_backend')}) must be one of {BACKENDS}, got {backend!r}")
    scheduler = values["dask_scheduler"]  # None (YAML's empty value, `--dask_scheduler=`) means "" too
    if scheduler is not None and (not isinstance(scheduler, str) or (scheduler and not _ADDRESS.match(scheduler))):
        raise ConfigError(f"dask_scheduler ({where('dask_scheduler')}) must be \"\" (start a LocalCluster) or a Dask "
                          f"scheduler address such as tcp://host:8786, got {scheduler!r}")
    workers = values["dask_workers"]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"dask_workers ({where('dask_workers')}) must be an integer >= 1, got {workers!r}")
    if backend != "dask":
        return
    import importlib.util

    missing = [name for name in ("dask", "distributed") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"stacker_backend dask ({where('stacker_backend')}) needs the packages {missing}; install "
                          "them (requirements.txt pins them) or use stacker_backend local")
    from lightgbm.basic import _ConfigAliases

    params = values["lgbm_params"]
    stopping = sorted(set(params) & _ConfigAliases.get("early_stopping_round"))
    if stopping:
        raise ConfigError(f"lgbm_params.{stopping[0]} in {where('lgbm_params')} is not supported with stacker_backend "
                          "dask (DaskLGBMRanker does not early-stop); remove it: early_stopping_rounds applies, "
                          "replayed after the fit")
    for key in sorted(set(params) & _ConfigAliases.get("tree_learner")):
        if params[key] not in _DASK_TREE_LEARNERS:
            raise ConfigError(f"lgbm_params.{key} in {where('lgbm_params')} must be one of {_DASK_TREE_LEARNERS} "
                              f"with stacker_backend dask, got {params[key]!r}")


def _check_values(values, sources, max_topk):
    def where(key):
        return sources.get(key, os.path.relpath(PROPERTY_FILE))

    n = values["candidates_per_model"]
    if n < max_topk:
        raise ConfigError(f"candidates_per_model ({where('candidates_per_model')}) must be >= max(topk) = "
                          f"{max_topk}, got {n}: the stacker ranks only candidates")
    if values["content_recent_items"] < 1:
        raise ConfigError(f"content_recent_items ({where('content_recent_items')}) must be >= 1, got "
                          f"{values['content_recent_items']}")
    fraction = values["valid_user_fraction"]
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"valid_user_fraction ({where('valid_user_fraction')}) must be in (0, 1), got {fraction}")
    if values["early_stopping_rounds"] < 1:
        raise ConfigError(f"early_stopping_rounds ({where('early_stopping_rounds')}) must be >= 1, got "
                          f"{values['early_stopping_rounds']}")
    windows = values["popularity_windows"]
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 < w <= 1.0 for w in windows):
        raise ConfigError(f"popularity_windows ({where('popularity_windows')}) must be numbers in (0, 1], got "
                          f"{windows!r}")
    from mmrecbole.features import MODALITIES

    unknown = [m for m in values["content_modalities"] if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"content_modalities ({where('content_modalities')}) must be drawn from "
                          f"{list(MODALITIES)}, got {unknown}")
    _check_lgbm_params(values["lgbm_params"], where("lgbm_params"))
    _check_backend(values, where)


def _base_entries(entries, where):
    if not entries:
        raise ConfigError(f"base_models ({where}) lists no models")
    parsed = []
    for index, item in enumerate(entries):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"base_models[{index}] ({where}) must be a model name or a mapping with 'name', "
                              f"got {item!r}")
        unknown = set(item) - _ENTRY_KEYS
        if unknown:
            raise ConfigError(f"base_models[{index}] ({where}) has unknown keys {sorted(unknown)} (name, label, "
                              "settings)")
        name, settings = str(item["name"]), item.get("settings") or {}
        if name in registry.PIPELINES:
            raise ConfigError(f"base_models[{index}] ({where}) is the pipeline {name}; base models must be models")
        if not isinstance(settings, dict):
            raise ConfigError(f"base_models[{index}].settings ({where}) must be a mapping, got {settings!r}")
        fixed = sorted(set(settings) & (set(PROTOCOL_KEYS) | {"seed"}))
        if fixed:
            raise ConfigError(f"base_models[{index}] ({name}, {where}) sets {fixed}: base models share the "
                              "stacker's seed and protocol (split, candidates, metrics); set them for the whole run")
        parsed.append((name, str(item.get("label") or name), dict(settings)))
    labels = [label for _, label, _ in parsed]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"base_models ({where}): labels must be unique, repeated: {repeated} (give each variant "
                          "a label)")
    prefixes = [feature_prefix(label) for label in labels]
    clashing = sorted({label for label, prefix in zip(labels, prefixes) if prefixes.count(prefix) > 1})
    if clashing:
        raise ConfigError(f"base_models ({where}): labels {clashing} give the same feature names once reduced to "
                          "letters, digits and '_'; make them differ in those")
    return parsed


def _base_config(name, label, dataset, shared, settings, cmd_text):
    """The Config of one base model (or the protocol): the shared settings it accepts, then its own."""
    shared = settings_for(name, shared)
    try:
        return Config(name, dataset, config_dict={**shared, **settings},
                      cmd_text={k: v for k, v in cmd_text.items() if k not in settings})
    except ConfigError as exc:
        raise ConfigError(f"base model {label}: {exc}") from None


def resolve(dataset, config_file_list=None, config_dict=None, cmd_dict=None, cmd_text=None) -> StackerSettings:
    """Check and resolve a stacker run's settings (no training, no data loading beyond what Config does)."""
    defaults = stacker_defaults()
    values, shared, sources = _split_layers(dataset, read_layers(config_file_list, config_dict, cmd_dict), defaults)
    shared_text = {k: v for k, v in (cmd_text or {}).items() if k in shared}
    protocol = _base_config(PROTOCOL_MODEL, "(protocol)", dataset, shared, {}, shared_text)
    unsupported = metrics_needing_more_than_ranked_lists(protocol["metrics"])
    if unsupported:
        raise ConfigError(f"{STACKER_NAME} ranks candidate lists; metrics {unsupported} need per-item scores or "
                          "labels that a ranked list does not have (use top-k and beyond-accuracy metrics)")
    modes = protocol["eval_args"]["mode"]  # RecBole resolves it to {valid: ..., test: ...}
    if any(mode != "full" for mode in (modes.values() if isinstance(modes, dict) else [modes])):
        raise ConfigError(f"{STACKER_NAME} needs full-ranking evaluation (eval_args mode: full), got {modes!r}")
    if float(protocol["cold_start_item_ratio"] or 0.0) > 0.0:
        raise ConfigError(f"{STACKER_NAME} does not support cold_start_item_ratio > 0 (its validation targets "
                          "never hold cold items, so it cannot learn to rank them)")
    _check_values(values, sources, max(protocol["topk"]))
    settings = StackerSettings(dataset, values, shared, protocol)
    for name, label, own in _base_entries(values["base_models"], sources.get("base_models", "defaults")):
        config = _base_config(name, label, dataset, shared, own, shared_text)
        settings.base_models.append(BaseModelSpec(name, label, own, config, config_hash(config)))
    used_by = [PROTOCOL_MODEL] + [b.name for b in settings.base_models]
    for key in shared:
        if not any(accepts(name, key) for name in used_by):
            raise ConfigError(f"config key '{key}' ({sources.get(key, 'settings')}) is a setting of "
                              f"{', '.join(key_owners(key)[:6])}, not of any of {STACKER_NAME}'s base models "
                              f"({', '.join(b.label for b in settings.base_models)}); remove it or set it in that "
                              "base model's settings")
    return settings
