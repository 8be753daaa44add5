"""Candidates: per user, the union of every base model's top-N unseen items, and each model's score and rank of them.

Scores come from each base model's own evaluation loader through its trainer (`trainer.evaluation.full_sort_scores`), so seen
items are masked exactly as in the model's leaderboard row. They are streamed batch by batch in two passes rather
than kept as [users x items] matrices: pass one takes each model's top-N (the pool needs every model's before it
exists), pass two reads every model's score and full-ranking rank at the pooled items. Memory stays at one batch of
scores plus [rows x models] numbers, whatever the item count.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from mmrecbole.trainer import make_trainer
from mmrecbole.trainer.evaluation import full_sort_scores
from mmrecbole.errors import DatasetError

logger = logging.getLogger(__name__)


class BaseScorer:
    """A loaded base model that streams its masked full-ranking scores for the valid or test phase."""

    def __init__(self, label: str, loaded):
        self.label = label
        self.loaded = loaded
        config = loaded.config
        self.trainer = make_trainer(config, loaded.model)

    def batches(self, phase_name: str):
        loader = self.loaded.valid if phase_name == "valid" else self.loaded.test
        yield from full_sort_scores(self.trainer, loader)


def _rows_of(users, phase_users, label, phase_name):
    index = np.searchsorted(phase_users, users)
    index = np.minimum(index, len(phase_users) - 1)
    if not np.array_equal(phase_users[index], users):
        raise DatasetError(f"base model {label} evaluates users in the {phase_name} phase that the protocol's split "
                           "does not (was it trained on another split?)")
    return index


@dataclass
class CandidatePool:
    """Rows = (user, candidate item) pairs, grouped by user in the phase's user order."""

    phase: object                     # phases.Phase
    offsets: np.ndarray               # [n_users + 1]: rows of user i are offsets[i]:offsets[i + 1]
    items: np.ndarray                 # [n_rows] candidate item ids
    proposed: np.ndarray              # [n_rows, n_models] bool: model m has the item in its top-N
    labels: list                      # base model labels, column order of `proposed`

    @property
    def group_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def row_user(self) -> np.ndarray:
        """[n_rows] index into phase.users of each row."""
        return np.repeat(np.arange(len(self.phase.users)), self.group_sizes)

    def relevance(self) -> np.ndarray:
        """[n_rows] 1 where the candidate is one of the user's targets in this phase, else 0."""
        out = np.zeros(len(self.items), dtype=np.int32)
        for i, positives in enumerate(self.phase.positives):
            rows = slice(self.offsets[i], self.offsets[i + 1])
            out[rows] = np.isin(self.items[rows], positives)
        return out

    def recall(self) -> float:
        """Share of the phase's users with at least one target among their candidates: the most a reranker of
        this pool can reach on Hit@k."""
        found = np.add.reduceat(self.relevance(), self.offsets[:-1]) if len(self.items) else np.zeros(1)
        found = np.where(self.group_sizes > 0, found, 0)
        return float((found > 0).mean()) if len(found) else 0.0

    def keep(self, mask: np.ndarray) -> "CandidatePool":
        """The pool without the rows where `mask` is False."""
        counts = np.add.reduceat(mask.astype(np.int64), self.offsets[:-1]) if len(mask) else np.zeros(0, np.int64)
        counts = np.where(self.group_sizes > 0, counts, 0)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return CandidatePool(self.phase, offsets, self.items[mask], self.proposed[mask], self.labels)


def top_n_items(scores: torch.Tensor, n: int):
    """(values, item ids) [rows, n] of each row's n best scores, equal scores by item id (lowest first).

    torch.topk orders tied scores its own way, which changes with the batch's shape and the CPU: a pool built from
    its ties would differ between the pipeline's evaluation batches and serving's (Pop's integer counts, items with
    identical factors). Only rows with a tie across the n-th place are sorted in full."""
    values, items = torch.topk(scores, n, dim=1)
    kth = values[:, -1:]
    crossing = ((scores == kth).sum(dim=1) > (values == kth).sum(dim=1)).nonzero().flatten()
    if len(crossing):
        sorted_values, sorted_items = torch.sort(scores[crossing], dim=1, descending=True, stable=True)
        values[crossing], items[crossing] = sorted_values[:, :n], sorted_items[:, :n]
    values, items = values.numpy(), items.numpy()
    order = np.lexsort((items, -values.astype(np.float64)), axis=1)
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(items, order, axis=1)


def top_n(scorer: BaseScorer, phase, n: int) -> np.ndarray:
    """[n_users, n] each user's top-n item ids by the model's masked scores, ties by item id (-1 where fewer unseen
    items)."""
    out = np.full((len(phase.users), n), -1, dtype=np.int64)
    seen = np.zeros(len(phase.users), dtype=bool)
    for users, scores in scorer.batches(phase.name):
        rows = _rows_of(users, phase.users, scorer.label, phase.name)
        values, items = top_n_items(scores, min(n, scores.shape[1]))
        items[~np.isfinite(values)] = -1
        out[rows, : items.shape[1]] = items
        seen[rows] = True
    if not seen.all():
        raise DatasetError(f"base model {scorer.label} scores {int(seen.sum())} of the {len(seen)} users of the "
                           f"{phase.name} phase (was it trained on another split?)")
    return out


def pool_candidates(phase, proposals: dict) -> CandidatePool:
    """Union per user of every model's top-N (`proposals`: label -> [n_users, n] from `top_n`), ordered by the
    best position any model gave the item (then item id), which also breaks ties in the stacker's ranking."""
    labels = list(proposals)
    stacked = np.stack([proposals[label] for label in labels], axis=1)  # [users, models, n]
    n_users, n_models, n = stacked.shape
    positions = np.broadcast_to(np.arange(n), stacked.shape)
    items_out, proposed_out, sizes = [], [], np.zeros(n_users, dtype=np.int64)
    for u in range(n_users):
        flat_items, flat_pos = stacked[u].reshape(-1), positions[u].reshape(-1)
        valid = flat_items >= 0
        flat_items, flat_pos = flat_items[valid], flat_pos[valid]
        order = np.lexsort((flat_items, flat_pos))
        unique, first = np.unique(flat_items[order], return_index=True)
        ordered = unique[np.argsort(first, kind="stable")]
        proposed = np.stack([np.isin(ordered, stacked[u, m]) for m in range(n_models)], axis=1)
        items_out.append(ordered)
        proposed_out.append(proposed)
        sizes[u] = len(ordered)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    items = np.concatenate(items_out) if items_out else np.zeros(0, np.int64)
    proposed = np.concatenate(proposed_out) if proposed_out else np.zeros((0, n_models), bool)
    return CandidatePool(phase, offsets, items, proposed, labels)


def scores_at_candidates(scorer: BaseScorer, pool: CandidatePool, n_items: int):
    """(scores [n_rows] float32, ranks [n_rows] float32, masked [n_rows] bool) of one model at the pooled items.

    rank = 1 + the number of items the model scores strictly higher (ties share a rank, so Pop's ties do not
    depend on sort order). An item the model masks (seen by the user) gets score NaN and rank n_items: the
    explicit "missing" sentinels."""
    phase = pool.phase
    scores_out = np.full(len(pool.items), np.nan, dtype=np.float32)
    ranks_out = np.full(len(pool.items), float(n_items), dtype=np.float32)
    masked = np.zeros(len(pool.items), dtype=bool)
    for users, scores in scorer.batches(phase.name):
        rows = _rows_of(users, phase.users, scorer.label, phase.name)
        ascending = torch.sort(scores, dim=1).values
        for b, u in enumerate(rows):
            span = slice(pool.offsets[u], pool.offsets[u + 1])
            candidates = torch.from_numpy(pool.items[span])
            values = scores[b, candidates]
            finite = torch.isfinite(values)
            greater = scores.shape[1] - torch.searchsorted(ascending[b], values, right=True)
            scores_out[span] = torch.where(finite, values, torch.nan).numpy()
            ranks_out[span] = torch.where(finite, (greater + 1).float(), float(n_items)).numpy()
            masked[span] = (~finite).numpy()
    return scores_out, ranks_out, masked
