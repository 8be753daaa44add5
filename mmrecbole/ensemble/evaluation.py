"""The stacker's metrics, computed by RecBole's own metric classes like every other leaderboard row.

Each user's candidates are ranked by stacker score (ties: the pool's order, i.e. the best position a base model
gave the item); items outside the pool rank below every pooled item, so a target outside the pool is a miss at
every cut-off. The top max(topk) items become the ranked list RecBole's Collector would have built from a score
matrix (`trainer.evaluation.ranked_list_metrics`).
"""
from __future__ import annotations

import numpy as np

from mmrecbole.trainer.evaluation import ranked_list_metrics


def ranked_lists(pool, scores, k: int) -> np.ndarray:
    """[n_users, k] item ids of each user's top-k candidates by `scores` (0 where the pool is shorter)."""
    sizes = pool.group_sizes
    row_user = pool.row_user
    position_in_pool = np.arange(len(pool.items)) - np.repeat(pool.offsets[:-1], sizes)
    order = np.lexsort((position_in_pool, -np.asarray(scores, dtype=np.float64), row_user))
    out = np.zeros((len(sizes), k), dtype=np.int64)
    rank_in_user = np.arange(len(order)) - np.repeat(pool.offsets[:-1], sizes)
    top = rank_in_user < k
    out[row_user[order][top], rank_in_user[top]] = pool.items[order][top]
    return out


def evaluate_rankings(config, pool, scores, reference, users=None):
    """(metrics {name@k: value}, per-user top-k metrics {"user_index": [...], name@k: array}) of the pool ranked
    by `scores`, over all users of the pool's phase or the indices `users` into them."""
    k = max(config["topk"])
    ranked = ranked_lists(pool, scores, k)
    phase = pool.phase
    chosen = np.arange(len(phase.users)) if users is None else np.asarray(users)
    ranked = ranked[chosen]
    hits = np.zeros_like(ranked)
    counts = np.zeros(len(chosen), dtype=np.int64)
    for row, u in enumerate(chosen):
        positives = phase.positives[u]
        hits[row] = np.isin(ranked[row], positives) & (ranked[row] > 0)
        counts[row] = len(positives)
    metrics, per_user = ranked_list_metrics(config, ranked, hits, counts, reference.n_items,
                                                   reference.item_counter)
    return metrics, {"user_index": chosen, **per_user}
