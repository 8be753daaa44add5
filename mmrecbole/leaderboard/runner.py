"""Run a leaderboard: every (row, seed) once, each in its own process, cached as JSON.

A run is keyed by (model, hash of its resolved config, dataset, seed, code version): re-running skips finished runs,
an interrupted leaderboard resumes where it stopped (results are written atomically, so a half-finished run leaves no
file), and changing one row's settings (or a property file it reads) re-runs that row only. Any change to the code
that computes runs (a .py file of the package, a property file, a version of the packages that compute results:
provenance.code_version) re-runs every row: a board never mixes runs of different code. `force` re-runs all.

Each run is a child process (`python -m mmrecbole.leaderboard.job`): RecBole keeps global state (seeds, logging,
autograd flags), a crash or out-of-memory in one model does not end the leaderboard, and the child's peak memory
is the run's own.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time

from mmrecbole import registry
from mmrecbole.config import Config
from mmrecbole.errors import UserError
from mmrecbole.data.fileio import write_text_atomically
from mmrecbole.leaderboard import provenance
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry
from mmrecbole import contract

#: Settings that change how a run is shown, batched for evaluation or where files go, not what it computes
#: (evaluation batching changes no metric: tests/test_protocol.py checks it).
_PRESENTATION_KEYS = {"show_progress", "state", "checkpoint_dir", "data_path", "gpu_id", "worker", "eval_batch_size"}


# Keys added after runs were cached whose default reproduces the earlier behaviour exactly: at that default they stay
# out of the hash, so adding such a key does not orphan the run cache; any other value is hashed as usual. (The run
# key now holds the code version too, which changes with any code change, so this matters only for the config hash.)
_KEYS_NEUTRAL_AT_DEFAULT = {"window_bucketing": True, "torch_compile": False, "window_context": 0,
                            "window_batch_targets": 0, "window_shift": False, "position_encoding": "absolute"}


def config_hash(config: Config) -> str:
    plain = {k: v for k, v in config.resolved.items() if k not in _PRESENTATION_KEYS and k != "seed"
             and not (k in _KEYS_NEUTRAL_AT_DEFAULT and v == _KEYS_NEUTRAL_AT_DEFAULT[k])}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


class PlannedRun:
    def __init__(self, spec: LeaderboardSpec, entry: ModelEntry, seed: int):
        self.entry, self.seed = entry, seed
        self.settings = spec.row_settings(entry, seed)
        pipeline = registry.get_pipeline(entry.name)
        if pipeline is not None:  # e.g. LGBMStacker: checks and hashes its own settings (and its base models')
            planned = pipeline.plan(spec.dataset, self.settings)
            self.uses_content, self.hash = planned.uses_content, planned.config_hash
        else:
            config = Config(entry.name, spec.dataset, config_dict=self.settings)  # fails fast on bad settings
            self.uses_content = contract.reads_item_content(config)
            self.hash = config_hash(config)
        self.code_version = provenance.code_version()
        self.path = self.path_for(spec, self.code_version)

    def path_for(self, spec: LeaderboardSpec, code_version: str) -> str:
        key = provenance.cache_key(self.hash, code_version)
        return os.path.join(spec.cache_dir, "runs", f"{_slug(self.entry.label)}-seed{self.seed}-{key}.json")

    def cached(self):
        if not os.path.isfile(self.path):
            return None
        with open(self.path, encoding="utf-8") as f:
            record = json.load(f)
        return record if record.get("code_version") == self.code_version else None


def plan(spec: LeaderboardSpec) -> list:
    return [PlannedRun(spec, entry, seed) for entry in spec.models for seed in spec.seeds]


def _checkpoint_dir(spec: LeaderboardSpec) -> str:
    return os.path.join(spec.cache_dir, "checkpoints")


def _run_child(run: PlannedRun, spec: LeaderboardSpec, timeout):
    request = {"model": run.entry.name, "dataset": spec.dataset, "settings": run.settings,
               "checkpoint_dir": _checkpoint_dir(spec),
               "log_dir": os.path.join(spec.cache_dir, "logs")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmrecbole.leaderboard.job"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{run.entry.label} seed {run.seed} failed (exit {proc.returncode}): {error}"
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = wall
    return result, None


def _offer_to_stacker(run: PlannedRun, spec: LeaderboardSpec, record: dict) -> None:
    """Record a model row's checkpoint in the stacker's base-model cache (same key: model, config hash, dataset,
    seed, code version), so that an LGBMStacker row of this leaderboard reuses it instead of training that model
    again."""
    checkpoint = record.get("checkpoint")
    if registry.get_pipeline(run.entry.name) is not None or not checkpoint or not os.path.isfile(checkpoint):
        return
    if record.get("code_version") != provenance.code_version():  # trained by other code (changed during the run)
        return
    from mmrecbole.ensemble.base_models import cache_entry_path, record_base_run

    folder = _checkpoint_dir(spec)
    if not os.path.isfile(cache_entry_path(folder, run.entry.name, run.hash, spec.dataset, run.seed)):
        record_base_run(folder, run.entry.name, run.entry.label, run.hash, spec.dataset, run.seed,
                        os.path.abspath(checkpoint), record)


def run_leaderboard(spec: LeaderboardSpec, force=False, timeout=None, echo=print, report_only=False) -> dict:
    """Run what is missing, then write the report. Returns {"runs": [...], "failures": [...], "report": {...}}.

    `report_only`: run nothing; report the cached runs and list the missing ones (e.g. while a long leaderboard
    is still running in another process)."""
    from mmrecbole.leaderboard.report import write_report

    runs = plan(spec)
    commit = provenance.code_commit()  # stamped on each new run, with the code version (part of the run's key)
    records, failures = [], []
    for index, run in enumerate(runs, 1):
        tag = f"[{index}/{len(runs)}] {run.entry.label} seed {run.seed}"
        cached = None if force else run.cached()
        if cached is not None:
            echo(f"{tag}: cached ({os.path.relpath(run.path)})")
            records.append(cached)
            _offer_to_stacker(run, spec, cached)
            continue
        if report_only:
            failures.append(f"{run.entry.label} seed {run.seed}: not run yet")
            continue
        echo(f"{tag}: running {run.entry.name} ...")
        result, error = _run_child(run, spec, timeout)
        if error:
            echo(f"{tag}: {error}")
            failures.append(error)
            continue
        # The child reports the code version it ran; it differs from the planned one only when the code changed while
        # this leaderboard ran: the run is then stored (and reported) under the version that computed it.
        version = result.pop("code_version", None) or run.code_version
        if version != run.code_version:
            echo(f"{tag}: the code changed during the leaderboard (code version {run.code_version} -> {version}): "
                 "this run is recorded under the new version; the board will say it mixes code versions")
        record = {"label": run.entry.label, "model": run.entry.name, "seed": run.seed, "config_hash": run.hash,
                  "dataset": spec.dataset, "uses_content": run.uses_content, "settings": run.entry.settings,
                  "code_version": version, "commit": commit, **result}
        write_text_atomically(run.path_for(spec, version), json.dumps(record, indent=1))
        records.append(record)
        _offer_to_stacker(run, spec, record)
        test = record["test"]
        echo(f"{tag}: test {spec.significance_metric}={test.get(spec.significance_metric, float('nan')):.4f} "
             f"(train {record['train_seconds']:.0f} s)")
    if not records:
        raise UserError("no leaderboard run finished: " + "; ".join(failures))
    report = write_report(spec, records, failures)
    return {"runs": records, "failures": failures, "report": report}
