"""Explanations of a batch of recommendations (docs/serving.md "Explanations").

- contributions: the model's exact per-source split of each score (contract.score_parts: for content models the
  candidate item's fusion terms, ID / text / image, whose parts sum to the score); shares = |part| / sum |parts|.
- neighbours: per modality the model reads, the 3 items of the user's history most similar to the recommended item
  in that modality's frozen features (cosine), with their titles.
- attention: for sequential models that expose it (contract.history_attention), the history items the last
  position attended to most (weights over the input window, summing to 1).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from mmrecbole import contract

NEIGHBOURS = 3
ATTENDED = 5


def unit_features(recommender) -> dict:
    """{modality: (unit-norm features [item_num, d], presence mask)} of the bundle, computed once per recommender."""
    cached = getattr(recommender, "_unit_features", None)
    if cached is None:
        cached = {}
        for modality, table in recommender.bundle.content.items():
            matrix = torch.nn.functional.normalize(table["matrix"].float(), dim=1)
            cached[modality] = (matrix, table["mask"].bool())
        recommender._unit_features = cached
    return cached


class BatchExplanation:
    def __init__(self, recommender, names, parts, neighbours, attention):
        self.recommender, self.names, self.parts = recommender, names, parts
        self.neighbours, self.attention = neighbours, attention

    def apply(self, row: int, items) -> Optional[List[dict]]:
        """Fill the explanation fields of one row's RecommendedItems; return the row's attended history items."""
        for column, item in enumerate(items):
            if self.parts is not None:
                values = [float(v) for v in self.parts[row, column]]
                item.contributions = dict(zip(self.names, values))
                total = sum(abs(v) for v in values) or 1.0
                item.shares = {name: abs(v) / total for name, v in zip(self.names, values)}
            if self.neighbours is not None:
                item.neighbours = self.neighbours[row][column]
        return self.attention[row] if self.attention is not None else None


def _describe(recommender, item: int, **extra) -> dict:
    return {"item_id": recommender.bundle.item_ids[item], "title": recommender.bundle.items["title"][item], **extra}


def _neighbours(recommender, histories, top_items) -> Optional[list]:
    tables = unit_features(recommender)
    if not tables:
        return None
    result = []
    for row, history in enumerate(histories):
        known = np.unique(np.asarray(history, dtype=np.int64))
        per_item = [{} for _ in range(top_items.shape[1])]
        for modality, (matrix, mask) in tables.items():
            present = known[mask[known].numpy()]
            if not len(present):
                continue
            candidates = top_items[row]
            similarity = matrix[candidates] @ matrix[torch.from_numpy(present)].T  # [k, history items]
            best = torch.topk(similarity, min(NEIGHBOURS, len(present)), dim=1)
            for column, item in enumerate(candidates.tolist()):
                if not bool(mask[item]):
                    continue
                per_item[column][modality] = [
                    _describe(recommender, int(present[j]), similarity=round(float(s), 4))
                    for s, j in zip(best.values[column], best.indices[column])]
        result.append(per_item)
    return result


def _attention(recommender, interaction) -> Optional[list]:
    weights = contract.history_attention(recommender.model, interaction)
    if weights is None:
        return None
    weights = weights.float().cpu()
    sequences = interaction[recommender.model.ITEM_SEQ].cpu()
    lengths = interaction[recommender.model.ITEM_SEQ_LEN].cpu()
    result = []
    for row in range(len(lengths)):
        n = int(lengths[row])
        top = torch.topk(weights[row, :n], min(ATTENDED, n))
        # position 1 = the most recent history item
        result.append([_describe(recommender, int(sequences[row, p]), position=n - int(p), weight=round(float(w), 4))
                       for w, p in zip(top.values, top.indices)])
    return result


def explain_batch(recommender, interaction, histories, top_items) -> BatchExplanation:
    names, parts, attention = None, None, None
    if interaction is not None:
        with torch.no_grad():
            split = contract.score_parts(recommender.model, interaction, top_items.to(recommender.device))
            if split is not None:
                names, parts = split[0], split[1].float().cpu()
            attention = _attention(recommender, interaction) if recommender.sequential else None
    return BatchExplanation(recommender, names, parts, _neighbours(recommender, histories, top_items), attention)
