"""Configuration: RecBole's defaults, then ours, then the user's; strict about keys, never `eval()`.

Layering, lowest priority first:
  1. RecBole's property files (overall, model/<Model>.yaml, dataset/sample.yaml, its quick-start files);
  2. this repo's `properties/overall.yaml`, `properties/model/<Model>.yaml`, `properties/dataset/<dataset>.yaml`,
     then `dataset/<dataset>/<dataset>.yaml` under the project root when it exists (the property file that
     `python -m mmrecbole.data import` writes beside the atomic files);
  3. `--config_files` in the order given, then a `config_dict` from code, then `--key=value` flags.

A key that no RecBole or mmrecbole property file defines is an error naming the key, where it came from and the
closest known key. Reading an unknown key from code raises too (RecBole answers None).
"""
from __future__ import annotations

import copy
import difflib
import os
from functools import lru_cache

from mmrecbole import PROJECT_ROOT, PROPERTIES_DIR, compat
from mmrecbole.errors import ConfigError

_PROPERTY_SUBDIRS = ("model", "dataset")  # properties/leaderboard/ holds leaderboard files, not config keys


def read_yaml_file(path: str) -> dict:
    """A YAML mapping from `path`, parsed safely; ConfigError if missing, malformed or not a mapping."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = compat.load_yaml(text)
    except Exception as exc:  # yaml.YAMLError and its subclasses carry the line/column
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid YAML: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, not a {type(data).__name__}")
    return data


def parse_value(text: str):
    """A command-line value as a YAML scalar, list or mapping (`1e-3` -> float, `[10,20]` -> list, `a` -> 'a')."""
    try:
        return compat.load_yaml(text)
    except Exception:
        return text  # not YAML (e.g. unbalanced brackets): keep the string; type checks below catch misuse


def dataset_property_files(dataset: str) -> list[str]:
    """A dataset's own property files that exist: `properties/dataset/<dataset>.yaml`, then the one that
    `python -m mmrecbole.data import` writes beside the atomic files (fields, load_col, text_template, image_dir)."""
    files = [os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
             os.path.join(PROJECT_ROOT, "dataset", dataset, f"{dataset}.yaml")]
    return [f for f in files if os.path.isfile(f)]


def our_property_files(model: str, dataset: str) -> list[str]:
    files = [os.path.join(PROPERTIES_DIR, "overall.yaml"), os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")]
    return [f for f in files if os.path.isfile(f)] + dataset_property_files(dataset)


@lru_cache(maxsize=None)
def our_known_keys() -> frozenset:
    """Keys of properties/overall.yaml, model/*.yaml and dataset/*.yaml, except the property files of pipelines
    (registry.PIPELINES, e.g. model/LGBMStacker.yaml): a pipeline reads and checks its own settings, and its keys
    mean nothing to a model's Config."""
    from mmrecbole.registry import PIPELINES

    keys = set(read_yaml_file(os.path.join(PROPERTIES_DIR, "overall.yaml")))
    for sub in _PROPERTY_SUBDIRS:
        folder = os.path.join(PROPERTIES_DIR, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".yaml") and not (sub == "model" and name[: -len(".yaml")] in PIPELINES):
                keys.update(read_yaml_file(os.path.join(folder, name)))
    return frozenset(keys)


def known_keys() -> frozenset:
    return compat.recbole_known_keys() | our_known_keys()


@lru_cache(maxsize=None)
def our_model_keys() -> dict:
    """{model: keys of properties/model/<model>.yaml} (pipelines excluded, as in our_known_keys)."""
    from mmrecbole.registry import PIPELINES

    folder = os.path.join(PROPERTIES_DIR, "model")
    return {name[: -len(".yaml")]: frozenset(read_yaml_file(os.path.join(folder, name)))
            for name in sorted(os.listdir(folder)) if name.endswith(".yaml") and name[: -len(".yaml")] not in PIPELINES}


@lru_cache(maxsize=None)
def general_keys() -> frozenset:
    """Keys every model accepts: RecBole's and our overall / dataset settings; the rest belong to models."""
    ours = set(read_yaml_file(os.path.join(PROPERTIES_DIR, "overall.yaml")))
    folder = os.path.join(PROPERTIES_DIR, "dataset")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".yaml"):
            ours.update(read_yaml_file(os.path.join(folder, name)))
    return frozenset(compat.recbole_general_keys() | ours)


def accepts(model: str, key: str) -> bool:
    """Whether `key` is a setting of `model`: a general key, or one of the model's property files (ours or
    RecBole's)."""
    return (key in general_keys() or key in our_model_keys().get(model, ())
            or key in compat.recbole_model_keys().get(model, ()))


def key_owners(key: str) -> list:
    """The models whose property files define `key` (for an error that names them): ours first, then RecBole's."""
    ours = sorted(m for m, keys in our_model_keys().items() if key in keys)
    theirs = sorted(m for m, keys in compat.recbole_model_keys().items() if key in keys and m not in ours)
    return ours + theirs


def settings_for(model: str, settings: dict) -> dict:
    """The part of shared `settings` (a leaderboard's board-wide settings, a stacker run's shared settings) that
    `model` accepts: a setting meant for other rows is not an error for this one."""
    return {k: v for k, v in settings.items() if accepts(model, k)}


def read_layers(config_file_list=None, config_dict=None, cmd_dict=None) -> list:
    """[(source, {key: value})], lowest priority first: config files in order, a config_dict, command-line flags.
    The one layering every configuration of mmrecbole uses (models, the stacker, the feature CLI)."""
    layers = [(path, read_yaml_file(path)) for path in (config_file_list or [])]
    if config_dict:
        layers.append(("config_dict", dict(config_dict)))
    if cmd_dict:
        layers.append(("command line", dict(cmd_dict)))
    return layers


def type_mismatch(value, default):
    """What `value` should be for a key whose default is `default` ('an integer', ...), or None when it fits.
    None defaults and values fit anything."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, list):
        return None if isinstance(value, list) else "a list"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a mapping"
    return None


# Second-level keys RecBole fills in itself and otherwise ignores silently when misspelt.
_NESTED_KEYS = {
    "eval_args": {"split", "group_by", "order", "mode"},
    "train_neg_sample_args": {"distribution", "sample_num", "alpha", "dynamic", "candidate_num"},
}


#: Numeric settings and their allowed range (low, low included, high, high included; None = unbounded). RecBole takes
#: any number for these and then fails deep in torch (a negative learning rate), trains nothing without a word
#: (epochs 0) or builds empty tensors (embedding_size 0). Any key with "dropout" in its name is a probability in [0, 1).
_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = (0, False, None, False), (0, True, None, False), (1, True, None, False)
_PROBABILITY = (0, True, 1, False)
NUMERIC_RANGES = {
    "learning_rate": _POSITIVE,
    "weight_decay": _NON_NEGATIVE,
    "n_layers": _NON_NEGATIVE,  # LightGCN with 0 layers is matrix factorisation, a known ablation
    "window_context": _NON_NEGATIVE,
    "cold_start_item_ratio": _PROBABILITY,
    "edge_prune_ratio": _PROBABILITY,
    **{key: _AT_LEAST_ONE for key in ("epochs", "train_batch_size", "eval_batch_size", "eval_sequence_rows",
                                      "embedding_size", "hidden_size", "inner_size", "n_heads", "num_layers",
                                      "adapter_experts", "stopping_step", "eval_step",
                                      "MAX_ITEM_LIST_LENGTH")},
}


def range_violation(key: str, value):
    """'must be > 0' (the bound the value breaks) for a numeric setting out of its range, else None."""
    bounds = NUMERIC_RANGES.get(key) or (_PROBABILITY if "dropout" in key else None)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, low_in, high, high_in = bounds
    if low is not None and (value < low or (value == low and not low_in)):
        return f"must be {'>=' if low_in else '>'} {low}"
    if high is not None and (value > high or (value == high and not high_in)):
        return f"must be {'<=' if high_in else '<'} {high}"
    return None


def closest(name: str, candidates) -> str | None:
    """The candidate most like `name` (case-insensitive), or None when nothing is close (for "did you mean")."""
    lowered = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def describe_source(source: str, key: str) -> str:
    """Where a setting came from, as an error message says it."""
    if source == "command line":
        return f"command-line flag --{key}"
    if source == "config_dict":
        return "config_dict"
    return f"config file {source}"


class Config(compat.RecBoleConfigAdapter):
    """RecBole's Config with our property files layered in, strict keys and typed values.

    Args:
        model: model name (ours or RecBole's) or class.
        dataset: dataset name (a folder under `data_path`).
        config_file_list: YAML files, later ones win.
        config_dict: settings from code (e.g. a leaderboard's per-model overrides).
        cmd_dict: settings from command-line flags, already parsed with `parse_value`; highest priority.
        cmd_text: the same flags' raw text: a key whose default is a string keeps the text as typed
            (`--text_template={movie_title}` is a template, not a YAML mapping).
        rank: (local rank, mmrecbole.distributed.Launch) inside one process of a DDP run: the config joins
            the launch's process group and is this rank's (device, `single_spec` False...).
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_dict=None,
                 cmd_text=None, rank=None):
        self._rank = rank
        self._cmd_text = dict(cmd_text or {})
        layers = read_layers(config_file_list, config_dict, cmd_dict)
        self._layers = layers
        self._model_name = model if isinstance(model, str) else getattr(model, "__name__", None)
        self._sources = {}
        for source, values in layers:
            for key in values:
                self._sources[key] = source
        self._check_keys()
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except (ValueError, TypeError, NotImplementedError, RuntimeError, AssertionError) as exc:
            # RecBole validates metrics, eval_args, topk, neg-sampling args... with these exception types.
            raise ConfigError(f"invalid configuration: {' '.join(str(exc).split())}") from exc

    # -- hooks called by RecBoleConfigAdapter -------------------------------------------------------------------
    def external_layers(self):
        return self._layers

    def model_class_for(self, name):
        from mmrecbole.registry import get_model

        return get_model(name)

    def extra_property_files(self, model, dataset):
        return our_property_files(model, dataset)

    def finalize(self, final):
        for key, text in self._cmd_text.items():
            if isinstance(self.internal_config_dict.get(key), str) and not isinstance(final.get(key), (str, type(None))):
                final[key] = self.external_config_dict[key] = text
        self._check_types(final)
        self._check_ranges()
        self.warnings = self._device_warnings()
        if "data_path" not in self.external_config_dict and not os.path.isabs(final["data_path"]):
            # Our default data_path (properties/overall.yaml) means the project's dataset/ folder, wherever the
            # command runs from; a user's relative path means relative to the working directory, as in RecBole.
            final["data_path"] = os.path.join(PROJECT_ROOT, final["data_path"])
        self._check_valid_metric(final)
        for key in ("save_dataset", "save_dataloaders"):
            if final.get(key):
                raise ConfigError(
                    f"{key}: True is not supported: mmrecbole never pickles datasets or dataloaders "
                    f"(set by {self.source_of(key)}); remove it"
                )
        # The plain settings behind this config, before RecBole derives its own keys: enough to rebuild it.
        self.resolved = {k: copy.deepcopy(v) for k, v in final.items() if k not in compat.RECBOLE_DERIVED_KEYS}

    def _init_device(self):
        if self._rank is None:
            return super()._init_device()
        from mmrecbole.distributed import init_rank  # RecBole's own joins NCCL only, GPUs only

        init_rank(self.final_config_dict, *self._rank)

    # -- strictness ---------------------------------------------------------------------------------------------
    def _check_keys(self):
        known = known_keys()
        for source, values in self._layers:
            for key, value in values.items():
                if key in compat.RECBOLE_DERIVED_KEYS:
                    raise ConfigError(
                        f"config key '{key}' in {describe_source(source, key)} is derived by RecBole from the model; "
                        "remove it"
                    )
                if key not in known:
                    hint = closest(key, known)
                    raise ConfigError(
                        f"unknown config key '{key}' in {describe_source(source, key)}"
                        + (f"; did you mean '{hint}'?" if hint else "")
                        + " (keys come from RecBole's and properties/ YAML files)"
                    )
                self._check_owner(source, key)
                allowed = _NESTED_KEYS.get(key)
                if allowed and isinstance(value, dict):
                    for sub in value:
                        if sub not in allowed:
                            hint = closest(str(sub), allowed)
                            raise ConfigError(
                                f"unknown key '{sub}' inside '{key}' in {describe_source(source, key)}"
                                + (f"; did you mean '{hint}'?" if hint else f"; expected one of {sorted(allowed)}")
                            )

    def _check_owner(self, source, key):
        model = self._model_name
        if model is None:
            for _, values in self._layers:
                model = values.get("model", model)
        if not isinstance(model, str) or accepts(model, key):
            return
        owners = key_owners(key)
        raise ConfigError(
            f"config key '{key}' in {describe_source(source, key)} is a setting of {', '.join(owners[:6])}"
            + (f" and {len(owners) - 6} more" if len(owners) > 6 else "")
            + f", not of {model}; remove it (or run one of those models)"
        )

    def _check_types(self, final):
        for key, value in self.external_config_dict.items():
            default = self.internal_config_dict.get(key)
            expected = type_mismatch(value, default)
            if expected in ("a list", "a mapping"):
                expected = None  # RecBole accepts a scalar for several list keys (metrics: Recall, topk: 10)
            if expected:
                raise ConfigError(
                    f"config key '{key}' in {describe_source(self.source_of(key), key)} must be {expected} "
                    f"(default {default!r}), got {value!r}"
                )

    def _device_warnings(self) -> list:
        """A GPU asked for (use_gpu / gpu_id set by the user) on a machine without CUDA: RecBole runs on the CPU
        without a word; we say so (quick_start logs these once logging is set up)."""
        import torch

        asked = [k for k in ("use_gpu", "gpu_id") if k in self.external_config_dict
                 and self.external_config_dict[k] not in (False, None, "")]
        if not asked or torch.cuda.is_available():
            return []
        where = ", ".join(f"{k} ({describe_source(self.source_of(k), k)})" for k in asked)
        return [f"{where} asks for a GPU, but torch sees no CUDA device: running on the CPU"]

    def _check_ranges(self):
        for key, value in self.external_config_dict.items():
            values = value if key == "topk" and isinstance(value, list) else [value]
            for item in values:
                broken = "must be >= 1" if key == "topk" and isinstance(item, int) and item < 1 else \
                    range_violation(key, item)
                if broken:
                    raise ConfigError(f"config key '{key}' in {describe_source(self.source_of(key), key)} {broken}, "
                                      f"got {item!r}")

    def _check_valid_metric(self, final):
        """valid_metric must be one of the computed metrics at one of the computed cut-offs (RecBole fails with a
        KeyError after the first training epoch otherwise)."""
        metric = str(final["valid_metric"])
        name, _, cutoff = metric.partition("@")
        metrics = final["metrics"] if isinstance(final["metrics"], list) else [final["metrics"]]
        topk = final["topk"] if isinstance(final["topk"], list) else [final["topk"]]
        if name.lower() not in {str(m).lower() for m in metrics}:
            raise ConfigError(f"valid_metric {metric} ({describe_source(self.source_of('valid_metric'), 'valid_metric')}) "
                              f"is not among metrics {metrics}")
        if cutoff and (not cutoff.isdigit() or int(cutoff) not in topk):
            raise ConfigError(f"valid_metric {metric} ({describe_source(self.source_of('valid_metric'), 'valid_metric')}) "
                              f"needs @{cutoff} in topk {topk}")

    def source_of(self, key: str) -> str:
        """Where a key's value came from: a file path, 'config_dict', 'command line', or 'property files'."""
        return self._sources.get(key, "property files")

    def __getitem__(self, key):
        if key in self.final_config_dict:
            return self.final_config_dict[key]
        if key in known_keys():
            return None  # a real key (of another model, or optional in RecBole) that is unset here
        hint = closest(key, self.final_config_dict)
        raise KeyError(f"unknown config key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))

    def get(self, key, default=None):
        value = self.final_config_dict.get(key)
        return default if value is None else value
