"""Serving a saved LGBMStacker folder: its base models' bundles score the request, the stacker's own candidate and
feature code builds the rows, its LightGBM model ranks them.

The folder needs `serving.bundle` (mmrecbole.ensemble.serving_reference: written by the pipeline after fitting, with
the base models' bundles). For the users asked, the base models' masked full-ranking scores (seen items = the user's
known history) give each model's top-N, their union is the candidate pool, and `ensemble.pipeline.phase_frame`
computes the same features as in the stacker's test phase, with the user's known history as the phase's history.
Given the test phase's histories it reproduces the pipeline's test ranking exactly (tests/test_serving_stacker.py).
"""
from __future__ import annotations

import json
import os
from typing import List, Sequence

import numpy as np
import torch

from mmrecbole.errors import CheckpointError, ServingError
from mmrecbole.serving.recommender import Recommendations, RecommendedItem, Recommender, _checked_k


def is_stacker_folder(path) -> bool:
    from mmrecbole.ensemble.stacker import META_FILE

    return os.path.isdir(str(path)) and os.path.isfile(os.path.join(str(path), META_FILE))


class _Settings:
    """The part of StackerSettings `phase_frame` reads, from the folder's meta.json."""

    class _Base:
        def __init__(self, label):
            from mmrecbole.ensemble.settings import feature_prefix

            self.label, self.feature_prefix = label, feature_prefix(label)

    def __init__(self, extra: dict):
        self.values = extra["settings"]
        self.base_models = [self._Base(b["label"]) for b in extra["base_models"]]

    def __getitem__(self, key):
        return self.values[key]


class _BundleScorer:
    """A base model's masked scores for a serving phase, in the shape candidates.py streams them."""

    def __init__(self, label: str, recommender: Recommender, batch_size: int = 256):
        self.label, self.recommender, self.batch_size = label, recommender, batch_size

    def batches(self, phase_name: str):
        phase = self.phase
        for start in range(0, len(phase.users), self.batch_size):
            users = phase.users[start:start + self.batch_size]
            histories = phase.history_items[start:start + self.batch_size]
            scores, _ = self.recommender.masked_scores([int(u) for u in users], histories)
            yield users, scores


class StackerRecommender:
    """`Recommender`'s `recommend(users, k)` for a saved LGBMStacker (known users only)."""

    def __init__(self, folder: str, device=None):
        from mmrecbole.ensemble import serving_reference
        from mmrecbole.ensemble.stacker import LGBMStacker

        self.folder = str(folder)
        self.stacker = LGBMStacker.load(self.folder)
        extra = self.stacker.meta.get("extra", {})
        path = os.path.join(self.folder, serving_reference.FILE)
        if not os.path.isfile(path):
            raise CheckpointError(f"{self.folder} has no {serving_reference.FILE}: it was saved without serving data "
                                  "(save_bundle: False, e.g. by a leaderboard); refit the stacker with save_bundle "
                                  "on")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != serving_reference.FORMAT:
            raise CheckpointError(f"{path} is not a stacker serving file (expected {serving_reference.FORMAT})")
        meta = json.loads(payload["meta_json"])
        self.bases = [Recommender.load(b, device=device) for b in meta["base_bundles"]]
        first = self.bases[0]
        for base in self.bases[1:]:
            if base.bundle.user_ids != first.bundle.user_ids or base.bundle.item_ids != first.bundle.item_ids:
                raise CheckpointError(f"the base models of {self.folder} were built on different id maps")
        self.settings = _Settings(extra)
        self.labels = [b.label for b in self.settings.base_models]
        self.reference = self._reference(payload, meta, first)
        self.content = {m: (t["unit"].numpy(), t["has"].numpy()) for m, t in payload["content"].items()}
        self.model_name, self.dataset_name = "LGBMStacker", extra.get("dataset", first.dataset_name)
        self.user_index, self.item_index = first.user_index, first.item_index
        self.sequential = False

    @staticmethod
    def _reference(payload, meta, first):
        from mmrecbole.ensemble.phases import ReferenceData

        keys = payload["item_time_keys"].numpy() if meta["has_time_keys"] else None
        return ReferenceData(dataset=None, n_items=first.n_items, fingerprint=None,
                             item_popularity=payload["item_popularity"].numpy(), item_counter=None,
                             item_first_time=payload["item_first_time"].numpy(), time_origin=meta["time_origin"],
                             time_span=meta["time_span"], phases={}, item_time_keys=keys,
                             key_stride=meta["key_stride"])

    def known_users(self) -> List[str]:
        return self.bases[0].known_users()

    def history_of(self, user: str) -> List[str]:
        return self.bases[0].history_of(user)

    def item(self, item_id: str) -> dict:
        return self.bases[0].item(item_id)

    def recommend(self, users: Sequence, k: int = 10, exclude_seen: bool = True, explain: bool = False,
                  batch_size: int = 256) -> List[Recommendations]:
        if not exclude_seen:
            raise ServingError("the stacker's candidates never hold seen items: exclude_seen must stay on")
        base = self.bases[0]
        internal = base._user_ids(users)
        histories = [base._history(u) for u in internal]
        times = [base.bundle.history["timestamps"][base._indptr[u]:base._indptr[u + 1]].numpy()
                 for u in internal] if "timestamps" in base.bundle.history else None
        return self.rank(internal, histories, times, _checked_k(k, base.n_items - 1))

    def recommend_history(self, history, k=10, exclude_seen=True, explain=False):
        raise ServingError("LGBMStacker ranks known users only: its features include its base models' per-user "
                           "scores; ask for a user, or serve one of its base models for a session")

    def add_items(self, rows, image_dir=None):
        raise ServingError("LGBMStacker cannot take new items at serving time: add them to its content base models")

    def rank(self, users, histories, times, k: int) -> List[Recommendations]:
        """Top-k for internal user ids given their histories (internal item ids and timestamps, oldest first)."""
        from mmrecbole.ensemble import pipeline
        from mmrecbole.ensemble.evaluation import ranked_lists
        from mmrecbole.ensemble.phases import Phase

        order = np.argsort(users, kind="stable")  # the pool's code wants a phase's users ascending
        phase = Phase("serve", np.asarray(users)[order], [np.zeros(0, np.int64)] * len(users),
                      [np.asarray(histories[i]) for i in order],
                      [np.asarray(times[i], dtype=np.float64) for i in order] if times is not None else None)
        scorers = [_BundleScorer(label, base) for label, base in zip(self.labels, self.bases)]
        for scorer in scorers:
            scorer.phase = phase
        frame = pipeline.phase_frame(phase, scorers, self.settings, self.reference, self.content)
        scores = self.stacker.predict(frame.matrix)
        lists = ranked_lists(frame.pool, scores, k)
        by_row = {(int(u), int(i)): float(s) for u, i, s in zip(frame.pool.row_user, frame.pool.items, scores)}
        meta, ids = self.bases[0].bundle.items, self.bases[0].bundle.item_ids
        answers = [None] * len(users)
        for row, position in enumerate(order):
            items = [RecommendedItem(rank=r + 1, item_id=ids[item], score=by_row[(row, int(item))],
                                     title=meta["title"][item], image=meta["image"][item])
                     for r, item in enumerate(lists[row]) if item > 0]
            answers[position] = Recommendations(user=self.bases[0].bundle.user_ids[users[position]],
                                                history_length=len(histories[position]), items=items)
        return answers
