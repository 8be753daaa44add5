"""The one place that creates a config's dataset and its (train, valid, test) loaders.

`create_dataset(config)`: the atomic files (built first for a dataset with a builder, e.g. ml-100k-mm), RecBole's
dataset class for the model type with our options (true time order, cold-start items), always built from the files,
never unpickled. `build_dataloaders(config, dataset)`: RecBole's `data_preparation` minus its pickle cache, with our
all_positions window loader and the score-bounded, history-masking evaluation loader.
"""
from __future__ import annotations

import os

import torch

from mmrecbole import compat
from mmrecbole.data import DATASET_BUILDERS, prepare_dataset
from mmrecbole.data.checked_dataset import CheckedAtomicFilesMixin
from mmrecbole.data.cold_start import ColdStartItemsMixin
from mmrecbole.data.eval_loader import ScoreBoundedFullSortEvalDataLoader, score_bounded, sequential_seen_items
from mmrecbole.data.windows import SequenceWindowLoader
from mmrecbole.errors import ConfigError, DatasetError
from mmrecbole import contract


def dataset_files_present(config) -> bool:
    folder = config["data_path"]
    name = config["dataset"]
    if config["benchmark_filename"]:
        return all(os.path.isfile(os.path.join(folder, f"{name}.{part}.inter"))
                   for part in config["benchmark_filename"])
    return os.path.isfile(os.path.join(folder, f"{name}.inter"))


def ensure_dataset_files(config) -> None:
    """Build a dataset that mmrecbole.data can generate (e.g. ml-100k-mm) when its files are missing or its raw
    inputs changed; DatasetError when the atomic files are missing and nothing can build them."""
    if config["dataset"] in DATASET_BUILDERS:
        prepare_dataset(config["dataset"], config["data_path"], raw_dir=config["mm_raw_dir"])
    if not dataset_files_present(config):
        where = os.path.join(config["data_path"], f'{config["dataset"]}.inter')
        raise DatasetError(
            f"dataset '{config['dataset']}' not found: no {where}. Put RecBole atomic files "
            f"(<name>.inter, optional <name>.item/.user) in that folder, or point --data_path at their parent folder"
        )


def create_dataset(config):
    """The dataset for `config`, built from its atomic files (see the module docstring)."""
    ensure_dataset_files(config)
    return dataset_class_with_options(config, compat.recbole_dataset_class(config))(config)


def dataset_class_with_options(config, base: type) -> type:
    base = type(f"Checked{base.__name__}", (CheckedAtomicFilesMixin, base), {"__module__": __name__})
    if config["eval_args"]["order"] == "TO":
        base = type(f"TrueTime{base.__name__}", (compat.TrueTimeOrderMixin, base), {"__module__": __name__})
    if float(config["cold_start_item_ratio"] or 0.0) > 0.0:
        if config["eval_args"]["split"] != {"LS": "valid_and_test"} or config["eval_args"]["order"] != "TO":
            raise ConfigError("cold_start_item_ratio needs leave-one-out by time: eval_args split {LS: "
                              "valid_and_test}, order TO")
        return type(f"ColdStart{base.__name__}", (ColdStartItemsMixin, base), {"__module__": __name__})
    return base


def _interactions_per_user(dataset) -> dict:
    from collections import Counter

    return Counter(list(dataset.inter_feat[dataset.uid_field]))


def _has_validation(split) -> bool:
    """Whether eval_args' split makes a validation part (LS: test_only and an RS ratio of 0 do not)."""
    if not isinstance(split, dict):
        return True
    ratios = split.get("RS")
    return split.get("LS") != "test_only" and not (isinstance(ratios, list) and len(ratios) > 1 and not ratios[1])


def check_splits(config, per_user: dict, built) -> None:
    """DatasetError when a split is empty (RecBole trains on nothing, or reports an empty metric table, exit 0)."""
    for part, split in zip(("training", "validation", "test"), built):
        if len(split) > 0 or (part == "validation" and not _has_validation(config["eval_args"]["split"])):
            continue
        most = max(per_user.values()) if per_user else 0
        sequential = config["MODEL_TYPE"].name == "SEQUENTIAL"
        raise DatasetError(
            f"dataset '{config['dataset']}': the {part} split is empty ({len(per_user)} users with at most {most} "
            f"interaction{'' if most == 1 else 's'} each, eval_args split {config['eval_args']['split']}): leave-one-out needs "
            f"{4 if sequential else 3} interactions per user (one to validate, one to test, "
            f"{'two' if sequential else 'one'} to train on); add data or keep such users only "
            f"(user_inter_num_interval: \"[{4 if sequential else 3},inf)\")"
        )


def check_topk(config, dataset) -> None:
    """ConfigError when a top-k cut-off exceeds the catalogue (RecBole's evaluator fails with 'selected index k
    out of range' after the first epoch)."""
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    items = int(dataset.item_num) - 1  # id 0 is RecBole's padding
    too_big = [k for k in topk if int(k) > items]
    if too_big:
        raise ConfigError(f"topk {topk}: {too_big} exceed the {items} items of dataset '{config['dataset']}'; use "
                          f"cut-offs of at most {items}, e.g. --topk=[{min(5, items)}] "
                          f"--valid_metric={str(config['valid_metric']).split('@')[0]}@{min(5, items)}")


def _train_loader(config, train_set, sampler):
    """The training loader of a non-knowledge model: RecBole's, or our window loader for train_mode all_positions."""
    from recbole.data.utils import get_dataloader

    if (config["train_mode"] or "prefix") == "all_positions":
        if not contract.capabilities(config.model_class).supports_all_positions:
            raise ConfigError(f"train_mode: all_positions is not supported by {config['model']}; "
                              "use train_mode: prefix")
        train = SequenceWindowLoader(config, train_set, shuffle=config["shuffle"])
    else:
        train = get_dataloader(config, "train")(config, train_set, sampler, shuffle=config["shuffle"])
    if isinstance(getattr(train, "sampler", None), torch.utils.data.distributed.DistributedSampler):
        train.sampler.seed = int(config["seed"])  # RecBole leaves it 0: under DDP every seed shuffled alike
    return train


def _eval_loader(config, phase, split, sampler):
    from recbole.data.utils import get_dataloader

    return score_bounded(get_dataloader(config, phase))(config, split, sampler, shuffle=False)


def _user_rows(split, keep_users):
    """`split` (a RecBole dataset) with only the rows of the users where `keep_users` (bool, by internal id) is
    True."""
    users = split.inter_feat[split.uid_field].long()
    return split.copy(split.inter_feat[torch.as_tensor(keep_users, dtype=torch.bool)[users]])


def restrict_training(config, train, keep_users):
    """A training loader like `train` over only the kept users' rows (a refit's replay, mmrecbole.refit_users): the
    model, built from the whole split, and the negative sampler, which knows every training item of a user, are
    unchanged. Knowledge-aware loaders are not supported."""
    if config["MODEL_TYPE"].name == "KNOWLEDGE":
        raise ConfigError(f"refit_replay below 1.0 is not supported for knowledge-aware models ({config['model']})")
    return _train_loader(config, _user_rows(compat.dataset_of(train), keep_users), compat.sampler_of(train))


def restrict_evaluation(config, phase, loader, keep_users):
    """An evaluation loader of `phase` ("valid" or "test") like `loader` over only the kept users, masking what
    `loader` masks: a sequential loader's seen items are carried over; a general loader's come from the sampler,
    which is shared."""
    restricted = _eval_loader(config, phase, _user_rows(compat.dataset_of(loader), keep_users),
                              compat.sampler_of(loader))
    if getattr(loader, "seen_items", None) is not None:
        restricted.set_seen_items(loader.seen_items)
    return restricted


def build_dataloaders(config, dataset):
    """(train, valid, test) dataloaders: RecBole's `data_preparation` minus its dataloader pickle cache."""
    from recbole.data.utils import KGSampler, create_samplers, get_dataloader
    from recbole.utils import ModelType

    per_user = _interactions_per_user(dataset)  # before build(): a sequential build leaves inter_feat empty
    built = dataset.build()
    check_splits(config, per_user, built)
    check_topk(config, dataset)
    train_set, valid_set, test_set = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        kg_sampler = KGSampler(
            dataset, config["train_neg_sample_args"]["distribution"], config["train_neg_sample_args"]["alpha"]
        )
        train = get_dataloader(config, "train")(config, train_set, train_sampler, kg_sampler, shuffle=True)
    else:
        train = _train_loader(config, train_set, train_sampler)
    valid = _eval_loader(config, "valid", valid_set, valid_sampler)
    test = _eval_loader(config, "test", test_set, test_sampler)
    if config["mask_seen_items"] and config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        for loader, history in ((valid, [train_set]), (test, [train_set, valid_set])):
            if isinstance(loader, ScoreBoundedFullSortEvalDataLoader):
                loader.set_seen_items(sequential_seen_items(config, history, dataset.user_num, dataset.item_num))
    return train, valid, test
