"""RecBole 1.2.1's version quirks and internals, in one place.

This module holds the workarounds (each says what breaks without it) and the few adapters onto RecBole's private
API. Elsewhere mmrecbole builds on RecBole's public model API (recommender base classes, InputType / ModelType,
layers) and, where it must reach further, the module is listed in RECBOLE_TOUCHPOINTS below with what it relies on:
moving to another RecBole release means reading this file and those entries (tests/test_structure.py fails when a
module imports RecBole beyond the public API without an entry).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
import yaml

#: Modules outside compat that use RecBole beyond its public model API, and what they rely on.
RECBOLE_TOUCHPOINTS = {
    "mmrecbole/config.py": "Config's private layering steps, through RecBoleConfigAdapter (below); _init_device",
    "mmrecbole/registry.py": "AbstractRecommender, to tell recommender classes from other exports",
    "mmrecbole/data/build.py": "data_preparation's parts: create_samplers, get_dataloader, KGSampler; Dataset.build",
    "mmrecbole/data/eval_loader.py": "FullSortEvalDataLoader: _init_batch_size_and_step, collate_fn's 4-tuple, "
                                     "is_sequential, set_batch_size; the trainer masks `history_index`",
    "mmrecbole/data/cold_start.py": "Dataset.build (pandas inter_feat, remapped ids, before the split), Dataset.copy",
    "mmrecbole/data/windows.py": "Interaction; SequentialDataset's ITEM_SEQ / ITEM_SEQ_LEN fields; DDP's "
                                 "train_data.sampler.set_epoch",
    "mmrecbole/data/checked_dataset.py": "Dataset._load_feat(filepath, source) reading config['encoding'], "
                                         "_get_load_and_unload_col, _reset_index, feat_name_list",
    "mmrecbole/trainer/tensorboard.py": "recbole.trainer.trainer's module-level get_tensorboard, called in "
                                        "Trainer.__init__",
    "mmrecbole/trainer/base.py": "Trainer: fit's callback after early_stopping (cur_step), _train_epoch, "
                                 "_save_checkpoint, resume_checkpoint, evaluate, _full_sort_batch_eval, _map_reduce, "
                                 "_generate_train_loss_output, _add_train_loss_to_tensorboard, evaluator, "
                                 "eval_collector",
    "mmrecbole/trainer/fit_once.py": "Trainer: _build_optimizer, _valid_epoch, eval_collector.data_collect",
    "mmrecbole/export.py": "Dataset.inter_feat after build (time-sorted; a SequentialDataset augmented in "
                                   "place: item_length / item_id_list rows), inter_matrix(form='coo'), field2id_token",
    "mmrecbole/serving/recommender.py": "Interaction; a model's USER_ID / ITEM_ID / ITEM_SEQ / ITEM_SEQ_LEN fields and "
                                        "full_sort_predict's input, as the evaluation's dataloaders build it",
    "mmrecbole/trainer/evaluation.py": "Evaluator, DataStruct keys, TopkMetric.used_info / metric_info, "
                                       "metrics_dict, Trainer._full_sort_batch_eval with tot_item_num / item_tensor",
}

# Quirks we live with rather than work around:
# - a dataset named exactly `ml-100k` is always read from the copy inside the recbole wheel
#   (configurator.py `_set_default_parameters` overrides data_path for that name); we use it as the bundled dataset;
# - RecBole's trainer reads every batch's loss with `.item()` (a host sync per step on CUDA); our models' training
#   steps add none of their own.

# Noise RecBole 1.2.1 prints on every run with our pins, each harmless here:
# - pandas 2.x FutureWarning on `feat[field].fillna(..., inplace=True)` (dataset.py): still works on pandas 2.3.3,
#   which is why pandas is pinned < 3 (where it silently does nothing);
# - torch's FutureWarning on `torch.cuda.amp.GradScaler(...)` in the trainer (deprecated spelling, same behaviour).
# (The pandas message spans several lines: (?s) lets the pattern match across them.)
warnings.filterwarnings("ignore", message=r"(?s).*inplace method will never work.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*GradScaler\(args\.\.\.\)` is deprecated.*", category=FutureWarning)

# Subpackages of recbole.model searched by name. `exlib_recommender` (XGBoost / LightGBM as nn.Modules) is left
# out on purpose: xgboost is not installed, and our LightGBM stacker has its own fit/predict contract.
_RECBOLE_MODEL_SUBPACKAGES = ("general_recommender", "sequential_recommender", "context_aware_recommender",
                              "knowledge_aware_recommender")

# Keys RecBole's code reads with `config[key]` although none of its property files defines them (found by scanning
# recbole/**/*.py for config["..."] minus the keys of recbole/properties/**/*.yaml). RecBole's Config answers None
# for any unknown key; ours refuses unknown keys, so these optional ones are listed here and answer None.
RECBOLE_OPTIONAL_KEYS = frozenset(
    {
        "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS",
        "POS_ITEMS", "REORDER_ITEM_SEQ", "cin", "config_file", "contrast", "encoding", "eta", "feature_num",
        "has_residual", "norm", "sim", "tail_ratio", "token_num_threshold", "use_filter", "xgb_early_stopping_rounds",
    }
)

# Keys RecBole's Config derives itself; a user never sets them.
RECBOLE_DERIVED_KEYS = frozenset({"MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "single_spec",
                                  "local_rank", "valid_neg_sample_args", "test_neg_sample_args",
                                  "valid_metric_bigger"})


def _recbole_dir() -> str:
    spec = importlib.util.find_spec("recbole")
    return os.path.dirname(spec.origin)


def recbole_version() -> str:
    import recbole

    return getattr(recbole, "__version__", "unknown")


# --------------------------------------------------------------------------------------------------------------
# YAML: RecBole parses with yaml.FullLoader (constructs arbitrary Python objects from tags) and patches a float
# resolver onto that global class. We parse with a SafeLoader subclass carrying the same float resolver, so that
# `1e-3` is a float (YAML 1.1 would read a string) and `!!python/object` tags are refused.
# --------------------------------------------------------------------------------------------------------------
class SafeYamlLoader(yaml.SafeLoader):
    pass


SafeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str):
    return yaml.load(text, Loader=SafeYamlLoader)


# -- Models ----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def recbole_model_names() -> dict:
    """{model name: subpackage} for RecBole's models, read from the subpackages' __init__.py without importing
    them (importing all of them takes seconds and runs sine.py's side effect, below)."""
    names = {}
    root = os.path.join(_recbole_dir(), "model")
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        with open(os.path.join(root, sub, "__init__.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    names[alias.asname or alias.name] = sub
    return names


def import_recbole_model(name: str) -> type:
    from recbole.utils import get_model

    model_class = get_model(name)
    # recbole/model/sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True) at import time, and
    # importing any sequential model imports that whole subpackage. With anomaly detection on, every backward pass
    # records stack traces: training is ~25% slower. Switch it off again after every import of RecBole's models.
    torch.autograd.set_detect_anomaly(False)
    return model_class


def recbole_trainer_class(model_type, model_name: str) -> type:
    from recbole.utils import get_trainer

    return get_trainer(model_type, model_name)


# --------------------------------------------------------------------------------------------------------------
# Configuration keys
# --------------------------------------------------------------------------------------------------------------
def _recbole_argument_keys() -> set:
    from recbole.utils.argument_list import (dataset_arguments, evaluation_arguments, general_arguments,
                                             training_arguments)

    return set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)


def _recbole_file_keys(model_files: bool) -> set:
    """Keys of RecBole's property files: all of them, or all but properties/model/*.yaml."""
    keys = set()
    for dirpath, _, files in os.walk(os.path.join(_recbole_dir(), "properties")):
        if not model_files and os.path.basename(dirpath) == "model":
            continue
        for name in files:
            if name.endswith(".yaml"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    keys.update(load_yaml(f.read()) or {})
    return keys


@lru_cache(maxsize=None)
def recbole_known_keys() -> frozenset:
    """Every key any RecBole property file defines, its argument lists, and the optional keys above."""
    return frozenset(_recbole_argument_keys() | _recbole_file_keys(model_files=True) | RECBOLE_OPTIONAL_KEYS
                     | {"model", "dataset"})


@lru_cache(maxsize=None)
def recbole_model_keys() -> dict:
    """{model name: frozenset of the keys its recbole/properties/model/<Model>.yaml defines}. Keys of every other
    RecBole file (overall, dataset, the per-model-type quick-start files, the argument lists) apply to any model."""
    folder = os.path.join(_recbole_dir(), "properties", "model")
    owned = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".yaml"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                owned[name[: -len(".yaml")]] = frozenset(load_yaml(f.read()) or {})
    return owned


@lru_cache(maxsize=None)
def recbole_general_keys() -> frozenset:
    """Keys any model may set: the argument lists and every non-model property file, plus the optional keys that
    no model file claims."""
    model_only = set().union(*recbole_model_keys().values())
    general = _recbole_argument_keys() | _recbole_file_keys(model_files=False)
    return frozenset(general | ((RECBOLE_OPTIONAL_KEYS | {"model", "dataset"}) - model_only))


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def recbole_dataset_class(config) -> type:
    """RecBole's dataset class for a model (its create_dataset logic, without the cache).

    RecBole's `create_dataset` unpickles `<checkpoint_dir>/<dataset>-<Class>.pth` whenever such a file exists, and
    `data_preparation` unpickles `<checkpoint_dir>/<dataset>-for-<model>-dataloader.pth` likewise: loading a
    pickle from a shared output folder runs arbitrary code and silently reuses stale splits. We always build.
    """
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    special = getattr(module, f'{config["model"]}Dataset', None)
    if special is not None:
        return special
    by_type = {
        ModelType.GENERAL: "Dataset",
        ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset",
        ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset",
        ModelType.DECISIONTREE: "Dataset",
    }
    return getattr(module, by_type[config["MODEL_TYPE"]])


class TrueTimeOrderMixin:
    """Order interactions by their true timestamps before RecBole turns them into float32 tensors.

    RecBole stores float columns as float32: a Unix time near 9e8 keeps a resolution of 64 s (and one rescaled to
    0..1 by `normalize_all` about 1 s), so interactions minutes apart get equal keys and RecBole's stable sort by
    time then keeps them in file order, not in time order; leave-one-out can pick the wrong test or validation
    item. Sorting the pandas table (float64, exact) by time first, stably (equal times keep the file order), makes
    every later stable sort of the rounded keys keep the true order: rounding never reverses two values.
    """

    def _change_feat_format(self):
        frame = self.inter_feat
        if self.time_field and isinstance(frame, pd.DataFrame) and self.time_field in frame:
            self.inter_feat = frame.sort_values(self.time_field, kind="stable").reset_index(drop=True)
        super()._change_feat_format()


def dataset_of(dataloader):
    """The Dataset behind a RecBole dataloader (a private attribute in 1.2.1)."""
    return dataloader._dataset


def sampler_of(dataloader):  # its negative / history sampler: private in 1.2.1 (our window loader has none)
    return getattr(dataloader, "_sampler", None)


def _interaction_rows(self, index):
    """Interaction.__getitem__ with a tensor index. RecBole 1.2.1 turns an array or tensor index into a list first
    (`index.tolist()`), and torch indexes with a 2,048-element list ~10x slower than with the same tensor: that was
    half of a BPR epoch on ml-100k-mm (0.32 of 0.61 s; batch rows, joined user/item features, sampled negatives).
    Same rows and values (tests compare both paths); indices other than 1-d integer/boolean go to RecBole's code."""
    if isinstance(index, np.ndarray) and index.ndim == 1 and (index.dtype == np.bool_ or
                                                              np.issubdtype(index.dtype, np.integer)):
        index = torch.from_numpy(index if index.dtype == np.bool_ else index.astype(np.int64, copy=False))
    if not (isinstance(index, torch.Tensor) and index.dim() == 1 and
            (index.dtype == torch.bool or not (index.is_floating_point() or index.is_complex()))):
        return _recbole_interaction_rows(self, index)
    index = index if index.dtype == torch.bool else index.long()
    return _Interaction({key: values[index.to(values.device)] for key, values in self.interaction.items()})


from recbole.data.interaction import Interaction as _Interaction  # noqa: E402  (next to the only code that needs it)

_recbole_interaction_rows, _Interaction.__getitem__ = _Interaction.__getitem__, _interaction_rows


#: The entries of RecBole's evaluation DataStruct with one row per evaluated sample (cleared between evaluations).
PER_ROW_STRUCT_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def collected_struct(collector):
    """RecBole's Collector.get_data_struct, moving only tensors to the CPU.

    RecBole 1.2.1 calls `.cpu()` on everything collected, but ItemCoverage stores an int (data.num_items) and
    AveragePopularity/TailPercentage a Counter (data.count_items): evaluation with those metrics crashes
    (RecBole issue #2191, open)."""
    import copy

    data = collector.data_struct._data_dict
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            data[key] = value.cpu()
    returned = copy.deepcopy(collector.data_struct)
    for key in PER_ROW_STRUCT_KEYS:
        if key in collector.data_struct:
            del collector.data_struct[key]
    return returned


def set_seed(seed: int, reproducible: bool) -> None:
    from recbole.utils import init_seed

    init_seed(seed, reproducible)


# --------------------------------------------------------------------------------------------------------------
# Config: RecBole's Config with its private steps routed to public hooks that mmrecbole.config.Config implements.
# --------------------------------------------------------------------------------------------------------------
from recbole.config import Config as _RecBoleConfig  # noqa: E402  (kept next to the only code that needs it)


class RecBoleConfigAdapter(_RecBoleConfig):
    """What RecBole 1.2.1's Config does by itself, and why we replace it:

    - `_load_cmd_line` reads `sys.argv` from inside the constructor (a library reading the host program's argv;
      pytest's flags become config) and `eval()`s every value. Our CLI parses flags and passes them in.
    - `_load_variable_config_dict` `eval()`s string values of the config dict. We take values as given.
    - `_build_yaml_loader` parses with yaml.FullLoader. We use SafeYamlLoader.
    - `_get_model_and_dataset` only finds RecBole's own models. We ask our registry.
    - `_load_internal_config_dict` only reads RecBole's property files. We layer ours on top.
    - `__getitem__` answers None for any unknown key, so typos pass silently. Ours raises (see config.py).

    Subclasses implement: `external_layers()`, `model_class_for(name)`, `extra_property_files(model, dataset)`,
    `finalize(final_config_dict)`.
    """

    def _build_yaml_loader(self):
        return SafeYamlLoader

    def _load_config_files(self, file_list):
        merged = {}
        for _, values in self.external_layers():
            merged.update(values)
        return merged

    def _load_variable_config_dict(self, config_dict):
        return {}  # already part of external_layers()

    def _load_cmd_line(self):
        return {}  # already part of external_layers()

    def _get_model_and_dataset(self, model, dataset):
        model = model if model is not None else self.external_config_dict.get("model")
        dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if model is None or dataset is None:
            missing = "model" if model is None else "dataset"
            from mmrecbole.errors import ConfigError

            raise ConfigError(f"no {missing} given: pass --{missing}=NAME or set `{missing}:` in a config file")
        if isinstance(model, str):
            return model, self.model_class_for(model), dataset
        return model.__name__, model, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in self.extra_property_files(model, dataset):
            values = self._update_internal_config_dict(path)
            if values and os.path.basename(os.path.dirname(path)) == "dataset":
                # RecBole tracks dataset-level keys to decide when a filtered dataset must be rebuilt.
                self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        self.finalize(final)
        return final

    def external_layers(self):
        raise NotImplementedError

    def model_class_for(self, name):
        raise NotImplementedError

    def extra_property_files(self, model, dataset):
        raise NotImplementedError

    def finalize(self, final_config_dict):
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# Scores and metrics for models outside RecBole's trainer loop (mmrecbole.ensemble's stacker)
# --------------------------------------------------------------------------------------------------------------
def split_interactions(dataset_split, fields) -> dict:
    """{field: np.ndarray} of the interactions of one split Dataset (RecBole keeps them in an Interaction)."""
    inter = dataset_split.inter_feat
    return {field: inter[field].numpy() for field in fields if field in inter}


def item_counts(dataset_split):
    """Interactions per item id in a split (RecBole's `item_counter`, a Counter keyed by internal item id)."""
    return dataset_split.item_counter
