"""One leaderboard run in a child process: reads a JSON request on stdin, prints `RESULT {json}` on stdout.

Request: {"model", "dataset", "settings", "checkpoint_dir", "run_cache_dir", "log_dir", "concurrent_runs",
"threads"}; or, for a tuned row's study, {"task": "tune", "model", "dataset", "settings" (fixed for every trial),
"trials", "storage", "space_file", "sampler_seed", "study_key", "fresh", "log_dir", "threads"}, whose result is
mmrecbole.tuning.TuneResult as a dict plus the code version, and whose progress adds a `trial` event per trial.
A run's result is quick_start.run's dict plus the process's peak resident memory, the code version it ran
(provenance.code_version, read before the run) and how many runs shared the machine.
While it runs, every progress event (mmrecbole.progress: epochs, the log file's path) goes to stdout as a
`PROGRESS {json}` line, and the run's log file gets RecBole's full INFO log as it goes.
"""
import json
import resource
import sys

from mmrecbole.errors import run_command


def _forward(event):
    print("PROGRESS " + json.dumps(event), flush=True)


def tune_request(request: dict, version: str) -> int:
    import dataclasses

    from mmrecbole import progress
    from mmrecbole.tuning import tune

    def on_trial(event):
        progress.report("trial", **event)

    with progress.listening(_forward):
        result = tune(request["model"], request["dataset"], int(request["trials"]), cmd_dict=request["settings"],
                      storage=request["storage"], space_file=request["space_file"],
                      seed=int(request["sampler_seed"]), on_trial=on_trial, log_dir=request["log_dir"],
                      study_key=request.get("study_key"), fresh=bool(request.get("fresh")))
    print("RESULT " + json.dumps({**dataclasses.asdict(result), "code_version": version}, default=str))
    return 0


def run_request(request: dict) -> int:
    from mmrecbole import progress
    from mmrecbole.provenance import code_version
    from mmrecbole.quick_start import run

    if request.get("threads"):  # several runs at a time: each gets its share of the cores
        import torch

        torch.set_num_threads(int(request["threads"]))
    version = code_version()  # the code this process imports (read before a long run, not after it)
    if request.get("task") == "tune":
        return tune_request(request, version)
    settings = {**request["settings"], "checkpoint_dir": request["checkpoint_dir"],
                "run_cache_dir": request["run_cache_dir"], "state": "INFO",
                "save_bundle": False}  # a board compares runs; serving bundles are written on demand (--bundle)
    with progress.listening(_forward):
        result = run(request["model"], request["dataset"], config_dict=settings, log_dir=request["log_dir"],
                     console_log=False)
    # ru_maxrss is in KiB on Linux.
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["code_version"] = version
    result["concurrent_runs"] = int(request.get("concurrent_runs") or 1)  # timings of a shared machine when > 1
    print("RESULT " + json.dumps(result))
    return 0


def main() -> int:
    """A bad setting is one `error: ...` line on stderr and exit code 2, as on every command line of ours (the
    parent shows that line)."""
    request = json.loads(sys.stdin.read())
    return run_command(lambda: run_request(request), [])


if __name__ == "__main__":
    sys.exit(main())
