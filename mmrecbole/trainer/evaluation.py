"""Metrics beyond RecBole's averages: per-user top-k metrics (for paired significance tests), RecBole's metrics of
ranked lists produced outside its trainer (the LGBMStacker), and full-ranking scores read through a trainer.

Every number is computed by RecBole's own metric classes, so a stacker row and a model row are measured alike.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Evaluator
from recbole.evaluator.base_metric import TopkMetric
from recbole.evaluator.collector import DataStruct
from recbole.evaluator.register import metrics_dict

from mmrecbole import compat
from mmrecbole.errors import ConfigError


def per_user_topk_metrics(config, struct) -> dict:
    """{"ndcg@10": np.ndarray [n_eval_rows], ...}: RecBole's top-k metrics before averaging over users."""
    if "rec.topk" not in struct:
        return {}
    values = {}
    for name in config["metrics"]:
        metric = metrics_dict[name.lower()](config)
        if not isinstance(metric, TopkMetric):
            continue
        pos_index, pos_len = metric.used_info(struct)
        # [rows, max(topk)]: the metric at 1..max(topk); Hit/MRR/Precision take no pos_len
        takes_len = len(inspect.signature(metric.metric_info).parameters) == 2
        per_user = metric.metric_info(pos_index, pos_len) if takes_len else metric.metric_info(pos_index)
        for k in config["topk"]:
            values[f"{name.lower()}@{k}"] = per_user[:, k - 1]
    return values


#: What a ranked list of item ids can feed to RecBole's metric classes (see `ranked_list_metrics`).
RANKED_LIST_STRUCT_KEYS = frozenset({"rec.topk", "rec.items", "data.num_items", "data.count_items"})


@torch.no_grad()
def full_sort_scores(trainer, eval_loader):
    """Yield (internal user ids [b] np.int64, scores [b, item_num] float32 CPU tensor) per batch of a full-ranking
    eval loader, through the trainer's own `_full_sort_batch_eval`: padding and seen items are -inf exactly as in
    the trainer's evaluation (the evaluation loaders carry every user's history, for sequential models too), so
    scores read here rank the same candidates as the model's own leaderboard row.

    `_full_sort_batch_eval` needs `tot_item_num` (and `item_tensor` for models without `full_sort_predict`), which
    RecBole 1.2.1's `Trainer.evaluate` sets just before its batch loop; we set them the same way."""
    if not isinstance(eval_loader, FullSortEvalDataLoader):
        raise ConfigError("full-ranking scores need eval_args mode: full (got a sampled-candidates loader)")
    dataset = compat.dataset_of(eval_loader)
    trainer.model.eval()
    trainer.tot_item_num = dataset.item_num
    if trainer.item_tensor is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    uid_field = trainer.config["USER_ID_FIELD"]
    for batch in eval_loader:
        interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
        yield interaction[uid_field].cpu().numpy().astype(np.int64), scores.float().cpu()


def metrics_needing_more_than_ranked_lists(metric_names) -> list:
    """The metrics (of `metric_names`) whose RecBole class needs more than a ranked list of items per user (e.g.
    GAUC needs every item's score rank, AUC/LogLoss raw scores and labels)."""
    unsupported = []
    for name in metric_names:
        metric = metrics_dict.get(str(name).lower())
        if metric is None or not set(metric.metric_need) <= RANKED_LIST_STRUCT_KEYS:
            unsupported.append(name)
    return unsupported


def ranked_list_metrics(config, ranked_items, hits, positives_count, num_items, item_counter):
    """RecBole's metrics (Evaluator, per-user top-k metrics) of ranked lists produced outside its trainer.

    ranked_items: int64 [n_users, max(topk)] item ids (0 = nothing at that position); hits: int [n_users,
    max(topk)], 1 where the item is a positive; positives_count: int [n_users]; num_items: the dataset's item_num;
    item_counter: training-split interaction counts per item (RecBole's `dataset.item_counter`). This is the
    DataStruct RecBole's Collector would build ("rec.items", "rec.topk" = hits + number of positives,
    "data.num_items", "data.count_items"), so every metric is computed by the same class as for every other row.

    Returns (metrics {name@k: value}, per-user top-k metrics {name@k: np.ndarray}).
    """
    ranked = torch.as_tensor(np.asarray(ranked_items, dtype=np.int64))
    hit_flags = torch.as_tensor(np.asarray(hits, dtype=np.int64)).int()
    counts = torch.as_tensor(np.asarray(positives_count, dtype=np.int64)).int().reshape(-1, 1)
    struct = DataStruct()
    struct.set("rec.items", ranked)
    struct.set("rec.topk", torch.cat([hit_flags, counts], dim=1))
    struct.set("data.num_items", int(num_items))
    struct.set("data.count_items", item_counter)
    metrics = {k: float(v) for k, v in Evaluator(config).evaluate(struct).items()}
    return metrics, per_user_topk_metrics(config, struct)
