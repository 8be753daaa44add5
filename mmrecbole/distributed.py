"""One model trained by several processes: torch.distributed DDP under RecBole's launch settings.

`nproc` processes on this machine (`world_size` over all machines, this machine's first rank `group_offset`, the
rendezvous at `ip`:`port`), as RecBole's run_recbole launches them; NCCL with one GPU per process when CUDA is used,
gloo on the CPU (RecBole 1.2.1 only knows NCCL). What RecBole does itself once `single_spec` is False, and we keep:
its loaders shard samples with a DistributedSampler (each rank `batch size / world_size` per step) and its
`_train_epoch` lets DDP's reducer average the gradients of every parameter. What we replace, and why:

- DDP construction: RecBole wraps the model with `device_ids=[local_rank]`, which DDP refuses for a CPU module;
  `wrap` passes device ids only for a CUDA model (`single_process_view` keeps RecBole's own attempt from running).
- Evaluation: RecBole averages each rank's metric means weighted by its sample count (its PR #1872: wrong for
  non-additive metrics, and the sampler's padding counts a user twice). `gather_rows` collects every rank's per-row
  top-k struct at its sample positions, so every rank scores the whole evaluation split exactly as one process
  would, and early stopping takes the same decision on every rank.
- Checkpoints: rank 0 alone writes, at one path all ranks agree on (`same_on_all_ranks`); the other ranks keep
  the same state in memory for the test phase, so no rank reads a file another has not written yet (how a test
  phase hangs, RecBole issue #1811) or another machine's disk. A checkpoint holds the plain model's state_dict: it
  loads in one process.

`all_positions` window batches (mmrecbole.data.windows) are cut identically on every rank and split by rows
(`rows_of_rank`): each window is trained once per epoch over all ranks.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from mmrecbole import errors
from mmrecbole.errors import ConfigError, UserError

#: How long a rank waits in a collective for the others before failing (a rank that died cannot answer).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Launch:
    """Where the processes of one distributed run are and how they meet."""

    nproc: int  # processes started on this machine
    world_size: int  # processes over all machines
    ip: str
    port: int  # 0: a free port of this machine, picked at launch
    group_offset: int  # global rank of this machine's first process

    @classmethod
    def from_config(cls, config) -> "Launch | None":
        """The launch a config asks for, or None for one process; bad settings name the key and the bound."""
        nproc, world, offset, port = (int(config[k]) for k in ("nproc", "world_size", "group_offset", "port"))
        if nproc < 1:
            raise ConfigError(f"nproc must be >= 1 (training processes on this machine), got {nproc}")
        world = nproc if world == -1 else world
        if world < nproc:
            raise ConfigError(f"world_size must be -1 (= nproc) or >= nproc ({nproc}), got {world}")
        if not 0 <= offset <= world - nproc:
            raise ConfigError(f"group_offset must be in [0, world_size - nproc] = [0, {world - nproc}], got {offset}")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be in [0, 65535] (0: a free port, one machine only), got {port}")
        if world == 1:
            return None
        if port == 0 and world > nproc:
            raise ConfigError(f"port: 0 picks a free port of this machine, which the other machines cannot know; "
                              f"world_size {world} > nproc {nproc}: set --port=N (the same on every machine)")
        gpus = [g for g in str(config["gpu_id"]).split(",") if g.strip()]
        if uses_cuda(config) and len(gpus) < nproc:
            raise ConfigError(f"nproc={nproc} processes need one GPU each, but gpu_id={config['gpu_id']!r} lists "
                              f"{len(gpus)}: set --gpu_id=0,1,...")
        return cls(nproc, world, str(config["ip"]), port, offset)


def uses_cuda(config) -> bool:
    return bool(config["use_gpu"]) and torch.cuda.is_available()


def check_trainable(config) -> None:
    """Refuse what DDP cannot train here: a model fitted in one pass, or sampled-candidate evaluation."""
    from mmrecbole import contract

    if contract.capabilities(config.model_class).fits_once:
        raise ConfigError(f"{config['model']} is fitted in one pass, not by gradient steps: DDP (nproc > 1) does not "
                          "apply; run it with nproc: 1")
    modes = config["eval_args"]["mode"]
    if any(mode != "full" for mode in (modes.values() if isinstance(modes, dict) else [modes])):
        raise ConfigError("DDP (nproc > 1) evaluates by full ranking only (eval_args mode: full): its exact gather "
                          "of per-user metrics needs one row per evaluated sample")


# -- inside a rank -------------------------------------------------------------------------------------------------
def init_rank(final: dict, local_rank: int, launch: Launch) -> None:
    """Join `launch`'s process group (once per process) and set RecBole's derived keys for this rank: `single_spec`
    False, `local_rank`, `device`, the resolved `world_size`; ranks but the first log errors only and show no bars."""
    cuda = uses_cuda(final)
    if cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(final["gpu_id"])
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://{launch.ip}:{launch.port}",
                                rank=launch.group_offset + local_rank, world_size=launch.world_size,
                                timeout=COLLECTIVE_TIMEOUT)
    final.update(single_spec=False, local_rank=local_rank, world_size=launch.world_size,
                 device=torch.device("cuda", local_rank) if cuda else torch.device("cpu"))
    if dist.get_rank() != 0:
        final.update(state="error", show_progress=False)


def is_distributed(config) -> bool:
    return not config["single_spec"]


def rank_and_world(config) -> tuple:
    """(global rank, world size); (0, 1) in one process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed(config) else (0, 1)


def is_main(config) -> bool:
    return rank_and_world(config)[0] == 0


def same_on_all_ranks(value, config):
    """Rank 0's `value` on every rank (e.g. the checkpoint path, which names the writing process)."""
    if not is_distributed(config):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def single_process_view(config):
    """RecBole's trainer constructor, seeing one process: its DDP wrap (device_ids=[local_rank]) fails for a CPU
    model; `wrap` does it right afterwards. Nothing else in the constructor reads `single_spec`."""
    distributed = is_distributed(config)
    if distributed:
        config.final_config_dict["single_spec"] = True
    try:
        yield
    finally:
        if distributed:
            config.final_config_dict["single_spec"] = False


def wrap(model, config):
    """DistributedDataParallel over `model` (rank 0's parameters are broadcast to every rank here), device ids for a
    CUDA model only; None in one process."""
    if not is_distributed(config):
        return None
    device = torch.device(config["device"])
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def rows_of_rank(batches, rank: int, world: int) -> list:
    """This rank's share of every batch (each a 1-d array of row ids cut identically on every rank): rows
    rank, rank + world, ... A batch with fewer rows than ranks joins the one before it, so every rank gets rows
    in every step (DDP needs the same number of backward passes on every rank) and no row is dropped."""
    if world == 1:
        return list(batches)
    import numpy as np

    merged = []
    for rows in batches:
        if merged and len(rows) < world:
            merged[-1] = np.concatenate([merged[-1], rows])
        elif merged and len(merged[-1]) < world:
            merged[-1] = np.concatenate([merged[-1], rows])
        else:
            merged.append(rows)
    if merged and len(merged[-1]) < world:
        raise ConfigError(f"{sum(len(b) for b in batches)} training windows cannot feed {world} processes: "
                          "use fewer processes (nproc)")
    return [rows[rank::world] for rows in merged]


def gather_rows(struct, users, loader, per_row_keys):
    """(struct, users) over the whole evaluation split: every rank's rows of the per-row struct entries (and its
    evaluated user ids) placed at their sample positions. RecBole's DistributedSampler gives rank r the samples
    r, r + world, ... of a list padded by repetition; a padded sample is the same row twice, written once."""
    indices = torch.as_tensor(list(loader.sampler), dtype=torch.long)
    local = {key: struct[key] for key in per_row_keys if key in struct}
    for key, value in local.items():
        if value.shape[0] != len(indices):
            raise RuntimeError(f"evaluation struct '{key}' has {value.shape[0]} rows for {len(indices)} samples: "
                               "one row per sample is what the gather relies on (full ranking)")
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (indices, local, users))
    total = len(loader.sampler.dataset)
    seen = torch.zeros(total, dtype=torch.bool)
    for part_indices, _, _ in parts:
        seen[part_indices] = True
    if not bool(seen.all()):
        raise RuntimeError(f"the ranks evaluated {int(seen.sum())} of {total} samples")

    def place(pieces):
        first = pieces[0][1]
        out = first.new_empty((total, *first.shape[1:]))
        for part_indices, rows in pieces:
            out[part_indices] = rows
        return out

    for key in local:
        struct[key] = place([(i, rows[key]) for i, rows, _ in parts])
    return struct, place([(i, u) for i, _, u in parts])


# -- launching -----------------------------------------------------------------------------------------------------
def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip if ip != "localhost" else "127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(rank_main, launch: Launch, args: tuple):
    """Run `rank_main(local_rank, launch, *args)` in `launch.nproc` new processes (torch.multiprocessing, spawn);
    returns what global rank 0 returned (a JSON-able value). A UserError in a rank is raised here as the same
    one-line error; if one rank fails, torch stops the others.

    Results travel as files, not through a pipe: a rank writing a large result into a pipe nobody reads until
    every rank has exited would wait forever."""
    import torch.multiprocessing as mp

    if launch.port == 0:
        launch = replace(launch, port=free_port(launch.ip))
    with tempfile.TemporaryDirectory(prefix="mmrecbole-ddp-") as folder:
        try:
            mp.spawn(_rank_entry, args=(rank_main, launch, args, folder), nprocs=launch.nproc, join=True)
        except mp.ProcessRaisedException as exc:
            for name in sorted(os.listdir(folder)):
                if name.startswith("user_error"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        kind, message = json.load(f)
                    error_class = getattr(errors, kind, UserError)
                    if not (isinstance(error_class, type) and issubclass(error_class, UserError)):
                        error_class = UserError
                    raise error_class(message) from None
            raise RuntimeError(f"a training process failed:\n{exc}") from None
        path = os.path.join(folder, "result.json")
        if not os.path.isfile(path):
            return None  # global rank 0 runs on another machine
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def _write_json(folder, name, value) -> None:
    temp = os.path.join(folder, f".{name}.{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(value, f, default=str)
    os.replace(temp, os.path.join(folder, name))


def _rank_entry(local_rank, rank_main, launch, args, folder):
    try:
        result = rank_main(local_rank, launch, *args)
    except UserError as exc:
        _write_json(folder, f"user_error.{local_rank}.json", [type(exc).__name__, str(exc)])
        raise
    if launch.group_offset + local_rank == 0:
        _write_json(folder, "result.json", result)
    if dist.is_initialized():
        # Tear down together: a rank that destroyed its gloo group while a peer was still finishing (rank 0 writes
        # the result and checkpoint) was seen to abort in gloo's teardown ("terminate called without an active
        # exception", SIGABRT) once in a CI run.
        dist.barrier()
        dist.destroy_process_group()
