"""Which users a refit trains and validates on (`refit_replay`, `refit_valid_users`).

A grown dataset's **updated users** are those with interactions the old model never saw: users new to it, and known
users with more interactions than the old version held (the old counts come from the parent's bundle, which keeps
every user's history). By default a refit trains and early-stops on everyone, as training from scratch does. With
`refit_replay` = r < 1 it trains on every updated user plus a random share r of the others (experience replay:
the others' histories, which the old model has already fitted, are revisited only in part, so an epoch costs about
(updated + r x others) / all of a full one); the model itself (a graph model's adjacency, a content model's tables)
and the negative sampler still see the whole training split, and the test split is untouched. With
`refit_valid_users: updated` the early stopping and the selection of the best epoch read only the updated users'
validation interactions: the users the update is for.
"""
from __future__ import annotations

import numpy as np

from mmrecbole.errors import ConfigError

#: Whose validation interactions a refit selects on (the `refit_valid_users` setting).
VALID_USERS = ("all", "updated")


def check_settings(replay, valid_users) -> None:
    """ConfigError naming the setting and its bound when refit_replay / refit_valid_users are out of range."""
    if isinstance(replay, bool) or not isinstance(replay, (int, float)) or not 0 <= replay <= 1:
        raise ConfigError(f"refit_replay must be a number in [0, 1] (the share of users without new interactions a "
                          f"refit trains on again; 1.0: all), got {replay!r}")
    if valid_users not in VALID_USERS:
        raise ConfigError(f"refit_valid_users must be one of {list(VALID_USERS)}, got {valid_users!r}")


def updated_users(old_rows, new_rows, old_counts, new_counts) -> np.ndarray:
    """bool [new user count]: True for the users of the grown dataset that are new (not among `new_rows`) or hold
    more interactions (`new_counts`, by new internal id) than the old version did (`old_counts`, by old internal id;
    `old_rows[i]` -> `new_rows[i]` pairs each kept user's ids, as mmrecbole.id_transfer.IdMap does). Row 0, the
    padding id, is False."""
    new_counts = np.asarray(new_counts, dtype=np.int64)
    old_rows, new_rows = np.asarray(old_rows, dtype=np.int64), np.asarray(new_rows, dtype=np.int64)
    before = np.full(len(new_counts), -1, dtype=np.int64)  # -1: a user the old version did not have
    before[new_rows] = np.asarray(old_counts, dtype=np.int64)[old_rows]
    updated = (before < 0) | (new_counts > before)
    updated[0] = False
    return updated


def replay_users(updated: np.ndarray, share: float, seed: int) -> np.ndarray:
    """bool like `updated`: every updated user plus round(share x the others) of the other users (row 0 excluded),
    drawn without replacement by a generator seeded with `seed`: the users a refit trains on."""
    check_settings(share, "all")
    chosen = np.asarray(updated, dtype=bool).copy()
    others = np.flatnonzero(~chosen[1:]) + 1
    count = int(round(share * len(others)))
    if count:
        chosen[np.random.default_rng(seed).choice(others, size=count, replace=False)] = True
    return chosen
