"""The stacker's feature matrix: one row per (user, candidate), float32, NaN where a value does not exist.

Columns (in this order; names are the LightGBM feature names):
  <model>_score, <model>_rank, <model>_proposed   per base model: its score, its full-ranking rank (1 = best; an
                                                  item the model masks: score NaN, rank = n_items), and whether
                                                  the item is in its top-N
  n_models_proposing                              how many base models proposed the item
  item_popularity                                 training-split interactions of the item
  user_history_length                             interactions in the user's history in this phase
  user_last_time, user_last_gap                   (with timestamps) when the user was last active, and the gap to
                                                  the interaction before, as fractions of the training time span
  item_age_at_user_time                           (with timestamps) user's last activity - the item's first
                                                  training interaction, same unit (NaN: never in training)
  item_popularity_window_<w>                      (with timestamps) training interactions of the item in the
                                                  window of w x the time span that ends at the user's last
                                                  activity: what was popular when the user was active
  <modality>_similarity                           cosine between the candidate's feature vector and the mean of
                                                  the user's last k items' vectors (NaN: either has none)

Every value is computed from the phase's history only: in the valid phase the training split, in the test phase
training + validation. No column reads a target.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK_ROWS = 4096  # rows per block when gathering content vectors ([rows x dim] floats at a time)


@dataclass
class FeatureFrame:
    names: list
    matrix: np.ndarray                # [n_rows, n_features] float32
    pool: object                      # candidates.CandidatePool the rows belong to

    def column(self, name: str) -> np.ndarray:
        return self.matrix[:, self.names.index(name)]


def unit_rows(matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; rows without the modality (mask False) are zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out = np.where(norms > 0, matrix / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    out[~np.asarray(mask, dtype=bool)] = 0.0
    return out


def content_similarity(pool, unit: np.ndarray, has: np.ndarray, recent_k: int) -> np.ndarray:
    """[n_rows] cosine between each candidate and its user's content profile (mean of the last `recent_k` history
    items that have the modality, renormalised)."""
    phase = pool.phase
    profiles = np.zeros((len(phase.users), unit.shape[1]), dtype=np.float32)
    for u, history in enumerate(phase.history_items):
        recent = [item for item in history[::-1] if has[item]][:recent_k]
        if recent:
            mean = unit[recent].mean(axis=0)
            norm = np.linalg.norm(mean)
            profiles[u] = mean / norm if norm > 0 else 0.0
    row_user = pool.row_user
    out = np.empty(len(pool.items), dtype=np.float32)
    for start in range(0, len(out), _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        out[rows] = np.einsum("ij,ij->i", unit[pool.items[rows]], profiles[row_user[rows]])
    missing = ~has[pool.items] | ~profiles.any(axis=1)[row_user]
    out[missing] = np.nan
    return out


def build_features(pool, model_scores: dict, prefixes: dict, reference, content: dict, recent_k: int,
                   popularity_windows=()) -> FeatureFrame:
    """The feature matrix of `pool`.

    model_scores: label -> (scores, ranks) from candidates.scores_at_candidates; prefixes: label -> feature-name
    prefix; reference: phases.ReferenceData; content: modality -> (unit item vectors [n_items, d], has [n_items]);
    popularity_windows: fractions w of the training time span for item_popularity_window_<w>.
    """
    phase = pool.phase
    row_user = pool.row_user
    columns, names = [], []

    def add(name, values):
        names.append(name)
        columns.append(np.asarray(values, dtype=np.float32))

    for m, label in enumerate(pool.labels):
        scores, ranks = model_scores[label]
        prefix = prefixes[label]
        add(f"{prefix}_score", scores)
        add(f"{prefix}_rank", ranks)
        add(f"{prefix}_proposed", pool.proposed[:, m])
    add("n_models_proposing", pool.proposed.sum(axis=1))
    add("item_popularity", reference.item_popularity[pool.items])
    history_length = np.array([len(h) for h in phase.history_items], dtype=np.float32)
    add("user_history_length", history_length[row_user])
    if phase.history_times is not None:
        span, origin = reference.time_span, reference.time_origin
        last = np.array([t[-1] if len(t) else np.nan for t in phase.history_times])
        previous = np.array([t[-2] if len(t) > 1 else np.nan for t in phase.history_times])
        add("user_last_time", ((last - origin) / span)[row_user])
        add("user_last_gap", ((last - previous) / span)[row_user])
        add("item_age_at_user_time", (last[row_user] - reference.item_first_time[pool.items]) / span)
        if reference.item_time_keys is not None:
            end = last[row_user]
            for window in popularity_windows:
                add(f"item_popularity_window_{window:g}",
                    reference.item_interactions_between(pool.items, end - window * span, end))
    for modality, (unit, has) in content.items():
        add(f"{modality}_similarity", content_similarity(pool, unit, has, recent_k))
    matrix = np.stack(columns, axis=1) if columns else np.zeros((len(pool.items), 0), np.float32)
    return FeatureFrame(names, matrix, pool)
