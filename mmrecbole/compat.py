"""The one module that knows RecBole 1.2.1's internals and version quirks.

Everything else in mmrecbole uses RecBole through what this module exposes. Each workaround says what breaks
without it, so that moving to another RecBole release means reading this file only.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import yaml

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
_RECBOLE_MODEL_SUBPACKAGES = (
    "general_recommender",
    "sequential_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
)

# Keys RecBole's code reads with `config[key]` although none of its property files defines them (found by scanning
# recbole/**/*.py for config["..."] minus the keys of recbole/properties/**/*.yaml). RecBole's Config answers None
# for any unknown key; ours refuses unknown keys, so these optional ones are listed here and answer None.
RECBOLE_OPTIONAL_KEYS = frozenset(
    {
        "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS",
        "POS_ITEMS", "REORDER_ITEM_SEQ", "cin", "config_file", "contrast", "encoding", "eta", "feature_num",
        "has_residual", "norm", "sim", "tail_ratio", "token_num_threshold", "use_filter", "world_size",
        "xgb_early_stopping_rounds",
    }
)

# Keys RecBole's Config derives itself; a user never sets them.
RECBOLE_DERIVED_KEYS = frozenset(
    {
        "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "single_spec", "local_rank",
        "valid_neg_sample_args", "test_neg_sample_args", "valid_metric_bigger",
    }
)


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


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------
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
@lru_cache(maxsize=None)
def recbole_known_keys() -> frozenset:
    """Every key any RecBole property file defines, its argument lists, and the optional keys above."""
    from recbole.utils.argument_list import (
        dataset_arguments,
        evaluation_arguments,
        general_arguments,
        training_arguments,
    )

    keys = set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)
    props = os.path.join(_recbole_dir(), "properties")
    for dirpath, _, files in os.walk(props):
        for name in files:
            if name.endswith(".yaml"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    data = load_yaml(f.read()) or {}
                keys.update(data)
    return frozenset(keys | RECBOLE_OPTIONAL_KEYS | {"model", "dataset"})






# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def dataset_class_for(config) -> type:
    """RecBole's dataset class for a model (its create_dataset logic, without the cache).

    RecBole's `create_dataset` unpickles `<checkpoint_dir>/<dataset>-<Class>.pth` whenever such a file exists, and
    `data_preparation` unpickles `<checkpoint_dir>/<dataset>-for-<model>-dataloader.pth` likewise: loading a
    pickle from a shared output folder runs arbitrary code and silently reuses stale splits. We always build.
    """
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    special = getattr(module, f'{config["model"]}Dataset', None)
    if special is not None:
        return dataset_class_with_options(config, special)
    by_type = {
        ModelType.GENERAL: "Dataset",
        ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset",
        ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset",
        ModelType.DECISIONTREE: "Dataset",
    }
    return dataset_class_with_options(config, getattr(module, by_type[config["MODEL_TYPE"]]))


class ColdStartItemsMixin:
    """Cold-start evaluation (`cold_start_item_ratio` > 0): a random share of items (by `seed`) is removed from
    training entirely, and only test interactions whose target is such an item are evaluated (candidates: all
    items). RecBole has no such mode; we hook its `Dataset.build` (where the interaction table is still a pandas
    DataFrame with remapped ids, before the split and the sequential augmentation):

    - every interaction with a cold item is dropped except a user's last one (its leave-one-out test target), so
      no training sequence or training pair contains a cold item, and validation never targets one;
    - after the split, the test part keeps only rows whose target is cold.
    """

    def build(self):
        ratio = float(self.config["cold_start_item_ratio"] or 0.0)
        if not 0.0 < ratio < 1.0:
            return super().build()
        frame = self.inter_feat
        items = np.unique(frame[self.iid_field].to_numpy())
        rng = np.random.default_rng(int(self.config["seed"]))
        count = max(1, int(round(ratio * len(items))))
        cold = np.sort(rng.choice(items, size=count, replace=False))
        ordered = frame.sort_values([self.uid_field, self.time_field], kind="stable")
        is_last = ~ordered[self.uid_field].duplicated(keep="last")
        keep = ~ordered[self.iid_field].isin(cold) | is_last
        self.inter_feat = ordered[keep].reset_index(drop=True)
        self.cold_items = torch.from_numpy(cold)
        train, valid, test = super().build()
        targets = test.inter_feat[self.iid_field]
        test = test.copy(test.inter_feat[torch.isin(targets, self.cold_items)])
        self.logger.info(f"cold-start items: {count} of {len(items)} held out of training; "
                         f"{len(test.inter_feat)} test interactions target them")
        return [train, valid, test]


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


def dataset_class_with_options(config, base: type) -> type:
    if config["eval_args"]["order"] == "TO":
        base = type(f"TrueTime{base.__name__}", (TrueTimeOrderMixin, base), {"__module__": __name__})
    if float(config["cold_start_item_ratio"] or 0.0) > 0.0:
        if config["eval_args"]["split"] != {"LS": "valid_and_test"} or config["eval_args"]["order"] != "TO":
            from mmrecbole.errors import ConfigError

            raise ConfigError("cold_start_item_ratio needs leave-one-out by time: eval_args split {LS: "
                              "valid_and_test}, order TO")
        return type(f"ColdStart{base.__name__}", (ColdStartItemsMixin, base), {"__module__": __name__})
    return base


def build_dataloaders(config, dataset):
    """(train, valid, test) dataloaders: RecBole's `data_preparation` minus its dataloader pickle cache."""
    from recbole.data.utils import KGSampler, create_samplers, get_dataloader
    from recbole.utils import ModelType

    built = dataset.build()
    train_set, valid_set, test_set = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        kg_sampler = KGSampler(
            dataset, config["train_neg_sample_args"]["distribution"], config["train_neg_sample_args"]["alpha"]
        )
        train = get_dataloader(config, "train")(config, train_set, train_sampler, kg_sampler, shuffle=True)
    else:
        train = get_dataloader(config, "train")(config, train_set, train_sampler, shuffle=config["shuffle"])
    if (config["train_mode"] or "prefix") == "all_positions":
        if not getattr(config.model_class, "supports_all_positions", False):
            from mmrecbole.errors import ConfigError

            raise ConfigError(f"train_mode: all_positions is not supported by {config['model']}; use train_mode: prefix")
        from mmrecbole.data.windows import SequenceWindowLoader

        train = SequenceWindowLoader(config, train_set, shuffle=config["shuffle"])
    valid = _bounded(get_dataloader(config, "valid"))(config, valid_set, valid_sampler, shuffle=False)
    test = _bounded(get_dataloader(config, "test"))(config, test_set, test_sampler, shuffle=False)
    if config["mask_seen_items"] and config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        for loader, history in ((valid, [train_set]), (test, [train_set, valid_set])):
            if isinstance(loader, ScoreBoundedFullSortEvalDataLoader):
                loader.set_seen_items(sequential_seen_items(config, history, dataset.user_num, dataset.item_num))
    return train, valid, test


def _bounded(loader_class):
    """RecBole's FullSortEvalDataLoader counts `eval_batch_size` in scores (users x items) for general models but
    in rows for sequential ones: a sequential batch then holds eval_batch_size x item_num scores (4096 x 1M items is
    16 GB; RecBole issue #1866). Ours counts scores for both, so full-ranking memory is bounded by the setting."""
    from recbole.data.dataloader import FullSortEvalDataLoader

    if loader_class is not FullSortEvalDataLoader:
        return loader_class
    return ScoreBoundedFullSortEvalDataLoader


def _score_bounded_loader():
    from recbole.data.dataloader import FullSortEvalDataLoader

    class ScoreBoundedFullSortEvalDataLoader(FullSortEvalDataLoader):
        """RecBole's full-ranking loader with two changes for sequential models:

        - `eval_batch_size` counts scores (rows x items), as for general models (see `_bounded`);
        - with `seen_items` set (`set_seen_items`), each batch carries the history index RecBole's trainer masks
          (`scores[history_index] = -inf`), as general models' batches do. RecBole gives sequential batches no
          history at all, and masking the input window instead misses every item older than
          MAX_ITEM_LIST_LENGTH: a user with 200 items would have 150 seen items back among the candidates.
        """

        seen_items = None  # scipy CSR [user_num, item_num]: the history splits' items per user

        def _init_batch_size_and_step(self):
            if not self.is_sequential:
                return super()._init_batch_size_and_step()
            rows = max(self.config["eval_batch_size"] // self._dataset.item_num, 1)
            self.step = rows
            self.set_batch_size(rows)

        def set_seen_items(self, seen_items) -> None:
            self.seen_items = seen_items.tocsr()

        def collate_fn(self, index):
            interaction, history_index, positive_u, positive_i = super().collate_fn(index)
            if self.is_sequential and self.seen_items is not None:
                history_index = sequential_history_index(self.config, self.seen_items, interaction)
            return interaction, history_index, positive_u, positive_i

    return ScoreBoundedFullSortEvalDataLoader


def _item_seq_fields(config):
    return config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]


def sequential_seen_items(config, history_splits, user_num: int, item_num: int) -> sp.csr_matrix:
    """Per user, every item of the history splits of a SequentialDataset as a binary CSR [user_num, item_num]
    (the training split for validation; training + validation for test): the same history RecBole's sampler
    gives general models, in O(interactions) memory.

    A split of a SequentialDataset holds (user, input window, target) rows, one per target: its items are the
    targets plus the oldest items of each user, which are only ever inputs (the input window of the user's
    shortest row holds them: the first item, in leave-one-out)."""
    seq_field, len_field = _item_seq_fields(config)
    uid_field, iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    users, items = [], []
    for split in history_splits:
        inter = split.inter_feat
        if len(inter) == 0:
            continue
        uid = inter[uid_field].numpy()
        users.append(uid)
        items.append(inter[iid_field].numpy())
        lengths = inter[len_field].numpy()
        order = np.lexsort((lengths, uid))  # per user, the shortest input window first
        first = order[np.r_[True, uid[order][1:] != uid[order][:-1]]]
        window = inter[seq_field][torch.from_numpy(first)].numpy()
        rows, cols = np.nonzero(window)
        users.append(uid[first][rows])
        items.append(window[rows, cols])
    users = np.concatenate(users) if users else np.zeros(0, np.int64)
    items = np.concatenate(items) if items else np.zeros(0, np.int64)
    seen = sp.csr_matrix((np.ones(len(users), dtype=np.int8), (users, items)), shape=(user_num, item_num))
    seen.sum_duplicates()
    seen.data[:] = 1
    return seen


def sequential_history_index(config, seen_items: sp.csr_matrix, interaction):
    """(row, item) index tensors of the items to mask in one sequential evaluation batch: the user's history
    (`seen_items`) plus the row's own input window, less the row's target. Like RecBole's general loader
    (history = used items - positives), a target the user saw before stays rankable."""
    seq_field, _ = _item_seq_fields(config)
    users = interaction[config["USER_ID_FIELD"]].numpy()
    targets = interaction[config["ITEM_ID_FIELD"]].numpy()
    history = seen_items[users].tocoo()
    window = interaction[seq_field].numpy()
    window_rows, window_cols = np.nonzero(window)
    rows = np.concatenate([history.row.astype(np.int64), window_rows.astype(np.int64)])
    cols = np.concatenate([history.col.astype(np.int64), window[window_rows, window_cols].astype(np.int64)])
    keep = cols != targets[rows]
    return torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])


def dataset_of(dataloader):
    """The Dataset behind a RecBole dataloader (a private attribute in 1.2.1)."""
    return dataloader._dataset


def _ids_digest(tokens) -> str:
    h = hashlib.sha1()
    for tok in tokens:
        h.update(str(tok).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset) -> dict:
    """What a checkpoint must match: entity counts and digests of the id maps (row i of an embedding = id i)."""
    return {
        "n_users": int(dataset.user_num),
        "n_items": int(dataset.item_num),
        "user_ids_sha1": _ids_digest(dataset.field2id_token[dataset.uid_field]),
        "item_ids_sha1": _ids_digest(dataset.field2id_token[dataset.iid_field]),
    }


# --------------------------------------------------------------------------------------------------------------
# Model state outside state_dict
# --------------------------------------------------------------------------------------------------------------
# RecBole models keep some fitted state outside nn.Module parameters and list it in `other_parameter_name`
# (Pop: item_cnt tensor; ItemKNN: scipy sparse `w` and `pred_mat`; LightGCN: cached embeddings). RecBole pickles
# those objects into its checkpoints. We encode them as plain tensors so that `torch.load(weights_only=True)` reads
# them.
_SPARSE = "__scipy_sparse__"
_NDARRAY = "__ndarray__"


def encode_other_parameters(model) -> dict:
    encoded = {}
    for name, value in model.other_parameter().items():
        if value is None or isinstance(value, (bool, int, float, str)):
            encoded[name] = value
        elif isinstance(value, torch.nn.Module):
            continue  # already in state_dict
        elif isinstance(value, torch.Tensor):
            encoded[name] = value.detach().cpu()
        elif sp.issparse(value):
            csr = value.tocsr()
            encoded[name] = {
                _SPARSE: value.getformat(),
                "data": torch.from_numpy(np.asarray(csr.data)),
                "indices": torch.from_numpy(np.asarray(csr.indices, dtype=np.int64)),
                "indptr": torch.from_numpy(np.asarray(csr.indptr, dtype=np.int64)),
                "shape": list(csr.shape),
            }
        elif isinstance(value, np.ndarray) and value.dtype != object:
            encoded[name] = {_NDARRAY: True, "array": torch.from_numpy(np.ascontiguousarray(value))}
        else:
            raise TypeError(
                f"cannot store {type(model).__name__}.{name} ({type(value).__name__}) in a safe checkpoint; "
                "keep fitted state in tensors, numpy arrays or scipy sparse matrices"
            )
    return encoded


def decode_other_parameters(encoded: dict, device) -> dict:
    decoded = {}
    for name, value in encoded.items():
        if isinstance(value, dict) and _SPARSE in value:
            csr = sp.csr_matrix(
                (value["data"].numpy(), value["indices"].numpy(), value["indptr"].numpy()), shape=value["shape"]
            )
            decoded[name] = csr.asformat(value[_SPARSE])
        elif isinstance(value, dict) and _NDARRAY in value:
            decoded[name] = value["array"].numpy()
        elif isinstance(value, torch.Tensor):
            decoded[name] = value.to(device)
        else:
            decoded[name] = value
    return decoded


# --------------------------------------------------------------------------------------------------------------
# Trainer hooks
# --------------------------------------------------------------------------------------------------------------
def _collected_struct(collector):
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
    for key in ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"):
        if key in collector.data_struct:
            del collector.data_struct[key]
    return returned


class SafeCheckpointMixin:
    """Put before a RecBole trainer class in the MRO.

    RecBole 1.2.1 pickles its Config object into every checkpoint and reloads with a bare `torch.load`; torch >= 2.6
    defaults to `weights_only=True`, so RecBole's own reload of the best model fails (and loading a pickle is
    unsafe anyway). We save state_dict + plain JSON config + metadata atomically (mmrecbole.checkpoint) and load
    with weights_only=True, refusing checkpoints of another model or dataset.

    Seen-item masking (`mask_seen_items: True`, our default) is not done here: `build_dataloaders` gives the
    sequential evaluation loaders the users' whole histories, and RecBole's own `_full_sort_batch_eval` masks them
    exactly as it masks general models' histories, so every row of a leaderboard ranks the same candidates.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        collector = self.eval_collector
        collector.get_data_struct = lambda: _collected_struct(collector)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.dataset_fingerprint = dataset_fingerprint(dataset_of(train_data))
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        from mmrecbole import checkpoint

        path = kwargs.pop("saved_model_file", self.saved_model_file)
        checkpoint.save(
            path,
            model=self.model,
            config=self.config,
            dataset_fingerprint=getattr(self, "dataset_fingerprint", None),
            training={
                "epoch": int(epoch),
                "cur_step": int(self.cur_step),
                "best_valid_score": float(self.best_valid_score),
                "valid_metric": self.valid_metric,
            },
            optimizer_state=self.optimizer.state_dict() if getattr(self, "optimizer", None) else None,
        )
        if verbose:
            self.logger.info(f"Saving current: {path}")

    def resume_checkpoint(self, resume_file):
        from mmrecbole import checkpoint

        ckpt = checkpoint.read(resume_file, map_location=self.device)
        ckpt.check_matches(self.config["model"], self.config["dataset"])
        ckpt.restore_into(self.model, device=self.device)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.saved_model_file = str(resume_file)
        self.start_epoch = ckpt.training["epoch"] + 1
        self.cur_step = ckpt.training["cur_step"]
        self.best_valid_score = ckpt.training["best_valid_score"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation, loading our checkpoints; also keeps per-user top-k metrics in `last_per_user`
        ({"user_id": [raw ids], "ndcg@10": array, ...}) for paired significance tests."""
        if not eval_data:
            return None
        if load_best_model:
            from mmrecbole import checkpoint

            path = model_file or self.saved_model_file
            ckpt = checkpoint.read(path, map_location=self.device)
            ckpt.check_matches(
                self.config["model"], self.config["dataset"], dataset_fingerprint(dataset_of(eval_data))
            )
            ckpt.restore_into(self.model, device=self.device)
            self.logger.info(f"Loading model structure and parameters from {path}")
        self._eval_users, captured = [], {}
        evaluate_struct = self.evaluator.evaluate

        def recording(struct):
            captured["struct"] = struct
            return evaluate_struct(struct)

        self.evaluator.evaluate = recording
        try:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            del self.evaluator.evaluate  # back to the class's method
        self.last_per_user = None
        if "struct" in captured and self._eval_users:
            dataset = dataset_of(eval_data)
            tokens = dataset.field2id_token[dataset.uid_field]
            users = torch.cat(self._eval_users).numpy()
            self.last_per_user = {"user_id": [str(t) for t in tokens[users]],
                                  **per_user_topk_metrics(self.config, captured["struct"])}
        return result

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if hasattr(self, "_eval_users"):
            self._eval_users.append(interaction[self.config["USER_ID_FIELD"]].cpu())
        return interaction, scores, positive_u, positive_i


class TrainerHooksMixin:
    """Two hooks RecBole 1.2.1's Trainer lacks, for our models:

    - `model.pre_epoch(epoch)` runs before each training epoch (e.g. FREEDOM re-samples its pruned user-item graph
      once per epoch; RecBole has no per-epoch callback into the model);
    - a model returning a tuple of loss terms may name them in `model.loss_names`: the epoch log and TensorBoard then
      say `rec: 5.1, align: 0.3` instead of RecBole's `train_loss1: 5.1, train_loss2: 0.3`.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        hook = getattr(self.model, "pre_epoch", None)
        if callable(hook):
            hook(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _loss_names(self, losses):
        names = getattr(self.model, "loss_names", None)
        if isinstance(losses, tuple) and names and len(names) == len(losses):
            return list(names)
        return None

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        names = self._loss_names(losses)
        if names is None:
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        places = self.config["loss_decimal_place"] or 4
        terms = ", ".join(f"{name}: {value:.{places}f}" for name, value in zip(names, losses))
        return f"epoch {epoch_idx} training [time: {e_time - s_time:.2f}s, loss: {sum(losses):.{places}f} = {terms}]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        names = self._loss_names(losses)
        if names is None:
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in zip(names, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        self.tensorboard.add_scalar(tag, sum(losses), epoch_idx)


def per_user_topk_metrics(config, struct) -> dict:
    """{"ndcg@10": np.ndarray [n_eval_rows], ...}: RecBole's top-k metrics before averaging over users."""
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.register import metrics_dict

    if "rec.topk" not in struct:
        return {}
    values = {}
    for name in config["metrics"]:
        metric = metrics_dict[name.lower()](config)
        if not isinstance(metric, TopkMetric):
            continue
        pos_index, pos_len = metric.used_info(struct)
        # [rows, max(topk)]: the metric at 1..max(topk); Hit/MRR/Precision take no pos_len
        takes_len = len(inspect.signature(metric.metric_info).parameters) == 2
        per_user = metric.metric_info(pos_index, pos_len) if takes_len else metric.metric_info(pos_index)
        for k in config["topk"]:
            values[f"{name.lower()}@{k}"] = per_user[:, k - 1]
    return values


def safe_trainer(base: type) -> type:
    """`base` (a RecBole trainer class) with SafeCheckpointMixin in front."""
    if issubclass(base, SafeCheckpointMixin):
        return base
    return type(base.__name__, (SafeCheckpointMixin, base), {"__module__": __name__, "__doc__": base.__doc__})


def set_seed(seed: int, reproducible: bool) -> None:
    from recbole.utils import init_seed

    init_seed(seed, reproducible)


ScoreBoundedFullSortEvalDataLoader = _score_bounded_loader()


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
#: What a ranked list of item ids can feed to RecBole's metric classes (see `ranked_list_metrics`).
RANKED_LIST_STRUCT_KEYS = frozenset({"rec.topk", "rec.items", "data.num_items", "data.count_items"})


@torch.no_grad()
def full_sort_scores(trainer, eval_loader):
    """Yield (internal user ids [b] np.int64, scores [b, item_num] float32 CPU tensor) per batch of a full-ranking
    eval loader, through the trainer's own `_full_sort_batch_eval`: padding and seen items are -inf exactly as in
    the trainer's evaluation (SafeCheckpointMixin adds the sequential models' masking), so scores read here rank
    the same candidates as the model's own leaderboard row.

    `_full_sort_batch_eval` needs `tot_item_num` (and `item_tensor` for models without `full_sort_predict`), which
    RecBole 1.2.1's `Trainer.evaluate` sets just before its batch loop; we set them the same way."""
    from recbole.data.dataloader import FullSortEvalDataLoader

    if not isinstance(eval_loader, FullSortEvalDataLoader):
        from mmrecbole.errors import ConfigError

        raise ConfigError("full-ranking scores need eval_args mode: full (got a sampled-candidates loader)")
    dataset = dataset_of(eval_loader)
    trainer.model.eval()
    trainer.tot_item_num = dataset.item_num
    if trainer.item_tensor is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    uid_field = trainer.config["USER_ID_FIELD"]
    for batch in eval_loader:
        interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
        yield interaction[uid_field].cpu().numpy().astype(np.int64), scores.float().cpu()


def metrics_needing_more_than_ranked_lists(metric_names) -> list:
    """The metrics (of `metric_names`) whose RecBole class needs more than a ranked list of items per user (e.g.
    GAUC needs every item's score rank, AUC/LogLoss raw scores and labels)."""
    from recbole.evaluator.register import metrics_dict

    unsupported = []
    for name in metric_names:
        metric = metrics_dict.get(str(name).lower())
        if metric is None or not set(metric.metric_need) <= RANKED_LIST_STRUCT_KEYS:
            unsupported.append(name)
    return unsupported


def ranked_list_metrics(config, ranked_items, hits, positives_count, num_items, item_counter):
    """RecBole's metrics (Evaluator, per-user top-k metrics) of ranked lists produced outside its trainer.

    ranked_items: int64 [n_users, max(topk)] item ids (0 = nothing at that position); hits: int [n_users,
    max(topk)], 1 where the item is a positive; positives_count: int [n_users]; num_items: the dataset's item_num;
    item_counter: training-split interaction counts per item (RecBole's `dataset.item_counter`). This is the
    DataStruct RecBole's Collector would build ("rec.items", "rec.topk" = hits + number of positives,
    "data.num_items", "data.count_items"), so every metric is computed by the same class as for every other row.

    Returns (metrics {name@k: value}, per-user top-k metrics {name@k: np.ndarray}).
    """
    from recbole.evaluator import Evaluator
    from recbole.evaluator.collector import DataStruct

    ranked = torch.as_tensor(np.asarray(ranked_items, dtype=np.int64))
    hit_flags = torch.as_tensor(np.asarray(hits, dtype=np.int64)).int()
    counts = torch.as_tensor(np.asarray(positives_count, dtype=np.int64)).int().reshape(-1, 1)
    struct = DataStruct()
    struct.set("rec.items", ranked)
    struct.set("rec.topk", torch.cat([hit_flags, counts], dim=1))
    struct.set("data.num_items", int(num_items))
    struct.set("data.count_items", item_counter)
    metrics = {k: float(v) for k, v in Evaluator(config).evaluate(struct).items()}
    return metrics, per_user_topk_metrics(config, struct)


def split_interactions(dataset_split, fields) -> dict:
    """{field: np.ndarray} of the interactions of one split Dataset (RecBole keeps them in an Interaction)."""
    inter = dataset_split.inter_feat
    return {field: inter[field].numpy() for field in fields if field in inter}


def item_counts(dataset_split):
    """Interactions per item id in a split (RecBole's `item_counter`, a Counter keyed by internal item id)."""
    return dataset_split.item_counter
