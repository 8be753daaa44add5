"""Tiny synthetic datasets with a planted, known answer.

`write_ring_dataset`: items sit on rings; every user walks consecutive items of one ring, one step per timestamp.
Under leave-one-out by time the test item is the one after the validation item, so
  - a sequential model that learns "next = current + 1" ranks it first;
  - a collaborative model ranks it near the top: it is adjacent to the user's segment, and other users' walks
    make neighbouring items co-occur;
  - popularity cannot tell it apart (all items are about equally popular).
"""
from __future__ import annotations

import os

import numpy as np


def ring_walks(n_users=80, n_rings=2, ring_size=20, walk_length=10, seed=0):
    """[(user, [items in time order])], item ids 1..n_rings*ring_size."""
    rng = np.random.default_rng(seed)
    walks = []
    for user in range(1, n_users + 1):
        ring = int(rng.integers(n_rings))
        start = int(rng.integers(ring_size))
        items = [ring * ring_size + (start + step) % ring_size + 1 for step in range(walk_length)]
        walks.append((user, items))
    return walks


def write_ring_dataset(root, name="planted", **kwargs) -> str:
    """Write `<root>/<name>/<name>.inter` (RecBole atomic format) and return `root` (the data_path)."""
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, items in ring_walks(**kwargs):
            for step, item in enumerate(items):
                f.write(f"{user}\t{item}\t{1 + (user + step) % 5}\t{user * 1000 + step}\n")
    return str(root)


def write_histories(root, histories, name) -> str:
    """Write `<root>/<name>/<name>.inter` from {user token: [item tokens in time order]} (timestamps 1000 * user +
    step) and return `root` (the data_path)."""
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, items in histories.items():
            for step, item in enumerate(items):
                f.write(f"{user}\t{item}\t{1 + (int(user) + step) % 5}\t{int(user) * 1000 + step}\n")
    return str(root)


#: Settings for fast runs on the planted data (protocol of properties/overall.yaml, smaller everything).
FAST = {
    "show_progress": False,
    "state": "WARNING",
    "topk": [5],
    "metrics": ["Hit", "NDCG"],
    "valid_metric": "NDCG@5",
    "train_batch_size": 256,
    "eval_batch_size": 256,
}
