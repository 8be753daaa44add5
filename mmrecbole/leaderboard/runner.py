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

import collections
import json
import os
import subprocess
import sys
import threading
import time

from mmrecbole import registry
from mmrecbole.config import Config
from mmrecbole.errors import UserError
from mmrecbole import provenance
from mmrecbole.runs import RunCache, config_hash, make_record
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry
from mmrecbole import contract
from mmrecbole.progress import StatusLine, describe

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


def _run_child(run: PlannedRun, spec: LeaderboardSpec, timeout, on_event):
    """Run one (row, seed) in a child process; `on_event(event)` gets its progress events as they come.
    Returns (result, None) or (None, error line)."""
    request = {"model": run.entry.name, "dataset": spec.dataset, "settings": run.settings,
               "checkpoint_dir": _checkpoint_dir(spec), "run_cache_dir": run_cache(spec).folder,
               "log_dir": os.path.join(spec.cache_dir, "logs")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mmrecbole.leaderboard.job"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    stderr_tail, results, logs = collections.deque(maxlen=50), [], []

    def read_stdout():
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(line[len("RESULT "):])
            elif line.startswith("PROGRESS "):
                event = json.loads(line[len("PROGRESS "):])
                if event.get("kind") == "log" and not logs:
                    logs.append(event["path"])  # the run's own log (a stacker's base models have theirs too)
                on_event(event)

    def read_stderr():  # drained as it comes, so a chatty child never blocks on a full pipe
        for line in proc.stderr:
            stderr_tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for reader in readers:
        reader.start()
    proc.stdin.write(json.dumps(request))
    proc.stdin.close()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    for reader in readers:
        reader.join()
    wall = time.perf_counter() - start
    see_log = f" (log: {os.path.relpath(logs[0])})" if logs else ""
    if timed_out:
        return None, f"{run.entry.label} seed {run.seed} timed out after {timeout:.0f} s{see_log}"
    if proc.returncode != 0 or not results:
        error = next((line for line in reversed(stderr_tail) if line.strip()), "no output")
        return None, f"{run.entry.label} seed {run.seed} failed (exit {proc.returncode}): {error}{see_log}"
    result = json.loads(results[-1])
    result["wall_seconds"] = wall
    return result, None


def run_leaderboard(spec: LeaderboardSpec, force=False, timeout=None, echo=print, report_only=False,
                    status=None) -> dict:
    """Run what is missing, then write the report. Returns {"runs": [...], "failures": [...], "report": {...}}.

    `echo` gets one line per run (started, cached, result); `status` (default: a progress.StatusLine on stdout when
    `echo` is print, else nothing) shows the running child's epochs on one updating line.

    `report_only`: run nothing; report the cached runs and list the missing ones (e.g. while a long leaderboard
    is still running in another process)."""
    from mmrecbole.leaderboard.report import write_report

    runs = plan(spec)
    if status is None:
        status = StatusLine() if echo is print else None
    say = echo if status is None else (lambda text: (status.clear(), echo(text)))
    commit = provenance.code_commit()  # stamped on each new run, with the code version (part of the run's key)
    records, failures = [], []
    for index, run in enumerate(runs, 1):
        tag = f"[{index}/{len(runs)}] {run.entry.label} seed {run.seed}"
        cached = None if force else run.cached()
        if cached is not None:
            say(f"{tag}: cached ({os.path.relpath(run.path)})")
            records.append(cached)
            continue
        if report_only:
            failures.append(f"{run.entry.label} seed {run.seed}: not run yet")
            continue
        say(f"{tag}: running {run.entry.name} ...")

        def on_event(event, tag=tag, name=run.entry.name):
            if status is not None and event.get("kind") in ("epoch", "step"):
                status.show(f"{tag}: {event.get('model', name)} {describe(event)}")

        result, error = _run_child(run, spec, timeout, on_event)
        if error:
            say(f"{tag}: {error}")
            failures.append(error)
            continue
        # The child reports the code version it ran; it differs from the planned one only when the code changed while
        # this leaderboard ran: the run is then stored (and reported) under the version that computed it.
        version = result.pop("code_version", None) or run.code_version
        if version != run.code_version:
            say(f"{tag}: the code changed during the leaderboard (code version {run.code_version} -> {version}): "
                "this run is recorded under the new version; the board will say it mixes code versions")
        record = make_record(result, label=run.entry.label, config_hash=run.hash, settings=run.entry.settings,
                             uses_content=run.uses_content, code_version=version, commit=commit)
        run.cache.put(record)
        records.append(record)
        test = record["test"]
        say(f"{tag}: test {spec.significance_metric}={test.get(spec.significance_metric, float('nan')):.4f} "
            f"(train {record['train_seconds']:.0f} s)")
    if not records:
        raise UserError("no leaderboard run finished: " + "; ".join(failures))
    report = write_report(spec, records, failures)
    return {"runs": records, "failures": failures, "report": report}
