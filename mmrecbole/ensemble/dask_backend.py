"""The stacker's distributed fit (`stacker_backend: dask`): LightGBM's own data-parallel LambdaRank,
`lightgbm.dask.DaskLGBMRanker`, on a Dask cluster; nothing here distributes work itself.

- Cluster: `dask_scheduler` (an address such as tcp://host:8786), or, when it is empty, a `distributed.LocalCluster`
  of `dask_workers` processes with one thread each, started for the fit and closed after it (also on error).
- Data: the training rows are cut into one partition per worker, each of whole query groups (a user's candidates
  are one LambdaRank group and are never split), and each partition is placed on its own worker with its rows,
  labels and group sizes, which is how DaskLGBMRanker pairs `group` with the rows.
- Early stopping: DaskLGBMRanker documents none (lightgbm/dask.py: "DaskLGBMRanker does not support
  eval_class_weight or early stopping"), and each worker evaluates its own share of an eval set, so an in-training
  early_stopping callback could stop the workers at different rounds. Instead every worker gets the whole held-out
  set, all n_estimators rounds are trained, and lightgbm.early_stopping is replayed over the held-out NDCG curve
  LightGBM recorded (`best_round`): the trees up to that round are the ones early stopping would have kept
  (boosting never revisits a tree), at the cost of the rounds after it.
- Result: `to_local()`, a plain LGBMRanker, so predicting, saving, loading and serving are the local code paths.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from mmrecbole.errors import ConfigError

#: The booster attribute the workers' round clock writes (a plain attribute travels back with the pickled model; a
#: callback's own state stays on the worker).
ROUND_SECONDS = "mmrecbole_round_seconds"


def partition_groups(group_sizes, n_parts: int) -> list:
    """Consecutive query groups cut into at most `n_parts` partitions of whole groups, balanced by rows: a list of
    (first group, end group) ranges. Each cut is the group boundary nearest to an equal share of the rows."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_parts = max(1, min(int(n_parts), len(sizes)))
    cuts = [0]
    for k in range(1, n_parts):
        nearest = int(np.argmin(np.abs(offsets - offsets[-1] * k / n_parts)))
        cuts.append(min(max(nearest, cuts[-1] + 1), len(sizes) - (n_parts - k)))  # every partition non-empty
    cuts.append(len(sizes))
    return list(zip(cuts[:-1], cuts[1:]))


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int):
    """A distributed.Client on `scheduler`, or on a LocalCluster of `workers` one-thread processes when it is empty;
    the client (and a cluster started here) are closed on leaving, also on error."""
    from distributed import Client, LocalCluster

    if not scheduler:
        # Processes, not threads: LightGBM's network setup is per process. No dashboard (it needs bokeh, and nobody
        # looks at it during a fit); the scheduler's HTTP server (health checks) on a free port, not on 8787, which
        # another cluster may hold.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          scheduler_kwargs={"dashboard": False}) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"dask_scheduler {scheduler!r}: no Dask scheduler answered ({exc}); start one (`dask "
                          "scheduler`, then `dask worker ADDRESS` per machine) or leave dask_scheduler empty for a "
                          "LocalCluster") from None
    with client:
        if not client.nthreads():
            raise ConfigError(f"dask_scheduler {scheduler!r} has no workers; start some (`dask worker {scheduler}`)")
        yield client


def best_round(curve, stopping_rounds: int, metric: str, params: dict, model=None):
    """(best round, round where early stopping would have stopped), both 1-based: lightgbm.early_stopping (as the local
    fit uses it) replayed over a recorded held-out metric curve (higher is better)."""
    import lightgbm
    from lightgbm.callback import CallbackEnv, EarlyStopException

    stopper = lightgbm.early_stopping(stopping_rounds, first_metric_only=True, verbose=False)
    for i, value in enumerate(curve):
        env = CallbackEnv(model=model, params=params, iteration=i, begin_iteration=0, end_iteration=len(curve),
                          evaluation_result_list=[lightgbm.EvalResult("valid_0", metric, float(value), True)])
        try:
            stopper(env)
        except EarlyStopException as stop:
            return stop.best_iteration + 1, i + 1
    return len(curve), len(curve)  # an empty curve (the callback raises at the last round otherwise)


def _round_clock(start: float):
    """A callback for the workers' fits: wall-clock seconds since `start` (the client's clock) after each round, kept
    on the booster. A closure, so it is pickled by value and the workers need no mmrecbole."""
    def clock(env):
        env.model.__dict__.setdefault(ROUND_SECONDS, []).append(time.time() - start)

    return clock


def fit_ranker(params: dict, x, y, groups, held_out, fit_args: dict, scheduler: str, workers: int):
    """Fit DaskLGBMRanker(**params) on rows `x`, labels `y` grouped by `groups`, with `held_out` = (x, y, groups) or
    None as its eval set. Returns (local LGBMRanker, per-round seconds or None, layout {workers, partition_rows})."""
    import dask
    import dask.array as da
    from lightgbm.dask import DaskLGBMRanker

    with dask_client(scheduler, workers) as client:
        start = time.time()  # the round clock's zero: the cluster is up, the data not yet sent
        addresses = sorted(client.nthreads())
        offsets = np.concatenate([[0], np.cumsum(groups)])
        parts = partition_groups(groups, len(addresses))

        def on_worker(array, address):  # one chunk, held by that worker
            future = client.scatter(array, workers=[address], hash=False)
            return da.from_delayed(dask.delayed(future), shape=array.shape, dtype=array.dtype)

        chunks = {"x": [], "y": [], "g": [], "ex": [], "ey": [], "eg": []}
        for (first, end), address in zip(parts, addresses):
            rows = slice(offsets[first], offsets[end])
            for name, array in (("x", x[rows]), ("y", y[rows]), ("g", np.asarray(groups[first:end]))):
                chunks[name].append(on_worker(array, address))
            if held_out is not None:
                # One whole copy per partition: DaskLGBMRanker hands eval chunk i to training partition i, so every
                # worker scores the full held-out set (the model's curve, not that of a worker's share).
                for name, array in zip(("ex", "ey", "eg"), held_out):
                    chunks[name].append(on_worker(np.asarray(array), address))
        args = dict(fit_args, group=da.concatenate(chunks["g"]), callbacks=[_round_clock(start)])
        if held_out is not None:
            args.update(eval_X=(da.concatenate(chunks["ex"]),), eval_y=(da.concatenate(chunks["ey"]),),
                        eval_group=[da.concatenate(chunks["eg"])])
        ranker = DaskLGBMRanker(client=client, **params)
        with warnings.catch_warnings():
            # n_jobs is always among the estimator's parameters; Dask sets each worker's threads itself.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            ranker.fit(da.concatenate(chunks["x"]), da.concatenate(chunks["y"]), **args)
        local = ranker.to_local()
    seconds = local.booster_.__dict__.pop(ROUND_SECONDS, None)
    layout = {"workers": len(addresses), "partition_rows": [int(offsets[e] - offsets[f]) for f, e in parts]}
    return local, seconds, layout
