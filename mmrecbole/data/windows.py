"""Training batches for `train_mode: all_positions`: one row per window of a user's training sequence, with the
next item as a target at every position (as the original SASRec trains), instead of RecBole's one padded row per
prefix. Evaluation is untouched (RecBole's leave-one-out loaders), so metrics stay comparable.

RecBole's SequentialDataset has already turned the training split into prefix rows (history list + target); the
user's full training sequence is recovered from them: the first item of the shortest prefix, then every target in
order. Windows of MAX_ITEM_LIST_LENGTH + 1 items are cut from the end with stride MAX_ITEM_LIST_LENGTH, so every
training target is predicted exactly once per epoch. Windows are bucketed by length and each batch is trimmed to its
longest window, so short users cost short rows.
"""
from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction

#: Interaction field holding the next item at every position (0 where padded).
TARGETS_FIELD = "target_item_id_list"


def user_sequences(uids, histories, targets):
    """{uid: np.ndarray of the user's training items in time order} from RecBole's prefix rows.

    RecBole generates a user's prefix rows in time order (its augmentation walks the interactions sorted by user and
    time, and the split keeps that order); a stable sort by user keeps it. Lengths cannot order them: they saturate
    at MAX_ITEM_LIST_LENGTH."""
    order = np.argsort(uids, kind="stable")
    uids, histories, targets = uids[order], histories[order], targets[order]
    starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
    ends = np.r_[starts[1:], len(uids)]
    sequences = {}
    for start, end in zip(starts, ends):
        first = histories[start, 0]  # the first prefix holds the user's first item
        sequences[int(uids[start])] = np.concatenate([[first], targets[start:end]])
    return sequences


def cut_windows(sequence, max_length):
    """[(inputs, next items)] covering every target once; windows end at the sequence's end, stride max_length."""
    windows = []
    end = len(sequence)
    while end >= 2:
        start = max(0, end - max_length - 1)
        window = sequence[start:end]
        windows.append((window[:-1], window[1:]))
        end = start + 1 if start > 0 else 0
    return windows


class SequenceWindowLoader:
    """Iterable of Interaction batches: `item_id_list` [B, l] inputs (left-aligned, 0-padded), `item_length` [B],
    `target_item_id_list` [B, l] next items. `window_batch_size` windows per batch, bucketed by length; batch order
    is shuffled every epoch by a generator seeded with `seed`, as RecBole's loaders do."""

    def __init__(self, config, dataset, shuffle=True):
        self._dataset = dataset
        self.dataset = dataset  # RecBole's Collector reads train_data.dataset (item counts for popularity metrics)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        self.batch_size = int(config["window_batch_size"])
        if self.batch_size < 1:
            raise ValueError(f"window_batch_size must be >= 1, got {self.batch_size}")
        self.seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.len_field = config["ITEM_LIST_LENGTH_FIELD"]
        max_length = int(config["MAX_ITEM_LIST_LENGTH"])
        feat = dataset.inter_feat
        sequences = user_sequences(
            feat[dataset.uid_field].numpy(), feat[self.seq_field].numpy(), feat[dataset.iid_field].numpy()
        )
        windows = [w for seq in sequences.values() for w in cut_windows(seq, max_length)]
        lengths = np.array([len(inputs) for inputs, _ in windows])
        self.inputs = np.zeros((len(windows), max_length), dtype=np.int64)
        self.targets = np.zeros((len(windows), max_length), dtype=np.int64)
        for row, (inputs, targets) in enumerate(windows):
            self.inputs[row, : len(inputs)] = inputs
            self.targets[row, : len(targets)] = targets
        self.lengths = lengths
        self.n_targets = int(lengths.sum())
        self._order = np.argsort(lengths, kind="stable")

    def __len__(self):
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def _batches(self):
        order = self._order
        if self.shuffle:  # shuffle within equal lengths, then cut buckets, then shuffle the buckets
            noise = torch.rand(len(order), generator=self.generator).numpy()
            order = np.lexsort((noise, self.lengths))
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return batches

    def __iter__(self):
        for rows in self._batches():
            width = int(self.lengths[rows].max())
            yield Interaction({
                self.seq_field: torch.from_numpy(self.inputs[rows, :width]),
                self.len_field: torch.from_numpy(self.lengths[rows]),
                TARGETS_FIELD: torch.from_numpy(self.targets[rows, :width]),
            })
