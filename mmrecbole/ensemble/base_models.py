"""Base models of the stacker: trained with quick_start.run, or reused from earlier stacker runs.

The cache is one JSON file per trained base model under `<checkpoint_dir>/stacker-cache/`, keyed by (model,
config hash, dataset, seed, code version) as leaderboard runs are (leaderboard.provenance.cache_key: a base model
trained by other code is never reused): a stacker variant (other LightGBM settings, other candidates)
reuses the base models of the previous one instead of retraining them. One file per entry, written atomically, so
two processes never lose each other's entries. An entry whose checkpoint is gone or no longer fits the dataset is
ignored and the model retrained.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from mmrecbole.data.fileio import write_text_atomically
from mmrecbole.leaderboard import provenance

logger = logging.getLogger(__name__)

CACHE_FOLDER = "stacker-cache"
#: What a cache entry keeps of the base model's run (its row numbers, for the stacker's report).
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


def cache_entry_path(checkpoint_dir: str, name: str, config_hash: str, dataset: str, seed: int) -> str:
    key = provenance.cache_key(config_hash)  # config hash and this process's code version
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{dataset}-seed{seed}-{key}")
    return os.path.join(checkpoint_dir, CACHE_FOLDER, f"{slug}.json")


def cached_base_run(spec, dataset: str, seed: int, checkpoint_dir: str) -> BaseRun | None:
    path = cache_entry_path(checkpoint_dir, spec.name, spec.config_hash, dataset, seed)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        entry = json.load(f)
    key = (entry.get("model"), entry.get("config_hash"), entry.get("dataset"), entry.get("seed"),
           entry.get("code_version"))
    if (key != (spec.name, spec.config_hash, dataset, seed, provenance.code_version())
            or not os.path.isfile(entry.get("checkpoint", ""))):
        logger.warning(f"stacker cache entry {path} does not match or its checkpoint is gone: retraining {spec.label}")
        return None
    return BaseRun(spec.label, spec.name, spec.config_hash, entry["checkpoint"], entry["result"], reused=True)


def train_base_model(spec, dataset: str, show_progress, log_dir: str, console_log: bool) -> dict:
    """Train one base model with quick_start.run (saved checkpoint, the usual protocol); its result dict."""
    from mmrecbole import quick_start

    return quick_start.run(spec.name, dataset, config_dict=spec.run_settings, saved=True,
                           show_progress=show_progress, log_dir=log_dir, console_log=console_log)


def ensure_base_run(spec, dataset: str, seed: int, checkpoint_dir: str, show_progress=False, log_dir="log",
                    console_log=True, retrain=False) -> BaseRun:
    """The cached run of `spec` when there is one (and not `retrain`), else a fresh training run recorded in the
    cache."""
    cached = None if retrain else cached_base_run(spec, dataset, seed, checkpoint_dir)
    if cached is not None:
        logger.info(f"base model {spec.label}: reusing {cached.checkpoint} (config {spec.config_hash}, seed {seed})")
        return cached
    logger.info(f"base model {spec.label}: training {spec.name} (config {spec.config_hash}, seed {seed})")
    result = train_base_model(spec, dataset, show_progress, log_dir, console_log)
    entry_path = cache_entry_path(checkpoint_dir, spec.name, spec.config_hash, dataset, seed)
    # RecBole names checkpoints <model>-<time to the second>.pth: two variants of one model trained within a second
    # (fast one-pass models) would overwrite each other. Move it beside its cache entry, under the entry's key.
    checkpoint = os.path.abspath(entry_path[: -len(".json")] + ".pth")
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    os.replace(result["checkpoint"], checkpoint)
    kept = record_base_run(checkpoint_dir, spec.name, spec.label, spec.config_hash, dataset, seed, checkpoint, result)
    return BaseRun(spec.label, spec.name, spec.config_hash, checkpoint, kept, reused=False)


def record_base_run(checkpoint_dir, name, label, config_hash, dataset, seed, checkpoint, result) -> dict:
    """Write the cache entry of a trained model run (quick_start.run's result; `checkpoint` absolute) and return
    the part of the result it keeps. The leaderboard runner records its model rows here too, so a stacker row of
    the same leaderboard reuses them instead of training its base models again."""
    kept = {k: result.get(k) for k in _RESULT_KEYS}
    entry = {"model": name, "label": label, "config_hash": config_hash, "dataset": dataset, "seed": seed,
             "code_version": provenance.code_version(), "checkpoint": checkpoint, "result": kept}
    write_text_atomically(cache_entry_path(checkpoint_dir, name, config_hash, dataset, seed),
                          json.dumps(entry, indent=1))
    return kept


def load_base_model(run: BaseRun, dataset: str):
    """quick_start.LoadedRun of a base run (model in eval mode, its own data split); CheckpointError if the
    checkpoint no longer fits the dataset."""
    from mmrecbole import quick_start

    return quick_start.load_run(run.checkpoint, expect_model=run.name, expect_dataset=dataset)
