"""Which run of a parallel leaderboard starts when, and on which device."""
from __future__ import annotations

import threading

from mmrecbole import contract
from mmrecbole.leaderboard import spec as spec_module


def start_order(runs) -> list:
    """The order a parallel board starts its model runs in: the expected longest first (sequential models, then
    models trained epoch by epoch, then those fitted once: implicit's, Pop, ItemKNN), the board's order within
    each. Short runs at the end fill the workers evenly; started in the board's order, the last long run would run
    alone while the other worker idles (on ml-100k-mm's quickstart: a sequential run of ~4 min at the end)."""
    from recbole.utils import ModelType

    def expected_cost_rank(run):
        if run.config is None:
            return 1
        if run.config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
            return 0
        fitted_once = contract.capabilities(run.config.model_class).fits_once
        return 2 if fitted_once or run.config["MODEL_TYPE"] == ModelType.TRADITIONAL else 1  # RecBole's Pop, ItemKNN

    return sorted(runs, key=expected_cost_rank)  # stable: the board's order among equals


#: The parallel board's worker slot (0 .. jobs - 1) of the current thread, which picks its GPU.
worker_slot = threading.local()


def worker_gpu(spec: spec_module.LeaderboardSpec):
    """The GPU (as RecBole's gpu_id) of the current worker's children on a machine with several GPUs: worker n
    gets GPU n mod count, so runs at a time never share one; None for one at a time or fewer than two GPUs (the
    child's own settings decide, as for a single run)."""
    slot = getattr(worker_slot, "number", None)
    gpus = spec_module.cuda_device_count() if spec.jobs > 1 and slot is not None else 0
    return str(slot % gpus) if gpus > 1 else None
