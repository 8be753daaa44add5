"""The two phases the stacker sees, read from the protocol's own data split.

- valid: history = the training split, targets = each user's validation items. The stacker is fitted here.
- test:  history = training + validation split, targets = each user's test items. Read once, for the final numbers.

Base models score each phase through their own loaders (validation loader / test loader); this module supplies
what the scores do not carry: targets (labels), each user's history in time order (history length, recency,
content profile) and item statistics of the training split (popularity, first appearance).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmrecbole import checkpoint, compat
from mmrecbole.data.build import create_dataset


@dataclass
class Phase:
    name: str
    users: np.ndarray                 # internal user ids with at least one target, ascending
    positives: list                   # per user: np.ndarray of target item ids
    history_items: list               # per user: item ids, oldest first
    history_times: list | None        # per user: timestamps, oldest first (None: no time field loaded)

    def __len__(self):
        return len(self.users)


@dataclass
class ReferenceData:
    """The protocol's split (PROTOCOL_MODEL's dataset) and what the stacker's features read from it."""

    dataset: object                   # RecBole Dataset (all interactions, remapped ids)
    n_items: int                      # item_num, padding id 0 included
    fingerprint: dict                 # checkpoint.dataset_fingerprint: every base model's dataset must equal it
    item_popularity: np.ndarray       # [n_items] training-split interactions per item
    item_counter: object              # the same counts as RecBole's Counter (for its popularity metrics)
    item_first_time: np.ndarray       # [n_items] first training-split timestamp (NaN: never in training)
    time_origin: float                # training-split min timestamp (0.0 without timestamps)
    time_span: float                  # training-split max - min timestamp (1.0 without timestamps)
    phases: dict                      # {"valid": Phase, "test": Phase}
    # Items and timestamps searched as one sorted float64 key, item * stride + (time - origin), the stride above the
    # time span: exact while n_items * stride < 2**53 (ml-100k: 1683 items x 10**8 s). None: no timestamps or too
    # wide, and the windowed popularity feature is left out.
    item_time_keys: np.ndarray | None = None
    key_stride: float = 0.0

    def item_interactions_between(self, items, start, end) -> np.ndarray:
        """Training-split interactions of each item with start <= timestamp <= end (arrays of equal length)."""
        if self.item_time_keys is None:
            raise ValueError("no item/time keys (no timestamps, or a time span too wide for them)")
        base = np.asarray(items, dtype=np.float64) * self.key_stride - self.time_origin
        low = np.searchsorted(self.item_time_keys, base + start, side="left")
        high = np.searchsorted(self.item_time_keys, base + end, side="right")
        return (high - low).astype(np.float64)

    @property
    def has_time(self) -> bool:
        return self.phases["valid"].history_times is not None


def _group(users, items, times, order_users):
    """Per user of `order_users`: (items, times) in time order (ties keep split order)."""
    order = np.lexsort((np.arange(len(users)), times if times is not None else np.zeros(len(users)), users))
    users, items = users[order], items[order]
    times = times[order] if times is not None else None
    starts = np.searchsorted(users, order_users, side="left")
    ends = np.searchsorted(users, order_users, side="right")
    grouped_items = [items[s:e] for s, e in zip(starts, ends)]
    grouped_times = [times[s:e] for s, e in zip(starts, ends)] if times is not None else None
    return grouped_items, grouped_times


def _phase(name, history_parts, target_part, uid, iid, tid) -> Phase:
    users = np.unique(target_part[uid])
    positives, _ = _group(target_part[uid], target_part[iid], None, users)
    h_users = np.concatenate([p[uid] for p in history_parts])
    h_items = np.concatenate([p[iid] for p in history_parts])
    h_times = np.concatenate([p[tid] for p in history_parts]).astype(np.float64) if tid else None
    items, times = _group(h_users, h_items, h_times, users)
    return Phase(name, users, [np.unique(p) for p in positives], items, times)


def load_reference(protocol_config) -> ReferenceData:
    """Build the protocol's dataset and split once (seeded as quick_start.build does)."""
    compat.set_seed(protocol_config["seed"], protocol_config["reproducibility"])
    dataset = create_dataset(protocol_config)
    train, valid, test = dataset.build()
    uid, iid = dataset.uid_field, dataset.iid_field
    tid = dataset.time_field if dataset.time_field and dataset.time_field in dataset.inter_feat else None
    fields = [f for f in (uid, iid, tid) if f]
    parts = {name: compat.split_interactions(split, fields) for name, split in
             (("train", train), ("valid", valid), ("test", test))}
    n_items = int(dataset.item_num)
    popularity = np.bincount(parts["train"][iid], minlength=n_items).astype(np.float64)
    first_time = np.full(n_items, np.nan)
    origin, span, keys, stride = 0.0, 1.0, None, 0.0
    if tid:
        train_times = parts["train"][tid].astype(np.float64)
        order = np.argsort(train_times, kind="stable")[::-1]  # latest first, so the earliest write wins
        first_time[parts["train"][iid][order]] = train_times[order]
        origin = float(train_times.min())
        span = float(train_times.max() - origin) or 1.0
        stride = 10.0 ** np.ceil(np.log10(span + 2.0))
        if n_items * stride < 2.0 ** 53:
            keys = np.sort(parts["train"][iid].astype(np.float64) * stride + (train_times - origin))
    phases = {
        "valid": _phase("valid", [parts["train"]], parts["valid"], uid, iid, tid),
        "test": _phase("test", [parts["train"], parts["valid"]], parts["test"], uid, iid, tid),
    }
    return ReferenceData(dataset, n_items, checkpoint.dataset_fingerprint(dataset), popularity,
                         compat.item_counts(train), first_time, origin, span, phases, keys, stride)
