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

import json
import os
import subprocess
import sys
import time

from mmrecbole import registry
from mmrecbole.config import Config
from mmrecbole.errors import UserError
from mmrecbole import provenance
from mmrecbole.runs import RunCache, config_hash, make_record
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry
from mmrecbole import contract

class PlannedRun:
    def __init__(self, spec: LeaderboardSpec, entry: ModelEntry, seed: int):
        self.entry, self.seed, self.dataset = entry, seed, spec.dataset
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
        self.cache = run_cache(spec)
        self.path = self.cache.path(entry.name, spec.dataset, seed, self.hash)

    def cached(self):
        """This row's cached run (computed by this code), labelled as this row; None when there is none."""
        record = self.cache.get(self.entry.name, self.dataset, self.seed, self.hash)
        if record is None:
            return None
        return {**record, "label": self.entry.label, "settings": self.entry.settings,
                "uses_content": self.uses_content}


def plan(spec: LeaderboardSpec) -> list:
    return [PlannedRun(spec, entry, seed) for entry in spec.models for seed in spec.seeds]


def _checkpoint_dir(spec: LeaderboardSpec) -> str:
    return os.path.join(spec.cache_dir, "checkpoints")


def run_cache(spec: LeaderboardSpec) -> RunCache:
    """The board's run records; its children (a stacker row's base models too) record and reuse runs here."""
    return RunCache(os.path.join(spec.cache_dir, "runs"))


def _run_child(run: PlannedRun, spec: LeaderboardSpec, timeout):
    request = {"model": run.entry.name, "dataset": spec.dataset, "settings": run.settings,
               "checkpoint_dir": _checkpoint_dir(spec), "run_cache_dir": run_cache(spec).folder,
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
        record = make_record(result, label=run.entry.label, config_hash=run.hash, settings=run.entry.settings,
                             uses_content=run.uses_content, code_version=version, commit=commit)
        run.cache.put(record)
        records.append(record)
        test = record["test"]
        echo(f"{tag}: test {spec.significance_metric}={test.get(spec.significance_metric, float('nan')):.4f} "
             f"(train {record['train_seconds']:.0f} s)")
    if not records:
        raise UserError("no leaderboard run finished: " + "; ".join(failures))
    report = write_report(spec, records, failures)
    return {"runs": records, "failures": failures, "report": report}
