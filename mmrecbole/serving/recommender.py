"""`Recommender`: top-k items for known users or for a history, from a bundle, with optional explanations.

    rec = Recommender.load("saved/MMSASRec-....bundle")
    rec.recommend(users=["196", "186"], k=10)           # known users: their whole known history is excluded
    rec.recommend_history(["242", "302", "377"], k=10)  # an anonymous session or a new user

Every model family is scored through its own `full_sort_predict`, as in evaluation: general models by internal user
id, sequential models (RecBole's and ours) by the user's last MAX_ITEM_LIST_LENGTH items. A history request on a
general model needs the model's `history_scores` (ImplicitALS, ImplicitItemKNN, Pop); the others say they cannot.
Requests are answered in batches; a batch gives what one-by-one requests give.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from mmrecbole import contract
from mmrecbole.errors import ServingError, UnknownIdError
from mmrecbole.serving import bundle as bundle_io
from mmrecbole.export import check_servable


@dataclass
class RecommendedItem:
    rank: int
    item_id: str
    score: float
    title: Optional[str] = None
    image: Optional[str] = None
    #: source -> its exact part of `score` (they sum to it; docs/serving.md "Explanations"), when the model has them
    contributions: Optional[Dict[str, float]] = None
    #: source -> |part| / sum of |parts| (what the bars of the page and the CLI's shares column show)
    shares: Optional[Dict[str, float]] = None
    #: modality -> the (up to 3) history items closest to this item in that modality's features
    neighbours: Optional[Dict[str, List[dict]]] = None


@dataclass
class Recommendations:
    user: Optional[str]
    history_length: int
    items: List[RecommendedItem]
    #: history items the prediction's attention leaned on (sequential models with attention, when explained)
    attention: Optional[List[dict]] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _checked_k(k, n_candidates: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ServingError(f"k must be an integer >= 1, got {k!r}")
    return int(min(k, n_candidates))


class Recommender:
    """A trained model ready to answer requests (see the module docstring)."""

    def __init__(self, bundle: bundle_io.Bundle, config, model):
        from recbole.model.abstract_recommender import SequentialRecommender

        self.bundle, self.config, self.model = bundle, config, model
        self.device = torch.device(config["device"])
        self.sequential = isinstance(model, SequentialRecommender)
        self.max_length = int(config["MAX_ITEM_LIST_LENGTH"]) if self.sequential else None
        self.user_index = {raw: i for i, raw in enumerate(bundle.user_ids) if i > 0}
        self.item_index = {raw: i for i, raw in enumerate(bundle.item_ids) if i > 0}
        self.n_items = len(bundle.item_ids)
        self._indptr = bundle.history["indptr"].numpy()
        self._history_items = bundle.history["items"].numpy()
        self.load_seconds = None
        self._unit_features = None  # normalised feature tables of the explanations, computed on first use

    # -- loading ----------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, device: Optional[str] = None) -> "Recommender":
        """The bundle at `path` (see mmrecbole.serving.bundle), its model rebuilt and restored in eval mode.
        device: None = the bundle's settings (CUDA when it was configured and is present), "cpu" or "cuda"."""
        from mmrecbole.checkpoint import Checkpoint
        from mmrecbole.config import Config

        start = time.perf_counter()
        read = bundle_io.read(path)
        settings = dict(read.config)
        if device is not None:
            if device not in ("cpu", "cuda"):
                raise ServingError(f"device must be cpu or cuda, got {device!r}")
            if device == "cuda" and not torch.cuda.is_available():
                raise ServingError("device cuda asked for, but torch sees no CUDA device")
            settings["use_gpu"] = device == "cuda"
        config = Config(read.model, read.dataset, config_dict=settings)
        check_servable(config.model_class)
        model = config.model_class(config, bundle_io.BundleDataset(read, config))
        Checkpoint(path=read.path, meta=read.meta, config=read.config, training=read.training,
                   state_dict=read.state_dict, other_parameter=read.other_parameter,
                   optimizer_state=None).restore_into(model, device=config["device"])
        model = model.to(config["device"]).eval()
        recommender = cls(read, config, model)
        recommender.load_seconds = time.perf_counter() - start
        return recommender

    # -- new items --------------------------------------------------------------------------------------------------
    def add_items(self, rows, image_dir=None) -> List[str]:
        """Embed new items (rows of the .item file; images `<image_dir>/<id>.<ext>`) with the bundle's feature
        pipeline and rank them from then on (mmrecbole.serving.new_items). Returns their ids."""
        from mmrecbole.serving.new_items import add_items

        return add_items(self, rows, image_dir)

    def add_item_vectors(self, ids, vectors, metadata=None) -> List[str]:
        """New items from precomputed feature vectors ({modality: (matrix, present)}, the bundle's encoder space)."""
        from mmrecbole.serving.new_items import add_item_vectors

        return add_item_vectors(self, ids, vectors, metadata)

    def save(self, path) -> str:
        """Write this recommender as a bundle (with the items added since it was loaded) to `path`."""
        return bundle_io.rewrite(self.bundle, self.config, self.model, path)

    def extend_catalogue(self, added: int) -> None:
        """Rebuild the model over the bundle's (already extended) catalogue, carrying the trained tensors over as a
        refit does (mmrecbole.id_transfer): the new items' rows of item-indexed tensors are zero (no ID embedding or
        bias: no interactions), their feature rows are the rebuilt model's, computed from their content."""
        from mmrecbole.id_transfer import IdMap, transfer_state

        ids = self.bundle
        users = IdMap.between(ids.user_ids, ids.user_ids)
        items = IdMap.between(ids.item_ids[:len(ids.item_ids) - added], ids.item_ids)
        model = self.config.model_class(self.config, bundle_io.BundleDataset(self.bundle, self.config))
        state = transfer_state({k: v.cpu() for k, v in self.model.state_dict().items()}, model.state_dict(), users,
                               items)
        model.load_state_dict(state)
        self.model = model.to(self.config["device"]).eval()
        self.n_items = len(self.bundle.item_ids)
        self.item_index = {raw: i for i, raw in enumerate(self.bundle.item_ids) if i > 0}
        self._unit_features = None  # the explanations' cached feature tables

    # -- lookups ----------------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.bundle.model

    @property
    def dataset_name(self) -> str:
        return self.bundle.dataset

    def known_users(self) -> List[str]:
        return self.bundle.user_ids[1:]

    def history_of(self, user: str) -> List[str]:
        """The user's known interactions (raw item ids), oldest first."""
        internal = self._user_ids([user])[0]
        return [self.bundle.item_ids[i] for i in self._history(internal)]

    def item(self, item_id: str) -> dict:
        """{"item_id", "title", "text", "image"} of one item."""
        row = self._item_ids([item_id])[0]
        return {"item_id": item_id, **{key: self.bundle.items[key][row] for key in ("title", "text", "image")}}

    def _history(self, internal_user: int) -> np.ndarray:
        return self._history_items[self._indptr[internal_user]:self._indptr[internal_user + 1]]

    def _user_ids(self, users: Sequence) -> List[int]:
        users = [users] if isinstance(users, (str, int)) else users
        return self._internal(users, self.user_index, "user", f"the {self.dataset_name} data the model was trained "
                              f"on; {len(self.user_index)} users are known")

    def _item_ids(self, items: Sequence) -> List[int]:
        return self._internal(items, self.item_index, "item", f"the {self.dataset_name} catalogue of "
                              f"{len(self.item_index)} items")

    @staticmethod
    def _internal(ids: Sequence, index: dict, kind: str, where: str) -> List[int]:
        unknown = [i for i in ids if str(i) not in index]
        if unknown:
            raise UnknownIdError(f"unknown {kind} id{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(map(str, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} (not in "
                                 f"{where})")
        return [index[str(i)] for i in ids]

    # -- requests ---------------------------------------------------------------------------------------------------
    def recommend(self, users: Sequence, k: int = 10, exclude_seen: bool = True, explain: bool = False,
                  batch_size: int = 256) -> List[Recommendations]:
        """Top-k for each of `users` (raw ids), one Recommendations per user in order. exclude_seen: leave out every
        item of the user's known history (training, validation and test interactions)."""
        internal = self._user_ids(users)
        k = _checked_k(k, self.n_items - 1)
        histories = [self._history(u) for u in internal]
        return self._answer(internal, histories, k, exclude_seen, explain, batch_size, by_user=True)

    def recommend_history(self, history: Sequence, k: int = 10, exclude_seen: bool = True,
                          explain: bool = False) -> Recommendations:
        """Top-k after `history` (raw item ids, oldest first): an anonymous session or a user unknown to the model."""
        return self.recommend_histories([history], k=k, exclude_seen=exclude_seen, explain=explain)[0]

    def recommend_histories(self, histories: Sequence[Sequence], k: int = 10, exclude_seen: bool = True,
                            explain: bool = False, batch_size: int = 256) -> List[Recommendations]:
        if not self.sequential and not contract.scores_histories(self.model):
            raise ServingError(
                f"{self.model_name} cannot recommend from a history: it keeps one learned vector per training user "
                "and has no way to place a new one; ask for a known user, or serve a sequential model (SASRec, "
                "MMSASRec...), ImplicitALS, ImplicitItemKNN or Pop")
        k = _checked_k(k, self.n_items - 1)
        rows = []
        for history in histories:
            if isinstance(history, (str, bytes)) or not len(history):
                raise ServingError("a history must be a non-empty list of item ids (oldest first)")
            rows.append(np.asarray(self._item_ids(list(history)), dtype=np.int64))
        return self._answer(None, rows, k, exclude_seen, explain, batch_size, by_user=False)

    # -- scoring ----------------------------------------------------------------------------------------------------
    def sequence_interaction(self, histories: Sequence[np.ndarray], users=None):
        """RecBole's evaluation input for sequences: the last MAX_ITEM_LIST_LENGTH items, left-aligned, 0-padded."""
        from recbole.data.interaction import Interaction

        length = self.max_length
        seq = torch.zeros(len(histories), length, dtype=torch.long)
        lengths = torch.zeros(len(histories), dtype=torch.long)
        for row, history in enumerate(histories):
            tail = history[-length:]
            seq[row, :len(tail)] = torch.from_numpy(np.asarray(tail, dtype=np.int64))
            lengths[row] = len(tail)
        fields = {self.model.ITEM_SEQ: seq, self.model.ITEM_SEQ_LEN: lengths,
                  self.model.USER_ID: torch.as_tensor(users if users is not None else [0] * len(histories))}
        return Interaction(fields).to(self.device)

    def user_interaction(self, users: Sequence[int]):
        from recbole.data.interaction import Interaction

        return Interaction({self.model.USER_ID: torch.as_tensor(list(users), dtype=torch.long)}).to(self.device)

    def _scores(self, users, histories) -> tuple:
        """(scores [batch, item_num] on the CPU, the model input used)."""
        if self.sequential:
            interaction = self.sequence_interaction(histories, users)
            scores = self.model.full_sort_predict(interaction)
        elif users is not None:
            interaction = self.user_interaction(users)
            try:
                scores = self.model.full_sort_predict(interaction)
            except NotImplementedError:  # RecBole models without a full ranking score every (user, item) pair
                scores = self._pairwise_scores(users)
        else:
            interaction = None
            rows = sp.csr_matrix((np.ones(sum(len(h) for h in histories), dtype=np.float32),
                                  np.concatenate(histories), np.cumsum([0] + [len(h) for h in histories])),
                                 shape=(len(histories), self.n_items))
            rows.sum_duplicates()
            rows.data[:] = 1.0
            scores = contract.history_scores(self.model, rows)
        return scores.reshape(len(histories), -1).float().cpu(), interaction

    def masked_scores(self, users, histories, exclude_seen: bool = True) -> tuple:
        """(scores [batch, item_num] on the CPU, the model input) for internal user ids (None: by history only) and
        their histories (internal item ids, oldest first): the padding item, and the history's items when
        `exclude_seen`, at -inf."""
        with torch.no_grad():
            scores, interaction = self._scores(users, histories)
        scores[:, 0] = -torch.inf
        if exclude_seen:
            for row, history in enumerate(histories):
                scores[row, torch.from_numpy(np.asarray(history, dtype=np.int64))] = -torch.inf
        return scores, interaction

    def _pairwise_scores(self, users):
        from recbole.data.interaction import Interaction

        items = torch.arange(self.n_items)
        rows = []
        for user in users:
            pairs = Interaction({self.model.USER_ID: torch.full((self.n_items,), int(user), dtype=torch.long),
                                 self.model.ITEM_ID: items}).to(self.device)
            rows.append(self.model.predict(pairs).cpu())
        return torch.stack(rows)

    def _answer(self, users, histories, k, exclude_seen, explain, batch_size, by_user) -> List[Recommendations]:
        from mmrecbole.serving.explain import explain_batch

        answers = []
        for start in range(0, len(histories), batch_size):
            batch_users = users[start:start + batch_size] if users is not None else None
            batch = histories[start:start + batch_size]
            scores, interaction = self.masked_scores(batch_users, batch, exclude_seen)
            top_scores, top_items = torch.topk(scores, k, dim=1)
            explained = explain_batch(self, interaction, batch, top_items) if explain else None
            for row, history in enumerate(batch):
                items = [self._result_item(rank + 1, int(item), float(score))
                         for rank, (item, score) in enumerate(zip(top_items[row], top_scores[row]))
                         if torch.isfinite(score)]  # fewer than k when the history covers nearly everything
                attention = None
                if explained is not None:
                    attention = explained.apply(row, items)
                user = self.bundle.user_ids[batch_users[row]] if by_user else None
                answers.append(Recommendations(user=user, history_length=len(history), items=items,
                                               attention=attention))
        return answers

    def _result_item(self, rank, item, score) -> RecommendedItem:
        meta = self.bundle.items
        return RecommendedItem(rank=rank, item_id=self.bundle.item_ids[item], score=score, title=meta["title"][item],
                               image=meta["image"][item])
