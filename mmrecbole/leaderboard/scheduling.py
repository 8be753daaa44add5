"""Which run of a parallel leaderboard starts when, and on which device."""
from __future__ import annotations

import threading

from mmrecbole import contract
from mmrecbole.leaderboard import spec as spec_module


def expected_cost_rank(run) -> int:
    """0 for sequential models, 1 for models trained epoch by epoch (and pipelines), 2 for those fitted once
    (implicit's; RecBole's traditional ones, Pop and ItemKNN): a parallel board starts the expected longest first."""
    from recbole.utils import ModelType

    if run.config is None:
        return 1
    if run.config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return 0
    fitted_once = contract.capabilities(run.config.model_class).fits_once
    return 2 if fitted_once or run.config["MODEL_TYPE"] == ModelType.TRADITIONAL else 1


def start_order(items, run_of=lambda item: item) -> list:
    """`items` (runs, or records holding one: `run_of` picks it) in the order a parallel board starts them: by
    `expected_cost_rank`, the board's order among equals. Short runs at the end fill the workers evenly; started in
    the board's order, the last long run would run alone while the other worker idles (on ml-100k-mm's quickstart:
    the last MMSASRec's final ~45 s)."""
    return sorted(items, key=lambda item: expected_cost_rank(run_of(item)))


#: The parallel board's worker slot (0 .. jobs - 1) of the current thread, which picks its GPU.
worker_slot = threading.local()


def worker_gpu(spec: spec_module.LeaderboardSpec):
    """The GPU (as RecBole's gpu_id) of the current worker's children on a machine with several GPUs: worker n
    gets GPU n mod count, so runs at a time never share one; None for one at a time or fewer than two GPUs (the
    child's own settings decide, as for a single run)."""
    slot = getattr(worker_slot, "number", None)
    gpus = spec_module.cuda_device_count() if spec.jobs > 1 and slot is not None else 0
    return str(slot % gpus) if gpus > 1 else None
