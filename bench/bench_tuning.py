"""Cost of the tuning machinery itself (issue 18's goal: sampler + storage overhead < 2% of a trial's training time).

Runs one study (`mmrecbole.tuning.tune`, the code `--tune` runs) in a fresh SQLite file and splits its wall time into
the time inside trials (Optuna's datetime_start -> datetime_complete of each trial, which is the training itself plus
suggest/report) and everything else (study creation, sampling the next trial, storage writes). Prints both and their
ratio, and the in-trial share spent outside `fit_on_validation` (suggest, Config, report).

Usage: .venv/bin/python bench/bench_tuning.py [--model BPR] [--dataset ml-100k-mm] [--trials 5] [--epochs 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="epoch budget per trial (short trials: a worst case)")
    args = parser.parse_args()

    import optuna

    from mmrecbole import quick_start
    from mmrecbole.tuning import tune

    fit_seconds = []
    real_fit = quick_start.fit_on_validation

    def timed_fit(*a, **k):
        start = time.perf_counter()
        try:
            return real_fit(*a, **k)
        finally:
            fit_seconds.append(time.perf_counter() - start)

    quick_start.fit_on_validation = timed_fit
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{os.path.join(folder, 'bench.db')}"
        start, started_at = time.perf_counter(), time.time()
        result = tune(args.model, args.dataset, args.trials, cmd_dict={"epochs": args.epochs, "show_progress": False},
                      storage=storage, log_dir=os.path.join(folder, "log"))
        total = time.perf_counter() - start
        trials = optuna.load_study(study_name=result.study_name, storage=storage).trials
    setup = trials[0].datetime_start.timestamp() - started_at  # study creation (SQLite schema) before trial 0
    inside = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    fits = sum(fit_seconds)
    print(f"{args.model} on {args.dataset}: {len(trials)} trials ({result.trials_pruned} pruned), epochs <= "
          f"{args.epochs}, total {total:.1f} s")
    print(f"  training (fit_on_validation)        {fits:8.2f} s")
    print(f"  in trials, outside training         {inside - fits:8.2f} s  ({(inside - fits) / fits:.2%} of training)")
    print(f"  outside trials (sampler, storage)   {total - inside:8.2f} s  ({(total - inside) / fits:.2%} of training)")
    print(f"    of which study creation (once)    {setup:8.2f} s")
    between = total - inside - setup
    print(f"    per trial: sampler + storage      {between / len(trials):8.3f} s  ({between / fits:.2%} of training)")
    print(f"  overhead / training                 {(total - fits) / fits:.2%}  (goal < 2%)")


if __name__ == "__main__":
    main()
