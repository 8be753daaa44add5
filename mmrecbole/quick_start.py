"""Train-and-evaluate one model (`run`) and reload a saved one (`load`).

The protocol is RecBole's: fit on the training split, early-stop on the validation metric, reload the best
checkpoint, read the test split once.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from mmrecbole import checkpoint, compat, distributed, refit_users, registry
from mmrecbole.config import Config
from mmrecbole.errors import CheckpointError, ConfigError, UserError
from mmrecbole.data.build import (build_dataloaders, create_dataset, ensure_dataset_files, restrict_evaluation,
                                  restrict_training)
from mmrecbole.features import attach_item_content
from mmrecbole.log import setup_logging
from mmrecbole.runs import RunResult
from mmrecbole import export
from mmrecbole import contract, progress
from mmrecbole.trainer import make_trainer

logger = logging.getLogger(__name__)


def _metrics(result) -> dict:
    return {k: float(v) for k, v in (result or {}).items()}


@contextmanager
def log_named_in_errors(log_file: str):
    """A UserError raised inside names the run's log file, which keeps the run's settings and output up to it."""
    try:
        yield
    except UserError as exc:
        raise type(exc)(f"{' '.join(str(exc).split())} (log: {os.path.relpath(log_file)})") from exc


def build(config: Config, dataset=None):
    """(dataset, train, valid, test, model) for a config, seeded as RecBole's run_recbole does (`dataset`: one
    create_dataset already made for this config). A content model's feature tables are loaded (or built) here,
    before the model is constructed."""
    compat.set_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config) if dataset is None else dataset
    train, valid, test = build_dataloaders(config, dataset)
    if contract.reads_item_content(config):
        attach_item_content(config, compat.dataset_of(train))
    compat.set_seed(config["seed"], config["reproducibility"])
    model = config.model_class(config, compat.dataset_of(train)).to(config["device"])
    rank, _ = distributed.rank_and_world(config)
    if rank:  # DDP: negatives and dropout differ per rank; the parameters are rank 0's (DDP broadcasts them)
        compat.set_seed(config["seed"] + rank, config["reproducibility"])
    return dataset, train, valid, test, model


def run(model, dataset, config_file_list=None, config_dict=None, cmd_dict=None, saved=True, show_progress=None,
        log_dir="log", console_log=True, cmd_text=None) -> dict:
    """Train `model` on `dataset`, early-stopping on validation; evaluate the best checkpoint on test.

    Returns `mmrecbole.runs.RunResult(...).to_dict()` (its fields: metrics at the best validation epoch, test,
    validation history, timings, learned values, checkpoint, per-user test metrics...).

    A pipeline name (registry.PIPELINES, e.g. LGBMStacker) runs that pipeline instead; it returns a RunResult too.
    """
    pipeline = registry.get_pipeline(model)
    if pipeline is not None:
        return pipeline.run(dataset, config_file_list=config_file_list, config_dict=config_dict, cmd_dict=cmd_dict,
                            saved=saved, show_progress=show_progress, log_dir=log_dir, console_log=console_log,
                            cmd_text=cmd_text)
    config = Config(model, dataset, config_file_list, config_dict, cmd_dict, cmd_text)
    launch = distributed.Launch.from_config(config)
    if launch is not None:  # nproc / world_size > 1: this process starts the ranks and returns rank 0's result
        distributed.check_trainable(config)
        return distributed.spawn(_run_rank, launch, (model, dataset, config_file_list, config_dict, cmd_dict,
                                                     cmd_text, saved, show_progress, log_dir, console_log))
    return _train_and_test(config, saved, show_progress, log_dir, console_log)


def _run_rank(local_rank, launch, model, dataset, config_file_list, config_dict, cmd_dict, cmd_text, saved,
              show_progress, log_dir, console_log):
    """One process of a DDP run (started by mmrecbole.distributed.spawn): its rank's config, the same training."""
    config = Config(model, dataset, config_file_list, config_dict, cmd_dict, cmd_text, rank=(local_rank, launch))
    return _train_and_test(config, saved, show_progress, log_dir, console_log and distributed.is_main(config))


def _train_and_test(config, saved, show_progress, log_dir, console_log) -> dict:
    ensure_dataset_files(config)
    log_file = setup_logging(config, log_dir=log_dir, console=console_log)
    progress.report("log", model=config["model"], path=os.path.abspath(log_file))
    logger.info(config)
    for warning in config.warnings:
        logger.warning(warning)
    with log_named_in_errors(log_file):
        data, train, valid, test, model_obj = build(config)
        logger.info(data)
        logger.info(model_obj)
        trainer = make_trainer(config, model_obj)
        bars = config["show_progress"] if show_progress is None else show_progress
        fit_start = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(train, valid, saved=saved, show_progress=bars)
        train_seconds = time.perf_counter() - fit_start
    return _finish(config, data, train, test, model_obj, trainer, saved, bars, best_valid_score, best_valid_result,
                   train_seconds, log_file).to_dict()


def _finish(config, data, train, test, model_obj, trainer, saved, bars, best_valid_score, best_valid_result,
            train_seconds, log_file) -> RunResult:
    """Test the best checkpoint once, write the serving bundle, and collect the run's RunResult."""
    history, best_epoch = trainer.valid_history, trainer.best_epoch
    start = time.perf_counter()
    test_result = trainer.evaluate(test, load_best_model=saved, show_progress=bars)
    test_seconds = time.perf_counter() - start
    per_user = getattr(trainer, "last_per_user", None)
    epochs_run = history[-1][0] + 1 if history else int(trainer.epochs)
    bundle = None
    if saved and config["save_bundle"] and export.servable(config.model_class) and distributed.is_main(config):
        bundle = export.write(export.bundle_path_for(trainer.saved_model_file),
                                 checkpoint_path=trainer.saved_model_file, config=config, dataset=data,
                                 train_dataset=compat.dataset_of(train), model=model_obj)
        logger.info(f"serving bundle: {bundle}")
    return RunResult(
        model=config["model"],
        dataset=config["dataset"],
        seed=config["seed"],
        valid_metric=config["valid_metric"].lower(),
        best_valid_score=float(best_valid_score),
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        epochs_budget=int(trainer.epochs),
        stopped_early=epochs_run < int(trainer.epochs),
        fitted_once=contract.capabilities(config.model_class).fits_once,
        valid=_metrics(best_valid_result),
        test=_metrics(test_result),
        valid_history=history,
        seconds_to_best=next((t for e, _, t in history if e == best_epoch), None),
        train_seconds=train_seconds,
        test_seconds=test_seconds,
        n_parameters=contract.learned_value_count(model_obj),
        checkpoint=trainer.saved_model_file if saved else None,
        log_file=log_file,
        test_per_user={k: [round(float(x), 6) for x in v] if k != "user_id" else list(v)
                       for k, v in per_user.items()} if per_user else None,
        bundle=bundle,
        extra={"world_size": distributed.rank_and_world(config)[1]} if distributed.is_distributed(config) else {},
    )


def fit_on_validation(config: Config, on_validation=None, log_dir="log", console_log=False):
    """Train `config` with early stopping on validation and never read the test split: (best validation score, the
    validation metrics at it). No checkpoint is written. `on_validation(epoch, score)` runs after each validation
    (a tuner reports to its pruner there, and may raise to stop the run)."""
    _refuse_distributed(config, "a tuning trial")
    ensure_dataset_files(config)
    log_file = setup_logging(config, log_dir=log_dir, console=console_log)
    logger.info(config)
    with log_named_in_errors(log_file):
        _, train, valid, _, model_obj = build(config)
        trainer = make_trainer(config, model_obj)
        score, result = trainer.fit(train, valid, saved=False, show_progress=False, callback_fn=on_validation)
    return float(score), _metrics(result)


def _refuse_distributed(config, what: str) -> None:
    if distributed.Launch.from_config(config) is not None:
        raise ConfigError(f"{what} trains in one process; nproc / world_size > 1 (DDP) applies to a training run "
                          "(--model --dataset): set nproc: 1")


@dataclass
class LoadedRun:
    config: Config
    dataset: object
    model: object
    train: object
    valid: object
    test: object
    checkpoint: checkpoint.Checkpoint


def load_run(path, expect_model: str | None = None, expect_dataset: str | None = None) -> LoadedRun:
    """Rebuild config, data split and model from a checkpoint and restore its weights (eval mode)."""
    ckpt = checkpoint.read(path)
    ckpt.check_matches(expect_model or ckpt.model, expect_dataset or ckpt.dataset)
    config = Config(ckpt.model, ckpt.dataset, config_dict=ckpt.config)
    dataset, train, valid, test, model = build(config)
    ckpt.check_matches(ckpt.model, ckpt.dataset, checkpoint.dataset_fingerprint(dataset))
    ckpt.restore_into(model, device=config["device"])
    model.eval()
    return LoadedRun(config, dataset, model, train, valid, test, ckpt)


#: A refit dataset must still hold at least this share of the old model's users and items: less is another dataset.
MIN_KEPT_SHARE = 0.5


def _refit_parent(path):
    """(bundle, checkpoint or None) of the model to refit: a bundle, or a checkpoint with its bundle beside it (the
    bundle holds the raw-id maps the model was trained with; the checkpoint the optimizer state)."""
    path = str(path)
    bundle_file = path if path.endswith(export.SUFFIX) else export.bundle_path_for(path)
    if not os.path.isfile(bundle_file):
        raise CheckpointError(f"no bundle {bundle_file} beside {path}: a refit needs the raw-id maps the model was "
                              "trained with, which its bundle keeps (written after training; for an older checkpoint "
                              "write it with --bundle --checkpoint=PATH before the dataset changes)")
    parent = export.read(bundle_file)
    ckpt_file = path if not path.endswith(export.SUFFIX) else parent.meta.get("checkpoint", {}).get("path")
    ckpt = checkpoint.read(ckpt_file) if ckpt_file and os.path.isfile(ckpt_file) else None
    return parent, ckpt


def _carried_settings(parent) -> dict:
    """The old model's own settings (its property file's keys) and seed: what its tensors' shapes depend on. Protocol,
    dataset and training-loop settings come from the new dataset's files and the caller."""
    from mmrecbole.config import our_model_keys

    owned = our_model_keys().get(parent.model) or compat.recbole_model_keys().get(parent.model) or frozenset()
    return {k: v for k, v in parent.config.items() if k in owned or k == "seed"}


def _whom_to_refit(config, parent, users, data) -> tuple:
    """(updated, trained): bool arrays by new internal user id of the users with interactions the parent never saw
    and of the users the refit trains on (mmrecbole.refit_users). Read before `build`: the interactions are still
    one row each then."""
    counts = np.bincount(np.asarray(data.inter_feat[data.uid_field], dtype=np.int64), minlength=data.user_num)
    updated = refit_users.updated_users(users.old_rows, users.new_rows,
                                        np.diff(np.asarray(parent.history["indptr"])), counts)
    replay, valid_users = config["refit_replay"], config["refit_valid_users"]
    if not updated.any() and (replay < 1 or valid_users == "updated"):
        raise ConfigError(f"{config['dataset']} holds no interaction that {parent.model} ({parent.dataset}) has not "
                          "seen: refit_replay below 1.0 and refit_valid_users: updated need updated users")
    trained = refit_users.replay_users(updated, replay, config["seed"])
    logger.info(f"refit trains on {int(trained.sum())} users ({int(updated.sum())} with new interactions, "
                f"refit_replay {replay} of the others) and validates on "
                f"{'those ' + str(int(updated.sum())) if valid_users == 'updated' else 'all'}")
    return updated, trained


def refit(checkpoint_path, dataset, config_file_list=None, config_dict=None, cmd_dict=None, cmd_text=None,
          saved=True, show_progress=None, log_dir="log", console_log=True) -> dict:
    """Continue training a saved model on a grown version of its dataset (newer interactions, new users and items).

    Rows follow raw ids (mmrecbole.id_transfer): every known user and item keeps its trained parameters, new ones
    start at zero or at the kept rows' mean (`refit_new_rows`; content models: plus their features), the optimizer's
    moments move with their rows; `refit_shrink` / `refit_perturb` < 1 / > 0 shrink the carried weights towards a
    fresh initialisation instead (Ash & Adams' shrink and perturb; the optimizer then starts afresh); training
    early-stops on the new validation split (`refit_valid_users: updated`: the part of it of the users with new
    interactions; `refit_replay` < 1 trains on those users plus that share of the others) and the test split is
    read once, as in `run`. Returns `run`'s dict plus `parent` (the old checkpoint or bundle) and `refit` (kept /
    added / dropped counts; users also updated / trained). The new checkpoint's metadata names its parent."""
    from mmrecbole.id_transfer import IdMap, restarts, shrink_perturb, transfer_optimizer_state, transfer_state

    parent, parent_ckpt = _refit_parent(checkpoint_path)
    config = Config(parent.model, dataset, config_file_list, {**_carried_settings(parent), **(config_dict or {})},
                    cmd_dict, cmd_text)
    _refuse_distributed(config, "--refit")
    shrink, perturb = config["refit_shrink"], config["refit_perturb"]
    restarted = restarts(shrink, perturb)
    if restarted and contract.capabilities(config.model_class).fits_once:
        raise ConfigError(f"refit_shrink / refit_perturb apply to gradient-trained models; {parent.model} refits by "
                          "a warm-started fit of its carried factors: leave them at 1.0 / 0.0")
    replay, valid_users = config["refit_replay"], config["refit_valid_users"]
    refit_users.check_settings(replay, valid_users)
    if replay < 1 and contract.capabilities(config.model_class).fits_once:
        raise ConfigError(f"refit_replay applies to gradient-trained models; {parent.model} refits in one pass over "
                          "all the data: leave it at 1.0")
    ensure_dataset_files(config)
    log_file = setup_logging(config, log_dir=log_dir, console=console_log)
    logger.info(config)
    with log_named_in_errors(log_file):
        data = create_dataset(config)
        users = IdMap.between(parent.user_ids, data.field2id_token[data.uid_field])
        items = IdMap.between(parent.item_ids, data.field2id_token[data.iid_field])
        for label, ids, count in (("users", users, len(parent.user_ids) - 1), ("items", items,
                                                                                len(parent.item_ids) - 1)):
            if ids.kept_share < MIN_KEPT_SHARE:
                raise CheckpointError(f"{dataset} holds only {ids.kept_share:.0%} of the {count} {label} "
                                      f"{parent.model} was trained on ({parent.dataset}); a refit continues on the "
                                      "same data grown, not on another dataset: train a new model")
            if ids.dropped:
                logger.warning(f"refit: {len(ids.dropped)} {label} of the old model are not in {dataset} (e.g. "
                               f"{ids.dropped[:3]}): their parameters are dropped")
        updated, trained = _whom_to_refit(config, parent, users, data)  # before build(), which reshapes data
        data, train, valid, test, model = build(config, data)
        fit_train = restrict_training(config, train, trained) if replay < 1 else train
        if valid_users == "updated":
            valid = restrict_evaluation(config, "valid", valid, updated)
        old_state = {k: torch.as_tensor(v) for k, v in parent.state_dict.items()}
        new_state = model.state_dict()
        # perturb's noise is the fresh init; copied only when used (load_state_dict overwrites new_state's tensors)
        fresh = {k: v.clone() for k, v in new_state.items()} if restarted else new_state
        trainable = [name for name, param in model.named_parameters() if param.requires_grad]
        moved = transfer_state(old_state, new_state, users, items, config["refit_new_rows"])
        model.load_state_dict(shrink_perturb(moved, fresh, trainable, shrink, perturb))
        contract.prepare_refit(model)
        trainer = make_trainer(config, model)
        trainer.parent_checkpoint = os.path.abspath(parent_ckpt.path if parent_ckpt else parent.path)
        # Shrunk weights start a new optimisation: the old Adam moments describe the old point, not this one.
        if parent_ckpt is not None and parent_ckpt.optimizer_state and getattr(trainer, "optimizer", None) \
                and not restarted:
            names = [name for name, _ in model.named_parameters()]
            trainer.optimizer.load_state_dict(transfer_optimizer_state(
                parent_ckpt.optimizer_state, trainer.optimizer.state_dict(), names, old_state, new_state, users, items))
        bars = config["show_progress"] if show_progress is None else show_progress
        fit_start = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(fit_train, valid, saved=saved, show_progress=bars)
        train_seconds = time.perf_counter() - fit_start
    summary = {"users": {"kept": len(users.old_rows) - 1, "added": len(users.added), "dropped": len(users.dropped),
                         "updated": int(updated.sum()), "trained": int(trained.sum())},
               "items": {"kept": len(items.old_rows) - 1, "added": len(items.added), "dropped": len(items.dropped)}}
    logger.info(f"refit from {trainer.parent_checkpoint}: {summary}")
    result = _finish(config, data, train, test, model, trainer, saved, bars, best_valid_score, best_valid_result,
                     train_seconds, log_file)
    result.extra = {"parent": trainer.parent_checkpoint, "refit": summary}
    return result.to_dict()


def write_bundle(checkpoint_path, path=None) -> str:
    """Write the serving bundle of a saved checkpoint (default: beside it, `<stem>.bundle`): its dataset and split
    are rebuilt once, here, so that serving never needs them."""
    loaded = load_run(checkpoint_path)
    export.check_servable(loaded.config.model_class)
    return export.write(path or export.bundle_path_for(checkpoint_path), checkpoint_path=checkpoint_path,
                           config=loaded.config, dataset=loaded.dataset, train_dataset=compat.dataset_of(loaded.train),
                           model=loaded.model)


def load(path):
    """(config, dataset, model) from a checkpoint, ready to predict."""
    loaded = load_run(path)
    return loaded.config, loaded.dataset, loaded.model


def evaluate_checkpoint(path, expect_model=None, expect_dataset=None, show_progress=False) -> dict:
    """Validation and test metrics of a saved checkpoint, through the same trainer code as training."""
    loaded = load_run(path, expect_model, expect_dataset)
    config = loaded.config
    trainer = make_trainer(config, loaded.model)
    valid = trainer.evaluate(loaded.valid, load_best_model=True, model_file=str(path), show_progress=show_progress)
    test = trainer.evaluate(loaded.test, load_best_model=False, show_progress=show_progress)
    return {"model": config["model"], "dataset": config["dataset"], "valid": _metrics(valid), "test": _metrics(test),
            "checkpoint": str(path), "training": loaded.checkpoint.training}
