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
from concurrent.futures import ThreadPoolExecutor

from mmrecbole import registry
from mmrecbole.config import Config
from mmrecbole.data.build import ensure_dataset_files
from mmrecbole.errors import UserError
from mmrecbole import provenance
from mmrecbole.runs import RunCache, config_hash, make_record
from mmrecbole.leaderboard.scheduling import start_order, worker_gpu, worker_slot
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry
from mmrecbole.leaderboard import tuning
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
            self.modalities = ()  # a pipeline runs after the model rows, whose feature tables exist by then
            self.config = None
        else:
            config = Config(entry.name, spec.dataset, config_dict=self.settings)  # fails fast on bad settings
            self.uses_content = contract.reads_item_content(config)
            self.hash = config_hash(config)
            self.modalities = tuple(config["modalities"]) if self.uses_content else ()
            self.config = config
        self.seed_independent = self.config is not None and contract.capabilities(
            self.config.model_class).seed_independent  # trained once, at the board's first seed
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


def threads_per_run(jobs: int) -> int | None:
    """Torch threads of each child when `jobs` run at a time (None: torch's own choice, for one at a time)."""
    return None if jobs <= 1 else max(1, (os.cpu_count() or 1) // jobs)


def _run_child(run: PlannedRun, spec: LeaderboardSpec, timeout, on_event):
    """Run one (row, seed) in a child process; `on_event(event)` gets its progress events as they come.
    Returns (result, None) or (None, error line)."""
    gpu = worker_gpu(spec)  # gpu_id is a presentation key: the run's cache key does not change with it
    settings = run.settings if gpu is None else {**run.settings, "gpu_id": gpu}
    request = {"model": run.entry.name, "dataset": spec.dataset, "settings": settings,
               "checkpoint_dir": _checkpoint_dir(spec), "run_cache_dir": run_cache(spec).folder,
               "log_dir": os.path.join(spec.cache_dir, "logs"), "concurrent_runs": spec.jobs,
               "threads": threads_per_run(spec.jobs)}
    return run_job(request, f"{run.entry.label} seed {run.seed}", timeout, on_event)


def run_job(request: dict, what: str, timeout, on_event):
    """Run one job request (mmrecbole.leaderboard.job) in a child process; `what` names it in errors.
    Returns (result, None) or (None, error line)."""
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
        return None, f"{what} timed out after {timeout:.0f} s{see_log}"
    if proc.returncode != 0 or not results:
        error = next((line for line in reversed(stderr_tail) if line.strip()), "no output")
        return None, f"{what} failed (exit {proc.returncode}): {error}{see_log}"
    result = json.loads(results[-1])
    result["wall_seconds"] = wall
    return result, None


def feature_tables_to_prepare(spec: LeaderboardSpec, runs) -> tuple:
    """The modalities a parallel board builds once, beside its first runs, before any content run starts: those its
    content rows read, when every row finds its feature tables the default way (no row or board setting names
    feature files or feature settings; then the rows build them themselves, as a board of one job at a time does)."""
    from mmrecbole.features import FEATURE_DEFAULTS

    feature_keys = set(FEATURE_DEFAULTS) | {"mm_feature_files", "data_path"}
    settings = [spec.settings] + [entry.settings for entry in spec.models]
    if any(feature_keys & set(s) for s in settings):
        return ()
    from mmrecbole.features import MODALITIES

    wanted = {m for run in runs for m in run.modalities}
    return tuple(m for m in MODALITIES if m in wanted)


def _prepare_features(spec: LeaderboardSpec, modalities, say) -> None:
    """`python -m mmrecbole.features extract` for the board's dataset (reused while up to date)."""
    for modality in modalities:
        proc = subprocess.run([sys.executable, "-m", "mmrecbole.features", "extract", f"--dataset={spec.dataset}",
                               f"--modality={modality}"], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            say(f"[features] {modality} failed (exit {proc.returncode}): {error}; its rows will say why")
            return
        say(f"[features] {lines[-1] if lines else modality + ': ready'}")


def _run_in_parallel(spec: LeaderboardSpec, pending, execute, say) -> None:
    """`execute(index, tag, run)` for every pending run, `spec.jobs` at a time, in `start_order`.

    A pipeline row (the stacker) reuses its base models' runs from the cache: it starts once every model row has
    finished, so it never trains a base model that another child is training at the same time. The dataset is
    built here and the feature tables once, by the first worker before its first run; a content run starts only
    after them (two children never build the same file), and until then a free worker takes the next run that
    needs no tables."""
    models = [item for item in pending if registry.get_pipeline(item[2].entry.name) is None]
    pipelines = [item for item in pending if registry.get_pipeline(item[2].entry.name) is not None]
    configs = [item[2].config for item in models if item[2].config is not None]
    if configs:
        ensure_dataset_files(configs[0])
    modalities = feature_tables_to_prepare(spec, [item[2] for item in models])
    queue = start_order(models, run_of=lambda item: item[2])
    state = {"tables_ready": not modalities}
    changed, errors = threading.Condition(), []

    def next_item():
        with changed:
            while queue:
                item = next((item for item in queue if state["tables_ready"] or not item[2].uses_content), None)
                if item is not None:
                    queue.remove(item)
                    return item
                changed.wait()
            return None

    def worker(slot: int, prepares: bool):
        worker_slot.number = slot
        try:
            if prepares:
                try:
                    _prepare_features(spec, modalities, say)
                finally:
                    with changed:
                        state["tables_ready"] = True
                        changed.notify_all()
            while (item := next_item()) is not None:
                execute(*item)
        except BaseException as exc:  # re-raised in the board's thread below
            errors.append(exc)
            with changed:
                queue.clear()
                state["tables_ready"] = True
                changed.notify_all()

    workers = [threading.Thread(target=worker, args=(n, bool(modalities) and n == 0), daemon=True)
               for n in range(max(1, min(spec.jobs, len(models) + bool(modalities))))]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    with ThreadPoolExecutor(max_workers=spec.jobs) as pool:
        for future in [pool.submit(execute, *item) for item in pipelines]:
            future.result()


def _tune_rows(spec: LeaderboardSpec, force, timeout, say, show, report_only, failures) -> dict:
    """Each tuned row's study, cached or run now (`spec.jobs` at a time): {label: study record}. A row whose study
    failed or (report_only) has not run yet is missing from the result and listed in `failures`."""
    studies = tuning.plan_studies(spec)
    found, pending = {}, []
    for index, study in enumerate(studies, 1):
        tag = f"[tune {index}/{len(studies)}] {study.entry.label}"
        cached = None if force else study.cached()
        if cached is not None:
            say(f"{tag}: study cached ({cached['trials']} trials, best valid {cached['valid_metric']} "
                f"{cached['best_value']:.4f}: {cached['best_params']})")
            found[study.entry.label] = cached
        elif report_only:
            failures.append(f"{study.entry.label}: not tuned yet (its study has not finished)")
        else:
            pending.append((tag, study))
    if not pending:
        return found
    commit = provenance.code_commit()
    if spec.jobs > 1:  # children tuning at once never build the same dataset or feature file together
        ensure_dataset_files(pending[0][1].config)
        _prepare_features(spec, feature_tables_to_prepare(spec, [study for _, study in pending]), say)

    def execute(tag, study):
        say(f"{tag}: tuning {study.entry.name}, {study.request.trials} trials over {', '.join(study.searched)} ...")
        trial = {"done": 0}

        def on_event(event):
            if event.get("kind") == "trial":
                trial.update(event)
                best = "" if event.get("best") is None else f", best {event['best']:.4f}"
                value = "" if event.get("value") is None else f" {event['value']:.4f}"
                say(f"{tag}: trial {event['done']}/{event['of']} {event['state']}{value}{best}")
            elif event.get("kind") in ("epoch", "step"):
                show(f"{tag}: trial {trial['done'] + 1}/{study.request.trials} {describe(event)}")

        request = study.request_for_child(spec, fresh=force, threads=threads_per_run(spec.jobs))
        result, error = run_job(request, f"{study.entry.label} (study)", timeout, on_event)
        if error:
            say(f"{tag}: {error}")
            failures.append(f"{error}; its seeds were not run (a tuned row never falls back to its defaults)")
            return
        record = study.record(result, commit)
        study.put(record)
        found[study.entry.label] = record
        say(f"{tag}: chose {record['best_params']} (valid {record['valid_metric']} {record['best_value']:.4f}, "
            f"{record['trials_complete']} complete / {record['trials_pruned']} pruned, "
            f"{record['trials_seconds']:.0f} s of trials)")

    if spec.jobs <= 1:
        for item in pending:
            execute(*item)
    else:
        with ThreadPoolExecutor(max_workers=spec.jobs) as pool:
            for future in [pool.submit(execute, *item) for item in pending]:
                future.result()
    return found


def run_leaderboard(spec: LeaderboardSpec, force=False, timeout=None, echo=print, report_only=False,
                    status=None) -> dict:
    """Run what is missing, then write the report. Returns {"runs": [...], "failures": [...], "report": {...}}.

    `echo` gets one line per run (started, cached, result); `status` (default: a progress.StatusLine on stdout when
    `echo` is print, else nothing) shows the running child's epochs on one updating line.

    `report_only`: run nothing; report the cached runs and list the missing ones (e.g. while a long leaderboard
    is still running in another process)."""
    from mmrecbole.leaderboard.report import write_report

    if status is None:
        status = StatusLine() if echo is print else None
    lock = threading.Lock()  # children of a parallel board report from their reader threads

    def say(text):
        with lock:
            if status is not None:
                status.clear()
            echo(text)

    def show(text):
        if status is not None:
            with lock:
                status.show(text)

    failures = []
    studies = _tune_rows(spec, force, timeout, say, show, report_only, failures)
    board = tuning.with_tuned_settings(spec, studies)
    runs = plan(board) if board.models else []

    commit = provenance.code_commit()  # stamped on each new run, with the code version (part of the run's key)
    done, pending, copies, first_run = {}, [], [], {}
    for index, run in enumerate(runs, 1):
        tag = f"[{index}/{len(runs)}] {run.entry.label} seed {run.seed}"
        cached = None if force else run.cached()
        first_run.setdefault(run.entry.label, index)
        if cached is not None:
            say(f"{tag}: cached ({os.path.relpath(run.path)})")
            done[index] = cached
        elif run.seed_independent and first_run[run.entry.label] != index:
            copies.append((index, tag, run, first_run[run.entry.label]))
        elif report_only:
            failures.append(f"{run.entry.label} seed {run.seed}: not run yet")
        else:
            pending.append((index, tag, run))

    def execute(index, tag, run):
        say(f"{tag}: running {run.entry.name} ...")

        def on_event(event):
            if event.get("kind") in ("epoch", "step"):
                show(f"{tag}: {event.get('model', run.entry.name)} {describe(event)}")

        result, error = _run_child(run, spec, timeout, on_event)
        if error:
            say(f"{tag}: {error}")
            failures.append(error)
            return
        # The child reports the code version it ran; it differs from the planned one only when the code changed while
        # this leaderboard ran: the run is then stored (and reported) under the version that computed it.
        version = result.pop("code_version", None) or run.code_version
        if version != run.code_version:
            say(f"{tag}: the code changed during the leaderboard (code version {run.code_version} -> {version}): "
                "this run is recorded under the new version; the board will say it mixes code versions")
        record = make_record(result, label=run.entry.label, config_hash=run.hash, settings=run.entry.settings,
                             uses_content=run.uses_content, code_version=version, commit=commit)
        run.cache.put(record)
        done[index] = record
        test = record["test"]
        say(f"{tag}: test {spec.significance_metric}={test.get(spec.significance_metric, float('nan')):.4f} "
            f"(train {record['train_seconds']:.0f} s)")

    if spec.jobs <= 1:
        for item in pending:
            execute(*item)
    else:
        _run_in_parallel(board, pending, execute, say)
    for index, tag, run, first in copies:  # the model ignores the seed: its first seed's run is every seed's
        if first in done:
            done[index] = {**done[first], "seed": run.seed, "same_run_as_seed": done[first]["seed"]}
            if not report_only:  # report_only writes nothing to the cache
                run.cache.put(done[index])
            say(f"{tag}: the run of seed {done[first]['seed']} ({run.entry.name} does not use the seed)")
        else:
            failures.append(f"{run.entry.label} seed {run.seed}: not run (it is the run of the first seed, missing)")
    records = [done[index] for index in sorted(done)]
    if not records:
        raise UserError("no leaderboard run finished: " + "; ".join(failures))
    report = write_report(spec, records, failures,
                          tuning={"studies": studies, "untuned": tuning.untuned_rows(spec)})
    return {"runs": records, "failures": failures, "report": report}
