"""The full-ranking evaluation loader every row of a leaderboard is scored through.

RecBole's `FullSortEvalDataLoader` with two changes for sequential models: `eval_batch_size` counts scores, and each
batch carries the user's whole history for RecBole's trainer to mask, as general models' batches do. With
`mask_seen_items: False` no batch carries a history, for any model family: every item is a candidate.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from mmrecbole import compat


def score_bounded(loader_class):
    """RecBole's FullSortEvalDataLoader counts `eval_batch_size` in scores (users x items) for general models but
    in rows for sequential ones: a sequential batch then holds eval_batch_size x item_num scores (4096 x 1M items is
    16 GB; RecBole issue #1866). Ours counts scores for both, so full-ranking memory is bounded by the setting."""
    if loader_class is not FullSortEvalDataLoader:
        return loader_class
    return ScoreBoundedFullSortEvalDataLoader


class ScoreBoundedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking loader with two changes for sequential models:

    - `eval_batch_size` counts scores (rows x items), as for general models (see `score_bounded`), and
      `eval_sequence_rows` caps the rows;
    - with `seen_items` set (`set_seen_items`), each batch carries the history index RecBole's trainer masks
      (`scores[history_index] = -inf`), as general models' batches do. RecBole gives sequential batches no
      history at all, and masking the input window instead misses every item older than
      MAX_ITEM_LIST_LENGTH: a user with 200 items would have 150 seen items back among the candidates.
    """

    seen_items = None  # scipy CSR [user_num, item_num]: the history splits' items per user

    def _init_batch_size_and_step(self):
        if not self.is_sequential:
            return super()._init_batch_size_and_step()
        rows = self.config["eval_batch_size"] // compat.dataset_of(self).item_num
        # The encoder's activations (rows x sequence length x hidden, several of them per layer) outgrow the scores
        # on a small catalogue: 3,466 rows of amazon-office evaluate 2.3x slower than the same rows 256 at a time.
        rows = max(min(rows, int(self.config["eval_sequence_rows"] or rows)), 1)
        self.step = rows
        self.set_batch_size(rows)

    def set_seen_items(self, seen_items) -> None:
        self.seen_items = seen_items.tocsr()

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if not self.config["mask_seen_items"]:
            # The unmasked protocol (UniSRec's, VQ-Rec's, MISSRec's published numbers): every item is a candidate,
            # for general models too (RecBole would mask their history).
            return interaction, None, positive_u, positive_i
        if self.is_sequential and self.seen_items is not None:
            history_index = sequential_history_index(self.config, self.seen_items, interaction)
        return interaction, history_index, positive_u, positive_i


def _item_seq_fields(config):
    return config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]


def sequential_seen_items(config, history_splits, user_num: int, item_num: int) -> sp.csr_matrix:
    """Per user, every item of the history splits of a SequentialDataset as a binary CSR [user_num, item_num]
    (the training split for validation; training + validation for test): the same history RecBole's sampler
    gives general models, in O(interactions) memory.

    A split of a SequentialDataset holds (user, input window, target) rows, one per target: its items are the
    targets plus the oldest items of each user, which are only ever inputs (the input window of the user's
    shortest row holds them: the first item, in leave-one-out)."""
    seq_field, len_field = _item_seq_fields(config)
    uid_field, iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    users, items = [], []
    for split in history_splits:
        inter = split.inter_feat
        if len(inter) == 0:
            continue
        uid = inter[uid_field].numpy()
        users.append(uid)
        items.append(inter[iid_field].numpy())
        lengths = inter[len_field].numpy()
        order = np.lexsort((lengths, uid))  # per user, the shortest input window first
        first = order[np.r_[True, uid[order][1:] != uid[order][:-1]]]
        window = inter[seq_field][torch.from_numpy(first)].numpy()
        rows, cols = np.nonzero(window)
        users.append(uid[first][rows])
        items.append(window[rows, cols])
    users = np.concatenate(users) if users else np.zeros(0, np.int64)
    items = np.concatenate(items) if items else np.zeros(0, np.int64)
    seen = sp.csr_matrix((np.ones(len(users), dtype=np.int8), (users, items)), shape=(user_num, item_num))
    seen.sum_duplicates()
    seen.data[:] = 1
    return seen


def sequential_history_index(config, seen_items: sp.csr_matrix, interaction):
    """(row, item) index tensors of the items to mask in one sequential evaluation batch: the user's history
    (`seen_items`) plus the row's own input window, less the row's target. Like RecBole's general loader
    (history = used items - positives), a target the user saw before stays rankable."""
    seq_field, _ = _item_seq_fields(config)
    users = interaction[config["USER_ID_FIELD"]].numpy()
    targets = interaction[config["ITEM_ID_FIELD"]].numpy()
    history = seen_items[users].tocoo()
    window = interaction[seq_field].numpy()
    window_rows, window_cols = np.nonzero(window)
    rows = np.concatenate([history.row.astype(np.int64), window_rows.astype(np.int64)])
    cols = np.concatenate([history.col.astype(np.int64), window[window_rows, window_cols].astype(np.int64)])
    keep = cols != targets[rows]
    return torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])



