"""A run, its key and its cache: what the leaderboard and the stacker's base models share.

A *run* is one training-and-evaluation of one model on one dataset with one seed: `quick_start.run` and the
LGBMStacker pipeline both return its result as a `RunResult` dict. A *run record* is that result plus who and what
computed it (model, dataset, seed, config hash, code version, commit, label, row settings). Records are cached as
one JSON file each in a `RunCache` folder, keyed by (model, dataset, seed, config hash, code version): a leaderboard
never reruns a finished run, a stacker reuses its base models' runs (and a leaderboard's rows of the same models),
and a run computed by other code is never found.

Neither mmrecbole.leaderboard nor mmrecbole.ensemble owns this; both import it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Optional

from mmrecbole import provenance
from mmrecbole.data.fileio import write_text_atomically

logger = logging.getLogger(__name__)

#: Keys a single leaderboard row may not change: they define the protocol shared by all rows.
PROTOCOL_KEYS = ("eval_args", "metrics", "topk", "valid_metric", "mask_seen_items", "repeatable", "load_col",
                 "cold_start_item_ratio", "data_path", "benchmark_filename")

#: Settings that change how a run is shown, batched for evaluation or where files go, not what it computes
#: (evaluation batching changes no metric: tests/test_protocol.py checks it), or what serving shows.
PRESENTATION_KEYS = frozenset({"show_progress", "state", "checkpoint_dir", "run_cache_dir", "data_path", "gpu_id",
                               "worker", "eval_batch_size", "eval_sequence_rows", "save_bundle", "item_title_field",
                               "ip", "port", "group_offset"})


def config_hash(config) -> str:
    """12 hex digits over a resolved config's settings, except the seed (part of the key on its own) and the
    presentation keys. Any key's value counts, defaults included; the code version in the key covers the code."""
    plain = {k: v for k, v in config.resolved.items() if k not in PRESENTATION_KEYS and k != "seed"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclasses.dataclass
class RunResult:
    """What one run returns (`quick_start.run`, the stacker pipeline), as `to_dict()`.

    valid / test: metrics at the best validation epoch; valid_history: [(epoch, valid score, seconds since training
    started)]; seconds_to_best: training time until the best validation epoch; n_parameters: learned values;
    checkpoint: the saved model (a file, or the stacker's folder); bundle: its serving bundle; test_per_user:
    {"user_id": [...], "ndcg@10": [...], ...} for paired significance tests; extra: what a pipeline adds (the stacker: candidate recall, feature
    importance, base models, timings, notes...)."""

    model: str
    dataset: str
    seed: int
    valid_metric: str
    best_valid_score: float
    best_epoch: Optional[int]
    epochs_run: int
    epochs_budget: int
    stopped_early: bool
    fitted_once: bool
    valid: dict
    test: dict
    valid_history: list
    seconds_to_best: Optional[float]
    train_seconds: float
    test_seconds: float
    n_parameters: int
    checkpoint: Optional[str]
    log_file: Optional[str]
    test_per_user: Optional[dict]
    progress_unit: str = "epochs"
    bundle: Optional[str] = None  # the serving bundle written beside the checkpoint (mmrecbole.serving), if any
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        clash = set(values) & set(self.extra)
        if clash:
            raise ValueError(f"RunResult.extra may not redefine {sorted(clash)}")
        return {**values, **self.extra}


def make_record(result: dict, *, label: str, config_hash: str, settings: dict, uses_content: bool,
                code_version: Optional[str] = None, commit: Optional[str] = None) -> dict:
    """A run record: the result plus what computed it (code version and commit of this process by default)."""
    return {"label": label, "model": result["model"], "seed": result["seed"], "config_hash": config_hash,
            "dataset": result["dataset"], "uses_content": bool(uses_content), "settings": settings,
            "code_version": code_version or provenance.code_version(),
            "commit": commit or provenance.code_commit(), **result}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class RunCache:
    """One JSON record per run under `folder`, named by its key, written atomically (two processes never lose
    each other's records; an interrupted run leaves no file)."""

    def __init__(self, folder: str):
        self.folder = str(folder)

    def path(self, model: str, dataset: str, seed: int, config_hash: str, code_version: Optional[str] = None) -> str:
        key = f"{config_hash}-{code_version or provenance.code_version()}"
        return os.path.join(self.folder, _slug(f"{model}-{dataset}-seed{seed}-{key}") + ".json")

    def get(self, model: str, dataset: str, seed: int, config_hash: str) -> Optional[dict]:
        """The record of this run computed by this process's code, or None (absent, or another run's file)."""
        path = self.path(model, dataset, seed, config_hash)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:  # truncated by a full disk or a copy cut short
            logger.warning(f"run cache {path} is unreadable ({' '.join(str(exc).split())[:120]}): that run is "
                           "re-run and the file replaced")
            return None
        identity = (record.get("model"), record.get("dataset"), record.get("seed"), record.get("config_hash"),
                    record.get("code_version"))
        if identity != (model, dataset, seed, config_hash, provenance.code_version()):
            return None
        return record

    def put(self, record: dict) -> str:
        """Store a record under its own key (its code version: the code that computed it); returns the path."""
        path = self.path(record["model"], record["dataset"], record["seed"], record["config_hash"],
                         record["code_version"])
        write_text_atomically(path, json.dumps(record, indent=1))
        return path
