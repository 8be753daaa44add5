"""Training batches for `train_mode: all_positions`: one row per window of a user's training sequence, with the
next item as a target at every position (as the original SASRec trains), instead of RecBole's one padded row per
prefix. Evaluation is untouched (RecBole's leave-one-out loaders), so metrics stay comparable.

RecBole's SequentialDataset has already turned the training split into prefix rows (history list + target); the
user's full training sequence is recovered from them: the first item of the shortest prefix, then every target in
order. Windows of MAX_ITEM_LIST_LENGTH + 1 items are cut from the end with stride MAX_ITEM_LIST_LENGTH (less with
`window_context`), so every training target is predicted exactly once per epoch; `window_shift` moves each user's
window boundaries by a random offset every epoch. Windows are bucketed by length
(`window_bucketing`) and each batch is trimmed to its longest window, so short users cost short rows; a batch holds
`window_batch_size` windows or, with `window_batch_targets`, about that many targets.

On CUDA the window table (16 bytes per training interaction) is copied to the device once (once per epoch with
`window_shift`), from pinned memory without blocking; a batch is then a slice of device tensors and training steps
make no host-to-device copies at all.
"""
from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction

from mmrecbole.errors import ConfigError
from mmrecbole import distributed

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


def cut_windows(sequence, max_length, context=0, latest=None):
    """[(inputs, next items)] covering every target exactly once; windows end at the sequence's end.

    With `context` = 0 windows do not overlap (stride max_length): a target early in a window sees only the items
    before it in that window, not the user's older history. With `context` = c, windows overlap by c items and, in
    every window but a user's earliest, the first c targets are set to 0 (padding: the loss ignores them; the earlier
    window predicts them): each target is still predicted once per epoch, and with at least c items of history, as
    RecBole's prefix rows have (up to max_length), at max_length / (max_length - c) times the encoder work.

    `latest` (1 .. max_length - context; default the most) is how many targets the user's most recent window
    predicts: `window_shift` draws it every epoch, which moves all window boundaries of the user."""
    if not 0 <= context < max_length:
        raise ValueError(f"window_context must be >= 0 and < MAX_ITEM_LIST_LENGTH ({max_length}), got {context}")
    step = max_length - context  # targets each window adds
    if latest is None:
        latest = step
    if not 1 <= latest <= step:
        raise ValueError(f"latest must be in [1, {step}] (MAX_ITEM_LIST_LENGTH - window_context), got {latest}")
    windows = []
    end, new = len(sequence), latest  # this window predicts sequence[end - new: end]
    while end >= 2:
        if end - 1 <= max_length:  # all that is left fits one window: the user's earliest, nothing masked
            start = first_target = 0
        else:
            first_target = end - new  # >= context + 1: the window's history starts at sequence[0] at the earliest
            start = first_target - 1 - context
        window = sequence[start:end]
        inputs, nexts = window[:-1], window[1:]
        masked = max(0, first_target - start - 1)  # the context items: history only, targets of an earlier window
        if masked:
            nexts = nexts.copy()
            nexts[:masked] = 0
        windows.append((inputs, nexts))
        end, new = first_target, step
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
            raise ConfigError(f"window_batch_size must be >= 1, got {self.batch_size}")
        self.seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.len_field = config["ITEM_LIST_LENGTH_FIELD"]
        max_length = int(config["MAX_ITEM_LIST_LENGTH"])
        feat = dataset.inter_feat
        sequences = user_sequences(
            feat[dataset.uid_field].numpy(), feat[self.seq_field].numpy(), feat[dataset.iid_field].numpy()
        )
        self.context = int(config["window_context"])
        if not 0 <= self.context < max_length:
            raise ConfigError(f"window_context must be >= 0 and < MAX_ITEM_LIST_LENGTH ({max_length}), "
                              f"got {self.context}: set window_context below MAX_ITEM_LIST_LENGTH (its default is "
                              "for 50-item windows)")
        self.max_length = max_length
        self._sequences = list(sequences.values())
        self.bucketing = bool(config["window_bucketing"])
        # Bucketed batches of a fixed number of windows weight targets unequally: a batch of 128 three-item windows
        # gets a whole optimizer step, as does a batch of 128 full ones (~16x the targets). A target budget gives
        # every step about the same number of targets, as RecBole's prefix batches have.
        self.batch_targets = int(config["window_batch_targets"])
        if self.batch_targets < 0:
            raise ConfigError(f"window_batch_targets must be >= 0 (0: window_batch_size windows per batch), "
                              f"got {self.batch_targets}")
        # Fixed windows give the same targets (those at window starts) a short history every epoch; window_shift
        # redraws each user's window boundaries every epoch, so the history a target sees varies between epochs.
        self.shift = bool(config["window_shift"])
        self.device = torch.device(config["device"])
        # Under DDP every rank cuts the same batches (the generator is seeded alike) and trains its rows of each.
        self.rank, self.world = distributed.rank_and_world(config)
        self._set_windows(self._cut_all())

    @property
    def sampler(self):
        """RecBole's trainer calls `train_data.sampler.set_epoch(epoch)` under DDP; this loader's order comes from
        its own generator, which every rank advances alike."""
        return self

    def set_epoch(self, epoch) -> None:
        pass

    def _cut_all(self):
        """Every user's windows, the most recent one holding a random number of targets when shifting."""
        step = self.max_length - self.context
        if self.shift:
            latest = torch.randint(1, step + 1, (len(self._sequences),), generator=self.generator).tolist()
        else:
            latest = [step] * len(self._sequences)
        return [w for seq, last in zip(self._sequences, latest)
                for w in cut_windows(seq, self.max_length, self.context, last)]

    def _set_windows(self, windows):
        """The window table of the next epoch: host arrays (lengths, batch cutting) and the tensors batches index."""
        self.lengths = np.array([len(inputs) for inputs, _ in windows], dtype=np.int64)
        self.inputs = np.zeros((len(windows), self.max_length), dtype=np.int64)
        self.targets = np.zeros((len(windows), self.max_length), dtype=np.int64)
        for row, (inputs, targets) in enumerate(windows):
            self.inputs[row, : len(inputs)] = inputs
            self.targets[row, : len(targets)] = targets
        self.n_targets = int((self.targets > 0).sum())
        self._order = np.argsort(self.lengths, kind="stable")
        self._window_targets = (self.targets > 0).sum(axis=1)
        self._tables = {
            self.seq_field: torch.from_numpy(self.inputs),
            self.len_field: torch.from_numpy(self.lengths),
            TARGETS_FIELD: torch.from_numpy(self.targets),
        }
        if self.device.type == "cuda":
            self._tables = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in self._tables.items()}

    def __len__(self):
        if self.batch_targets:
            return max(1, -(-self.n_targets // self.batch_targets))
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def _cut(self, order):
        if not self.batch_targets:
            return [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # batch k: the windows whose running target count ends in [k * budget, (k + 1) * budget)
        batch_of = (np.cumsum(self._window_targets[order]) - 1) // self.batch_targets
        return np.split(order, np.flatnonzero(np.diff(batch_of)) + 1)

    def _batches(self):
        order = self._order
        if self.shuffle and self.bucketing:  # shuffle within equal lengths, then cut buckets, then shuffle the buckets
            noise = torch.rand(len(order), generator=self.generator).numpy()
            order = np.lexsort((noise, self.lengths))
        elif self.shuffle:  # no bucketing: batches of random windows, each padded to its longest
            order = torch.randperm(len(order), generator=self.generator).numpy()
        elif not self.bucketing:
            order = np.arange(len(order))
        batches = self._cut(order)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return distributed.rows_of_rank(batches, self.rank, self.world)

    def __iter__(self):
        batches, lengths, tables = self._batches(), self.lengths, self._tables
        if self.shift:  # the next epoch's windows, cut now so that len() describes the epoch it will iterate
            self._set_windows(self._cut_all())
        if not batches:
            return
        # The epoch's row order goes to the device in one copy; each batch's index is a slice of it.
        order = torch.from_numpy(np.concatenate(batches)).to(self.device, non_blocking=True)
        start = 0
        for rows in batches:
            width = int(lengths[rows].max())  # from the host copy: no device sync
            index, start = order[start: start + len(rows)], start + len(rows)
            yield Interaction({
                self.seq_field: tables[self.seq_field][index, :width],
                self.len_field: tables[self.len_field][index],
                TARGETS_FIELD: tables[TARGETS_FIELD][index, :width],
            })
