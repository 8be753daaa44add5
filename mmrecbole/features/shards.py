"""Sharded feature extraction: N processes (or machines) each encode a contiguous slice of a table's rows; the
shards merge into the one table, with one provenance record, that a single build would have written.

``python -m mmrecbole.features extract --dataset=D --modality=M --shard=i/N`` (0 <= i < N) writes
``features/<modality>.shard-<i>-of-<N>.npz``: the rows ``ids[start:stop]`` of the planned table (see ``shard_rows``),
its provenance the plan's plus a ``shard`` entry {index, count, start, stop, items}. ``--merge_shards=N`` checks
that every shard is there and was built from the same inputs, encoder and recipe as the plan (a missing or stale
shard is named, with the command that rebuilds it), concatenates them, saves the table atomically and removes the
shard files. The merged table's identifying provenance equals a single build's, so models reuse it.
"""
import os
from typing import List, Tuple

import numpy as np

from mmrecbole.errors import FeatureError
from mmrecbole.features.store import FeatureJob, stored_status
from mmrecbole.features.table import INFO_KEY, FeatureTable, provenance_changes

SHARD_KEY = "shard"


def parse_shard(text: str) -> Tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N; anything else is a FeatureError naming the bound."""
    index, sep, count = str(text).partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = None
    if not sep or index is None or count < 1 or not 0 <= index < count:
        raise FeatureError(f"--shard must be i/N with N >= 1 and 0 <= i < N (e.g. 0/2 and 1/2), got {text!r}")
    return index, count


def shard_rows(n_items: int, index: int, count: int) -> slice:
    """Rows of shard `index` of `count`: contiguous, sizes differing by at most one, together every row once."""
    return slice(n_items * index // count, n_items * (index + 1) // count)


def shard_path(job: FeatureJob, index: int, count: int) -> str:
    stem, ext = os.path.splitext(job.path)
    return f"{stem}.shard-{index}-of-{count}{ext}"


def _expected_shard(job: FeatureJob, index: int, count: int) -> dict:
    rows = shard_rows(len(job.ids), index, count)
    return {"index": index, "count": count, "start": rows.start, "stop": rows.stop, "items": len(job.ids)}


def _shard_problem(job: FeatureJob, index: int, count: int):
    """(the stored shard or None, None when it is usable else what is wrong with it)."""
    path = shard_path(job, index, count)
    if not os.path.isfile(path):
        return None, "missing"
    try:
        stored = FeatureTable.load(path)
    except FeatureError as exc:
        return None, f"unreadable ({exc})"
    provenance = {k: v for k, v in stored.provenance.items() if k != SHARD_KEY}
    changes = provenance_changes(provenance, job.provenance)
    if stored.provenance.get(SHARD_KEY) != _expected_shard(job, index, count):
        changes.append("shard rows")  # the item list changed length since the shard was cut
    elif stored.ids.tolist() != job.ids[shard_rows(len(job.ids), index, count)]:
        changes.append("item ids")
    return stored, ("stale: " + ", ".join(changes) + " changed") if changes else None


def build_shard(job: FeatureJob, index: int, count: int, force: bool = False) -> Tuple[FeatureTable, str]:
    """(shard table, what happened): encode rows `shard_rows(...)` of the planned table and save them atomically
    beside it, or reuse the stored shard while it matches the plan."""
    status = "forced"
    if not force:
        stored, problem = _shard_problem(job, index, count)
        if problem is None:
            return stored, "reused (up to date)"
        status = problem
    part = job.run(shard_rows(len(job.ids), index, count))
    path = shard_path(job, index, count)
    table = FeatureTable(part.ids, part.matrix, part.mask,
                         dict(part.provenance, **{SHARD_KEY: _expected_shard(job, index, count)}), source=path)
    table.save(path)
    return table, f"built shard {index}/{count} ({status})"


def merge_shards(job: FeatureJob, count: int) -> Tuple[FeatureTable, str]:
    """(table, what happened): the `count` shards concatenated into the planned table, saved atomically, shards
    removed. Refused (FeatureError) while any shard is missing or stale; an up-to-date table with no shards left
    (merged before) is reused."""
    if count < 1:
        raise FeatureError(f"--merge_shards must be an integer >= 1 (the shard count), got {count}")
    checked = [_shard_problem(job, index, count) for index in range(count)]
    paths = [shard_path(job, index, count) for index in range(count)]
    if all(problem == "missing" for _, problem in checked):
        stored, status = stored_status(job)
        if stored is not None and status == "up to date":
            return stored, "reused (up to date; its shards were merged before)"
    bad = [(index, problem) for index, (_, problem) in enumerate(checked) if problem is not None]
    if bad:
        listed = "; ".join(f"shard {index}/{count} ({os.path.basename(paths[index])}) {problem}"
                           for index, problem in bad)
        rebuild = " ".join(f"--shard={index}/{count}" for index, _ in bad[:3])
        raise FeatureError(f"cannot merge the {job.modality} features of {job.dataset_name}: {listed}; build them "
                           f"with `python -m mmrecbole.features extract --dataset={job.dataset_name} "
                           f"--modality={job.modality} --shard=i/{count}` ({rebuild}{' ...' if len(bad) > 3 else ''})")
    shards: List[FeatureTable] = [table for table, _ in checked]
    info = {
        "items": len(job.ids),
        "with_feature": int(sum(int(s.mask.sum()) for s in shards)),
        "shards": [dict(s.provenance.get(INFO_KEY, {}), **{SHARD_KEY: s.provenance[SHARD_KEY]}) for s in shards],
    }
    table = FeatureTable(job.ids, np.concatenate([s.matrix for s in shards]), np.concatenate([s.mask for s in shards]),
                         dict(job.provenance, **{INFO_KEY: info}), source=job.path)
    table.save(job.path)
    for path in paths:  # after the table is safely written: an interrupted merge keeps its shards
        os.remove(path)
    return table, f"merged {count} shards"
