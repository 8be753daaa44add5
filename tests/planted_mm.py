"""A planted multimodal dataset: what follows an item is written in its features, not in its id.

Items sit on rings, as in tests/planted.py, but their ids are shuffled, and each item's features encode its ring and
its position on it (harmonics of the angle). Users walk a few consecutive items, so each id transition is seen
only a handful of times: an ID-only model has little to learn from, while a model reading the features can learn
the one rule "next = one step further round the ring" and apply it to every item, including items it never saw.
"""
from __future__ import annotations

import os

import numpy as np

from mmrecbole.features import FeatureTable


def ring_item_features(n_rings, ring_size, harmonics=6, seed=0):
    """[n_rings * ring_size, 2 * harmonics + n_rings] features; row = ring * ring_size + position."""
    rows = []
    for ring in range(n_rings):
        for position in range(ring_size):
            angle = 2 * np.pi * position / ring_size
            waves = [f(k * angle) for k in range(1, harmonics + 1) for f in (np.cos, np.sin)]
            rows.append(waves + list(np.eye(n_rings)[ring] * 2.0))
    return np.asarray(rows, dtype=np.float32)


def write_planted_mm(root, name="plantedmm", n_users=200, n_rings=4, ring_size=40, walk_length=8,
                     image_missing_share=0.2, cold_share=0.15, seed=0):
    """Write `<root>/<name>/<name>.inter` and text/image FeatureTables; return (data_path, {modality: path}, cold
    item tokens).

    A `cold_share` of the items occur only as some users' last (test) item: never in training or validation."""
    rng = np.random.default_rng(seed)
    n_items = n_rings * ring_size
    token_of = rng.permutation(n_items) + 1  # ring slot -> item token: ids say nothing about the rings
    cold = rng.random(n_items) < cold_share  # by ring slot
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user in range(1, n_users + 1):
            while True:
                ring, start = int(rng.integers(n_rings)), int(rng.integers(ring_size))
                slots = [ring * ring_size + (start + step) % ring_size for step in range(walk_length)]
                if not cold[slots[:-1]].any():
                    break
            for step in range(walk_length):
                slot = ring * ring_size + (start + step) % ring_size
                f.write(f"{user}\t{token_of[slot]}\t{1 + (user + step) % 5}\t{user * 1000 + step}\n")

    base = ring_item_features(n_rings, ring_size)
    text = base + rng.normal(0, 0.05, base.shape).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(base.shape[1], base.shape[1])))
    image = (base @ rotation).astype(np.float32) + rng.normal(0, 0.05, base.shape).astype(np.float32)
    image_mask = rng.random(n_items) >= image_missing_share
    ids = [str(t) for t in token_of]
    files = {}
    for modality, matrix, mask in (("text", text, np.ones(n_items, bool)), ("image", image * image_mask[:, None],
                                                                             image_mask)):
        path = os.path.join(folder, f"{modality}-planted.npz")
        FeatureTable(ids, matrix, mask, {"dim": int(matrix.shape[1]), "modality": modality,
                                         "encoder": "planted"}, source=path).save(path)
        files[modality] = path
    return str(root), files, sorted(str(t) for t in token_of[cold])
