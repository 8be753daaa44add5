"""Base models of the stacker: trained with quick_start.run, or reused from the run cache.

The cache is mmrecbole.runs.RunCache at `run_cache_dir` (default `<checkpoint_dir>/runs`; a leaderboard points its
children at its own `runs/` folder): the same records, under the same keys (model, dataset, seed, config hash, code
version), as a leaderboard's rows. So a stacker reuses a leaderboard's rows of its base models, a stacker variant
(other LightGBM settings, other candidates) reuses the base models of the previous one, and a base model trained by
other code is never reused. A record whose checkpoint is gone or no longer fits the dataset is ignored and the model
retrained.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from mmrecbole import contract
from mmrecbole.runs import RunCache, make_record

logger = logging.getLogger(__name__)

#: What the stacker's report keeps of a base model's run (its row numbers).
_RESULT_KEYS = ("valid", "test", "best_valid_score", "best_epoch", "epochs_run", "train_seconds", "test_seconds",
                "n_parameters", "log_file")


@dataclass
class BaseRun:
    """A trained base model: its checkpoint, the numbers of its own run, and whether it came from the cache."""

    label: str
    name: str
    config_hash: str
    checkpoint: str
    result: dict
    reused: bool


def run_cache(protocol) -> RunCache:
    """The run cache of a stacker run's protocol settings."""
    folder = protocol["run_cache_dir"] or os.path.join(protocol["checkpoint_dir"], "runs")
    return RunCache(folder)


def cached_base_run(spec, dataset: str, seed: int, cache: RunCache) -> BaseRun | None:
    record = cache.get(spec.name, dataset, seed, spec.config_hash)
    if record is None:
        return None
    if not record.get("checkpoint") or not os.path.exists(record["checkpoint"]):
        logger.warning(f"cached run of {spec.label} has no checkpoint any more: retraining it")
        return None
    return BaseRun(spec.label, spec.name, spec.config_hash, record["checkpoint"],
                   {k: record.get(k) for k in _RESULT_KEYS}, reused=True)


def train_base_model(spec, dataset: str, show_progress, log_dir: str, console_log: bool) -> dict:
    """Train one base model with quick_start.run (saved checkpoint, the usual protocol); its result dict."""
    from mmrecbole import quick_start

    return quick_start.run(spec.name, dataset, config_dict=spec.run_settings, saved=True,
                           show_progress=show_progress, log_dir=log_dir, console_log=console_log)


def ensure_base_run(spec, dataset: str, seed: int, cache: RunCache, show_progress=False, log_dir="log",
                    console_log=True, retrain=False) -> BaseRun:
    """The cached run of `spec` when there is one (and not `retrain`), else a fresh training run recorded in the
    cache."""
    cached = None if retrain else cached_base_run(spec, dataset, seed, cache)
    if cached is not None:
        logger.info(f"base model {spec.label}: reusing {cached.checkpoint} (config {spec.config_hash}, seed {seed})")
        return cached
    logger.info(f"base model {spec.label}: training {spec.name} (config {spec.config_hash}, seed {seed})")
    result = train_base_model(spec, dataset, show_progress, log_dir, console_log)
    record_path = cache.path(spec.name, dataset, seed, spec.config_hash)
    # RecBole names checkpoints <model>-<time to the second>.pth: two variants of one model trained within a second
    # (fast one-pass models) would overwrite each other. Move it beside its record, under the record's key.
    checkpoint = os.path.abspath(record_path[: -len(".json")] + ".pth")
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    os.replace(result["checkpoint"], checkpoint)
    result = {**result, "checkpoint": checkpoint}
    cache.put(make_record(result, label=spec.label, config_hash=spec.config_hash, settings=spec.settings,
                          uses_content=contract.reads_item_content(spec.config)))
    return BaseRun(spec.label, spec.name, spec.config_hash, checkpoint, {k: result.get(k) for k in _RESULT_KEYS},
                   reused=False)


def load_base_model(run: BaseRun, dataset: str):
    """quick_start.LoadedRun of a base run (model in eval mode, its own data split); CheckpointError if the
    checkpoint no longer fits the dataset."""
    from mmrecbole import quick_start

    return quick_start.load_run(run.checkpoint, expect_model=run.name, expect_dataset=dataset)
