"""What every multimodal sequential model shares: item vectors from ItemContentEncoder used for the input sequence
AND for scoring candidates (RecBole's SASRecF scores candidates by ID only), full-softmax CE, multi-task loss."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from mmrecbole.data.windows import TARGETS_FIELD
from mmrecbole.errors import ConfigError
from mmrecbole.contract import ModelContract
from mmrecbole.model.layers import ItemContentEncoder, MultiTaskLoss
from mmrecbole.model.sequence_contrast import SequenceContrast


class MMSequentialRecommender(SequentialRecommender, ModelContract):
    """Subclasses build `self.items` (via `build_items`) and implement `encode_all(item_seq, table)` -> [batch,
    length, dim] states at every position (causal), where `table` = `self.items()` ([item_num, dim]).

    Two training modes (`train_mode`): `prefix` (RecBole's augmentation: one row per prefix, loss on its next item)
    and `all_positions` (one row per user window, loss on the next item at every position; see data/windows.py).
    """

    input_type = InputType.POINTWISE
    trainer_name = "MMTrainer"
    supports_all_positions = True
    uses_item_content = True  # reads feature tables (leaderboards tell content models from CF baselines)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if config["loss_type"] != "CE":
            raise ConfigError(f"loss_type must be 'CE' for {type(self).__name__} (full softmax over item vectors), "
                              f"got {config['loss_type']!r}")
        self.train_mode = config["train_mode"]
        if self.train_mode not in ("prefix", "all_positions"):
            raise ConfigError(f"train_mode must be 'prefix' or 'all_positions', got {self.train_mode!r}")
        # Cold-start mode: the held-out items do not exist at training time, so they are left out of the training
        # softmax. As negatives of every step they would be pushed down through their content vectors (a linear
        # adapter separates a few hundred items easily), and the content model could no longer rank them at test time:
        # on ml-100k-mm, MMSASRec's cold-start Recall@20 was 0.0 that way. Warm runs keep the full-catalogue softmax.
        offset = torch.zeros(dataset.item_num)
        cold = getattr(dataset, "cold_items", None)
        if cold is not None:
            offset[cold] = float("-inf")
        self.register_buffer("train_logit_offset", offset, persistent=False)
        self.torch_compile = bool(config["torch_compile"])
        self._compiled_encode_all = None  # built on first use: subclasses create their layers after this __init__

    def _encode(self, item_seq, table):
        """encode_all, through torch.compile when `torch_compile` is set (dynamic shapes: all_positions batches are
        trimmed to their longest window, so the sequence length changes from batch to batch)."""
        if not self.torch_compile:
            return self.encode_all(item_seq, table)
        if self._compiled_encode_all is None:
            self._compiled_encode_all = torch.compile(self.encode_all, dynamic=True)
        return self._compiled_encode_all(item_seq, table)

    def build_items(self, config, dataset, dim):
        self.items = ItemContentEncoder(config, dataset, dim)
        if self.items.out_dim != dim:
            raise ConfigError(f"fusion '{self.items.fusion}' gives {self.items.out_dim}-d items; "
                              f"{type(self).__name__} needs {dim}: use sum, concat or gate")
        self.multitask = MultiTaskLoss(config, dim, extra_terms=("ssl",))
        self.loss_names = self.multitask.names
        self.sequence_contrast = SequenceContrast(config, dim) if self.multitask.wants("ssl") else None

    def encode_all(self, item_seq, table):
        raise NotImplementedError

    def _state(self, interaction, table):
        return last_position(self._encode(interaction[self.ITEM_SEQ], table), interaction[self.ITEM_SEQ_LEN])

    def calculate_loss(self, interaction):
        table = self.items()
        if TARGETS_FIELD in interaction:  # all_positions batch: a target at every position, 0 where padded
            if self.multitask.wants("rating"):
                raise ConfigError("loss_weights.rating is supported with train_mode: prefix only (the default is "
                                  "all_positions): set train_mode: prefix to train a rating head")
            targets = interaction[TARGETS_FIELD]
            states = self._encode(interaction[self.ITEM_SEQ], table)
            if states.is_cuda:
                # ignore_index instead of boolean selection: no data-dependent shape, so no host sync on CUDA.
                logits = states @ table.T + self.train_logit_offset
                rec = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)
            else:
                # On the CPU the softmax over every item is most of a step, and ~40% of the positions of a batch have
                # no target (padding, and the history-only window_context items): score only the positions with
                # one (the same mean loss; ~0.7x the epoch time on ml-100k-mm).
                has_target = targets != 0
                rec = F.cross_entropy(states[has_target] @ table.T + self.train_logit_offset, targets[has_target])
            state = None
        else:
            state = self._state(interaction, table)
            targets = interaction[self.POS_ITEM_ID]
            rec = F.cross_entropy(state @ table.T + self.train_logit_offset, targets)
        terms = {"rec": rec}
        if self.multitask.wants("align"):
            terms["align"] = self.items.alignment_loss(self.multitask.temperature)
        if self.multitask.wants("rating"):
            terms["rating"] = self.multitask.rating_loss(interaction, state, table[targets])
        if self.sequence_contrast is not None:
            terms["ssl"] = self.sequence_contrast.loss(self._encode, interaction[self.ITEM_SEQ],
                                                       interaction[self.ITEM_SEQ_LEN], table)
        return self.multitask.combine(terms)

    def predict(self, interaction):
        table = self.items()
        state = self._state(interaction, table)
        return (state * table[interaction[self.ITEM_ID]]).sum(dim=1)

    def full_sort_predict(self, interaction):
        table = self.items()
        return self._state(interaction, table) @ table.T

    def score_parts(self, interaction, items):
        """score(sequence, item) = state . item vector, and the item vector is the sum of its sources' fusion terms
        (ItemContentEncoder.source_terms): the part of a source is state . its term (plus "bias", concat fusion's
        projection bias). The state itself reads the history's fused vectors; the split is over the candidate's
        sources."""
        state = self._state(interaction, self.items())
        names, terms, bias = self.items.source_terms()
        parts = torch.einsum("bd,sbkd->bks", state, terms[:, items])
        if bias is not None:
            names = names + ["bias"]
            parts = torch.cat([parts, (state @ bias).view(-1, 1, 1).expand(-1, items.shape[1], 1)], dim=2)
        return names, parts


def init_like_recbole(module, std):
    """RecBole's sequential-model initialisation: N(0, std) for Linear/Embedding, LayerNorm at identity."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


def last_position(output, lengths):
    """output[b, lengths[b] - 1] for every b."""
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
    return output.gather(1, index).squeeze(1)
