"""Sequence-sequence contrast (CL4SRec, Xie et al., ICDE 2022): a self-supervised term of the multi-task loss.

Two random views of every training sequence in a batch, each made by one of `ssl_augmentations` (drawn per row):
`crop` keeps a random contiguous part of floor(ssl_crop_ratio * length) items; `mask` replaces each item with
probability `ssl_mask_ratio` by a learned mask vector (a row appended to the item table, so it is attended like an
item); `reorder` shuffles a random contiguous part of floor(ssl_reorder_ratio * length) items. Both views go through
the model's own sequence encoder; their last states form a positive pair, every other view in the batch a negative
(NT-Xent over 2B views, dot-product similarity / `ssl_temperature`, CL4SRec's setting). Rows of the same user (several
prefixes or overlapping windows in one batch) count as negatives, as in CL4SRec.

The augmentations work on padded, left-aligned batches ([B, L] ids, 0 = padding, and their lengths) on the batch's
device, vectorised: no Python loop over rows.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrecbole.errors import ConfigError

AUGMENTATIONS = ("crop", "mask", "reorder")


def crop(seq, lengths, ratio, generator=None):
    """A random contiguous part of floor(ratio * length) items (at least 1), moved to the front: (ids, lengths)."""
    keep = torch.clamp((lengths.float() * ratio).floor().long(), min=1)
    keep = torch.minimum(keep, lengths)
    start = (torch.rand(lengths.shape, generator=generator, device=seq.device) * (lengths - keep + 1)).long()
    positions = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0)
    index = (start.unsqueeze(1) + positions).clamp(max=seq.shape[1] - 1)
    cropped = torch.where(positions < keep.unsqueeze(1), seq.gather(1, index), torch.zeros_like(seq))
    return cropped, keep


def mask(seq, lengths, ratio, mask_id, generator=None):
    """Each real item replaced by `mask_id` with probability `ratio`: (ids, lengths)."""
    positions = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0)
    real = positions < lengths.unsqueeze(1)
    hit = (torch.rand(seq.shape, generator=generator, device=seq.device) < ratio) & real
    return torch.where(hit, torch.full_like(seq, mask_id), seq), lengths


def reorder(seq, lengths, ratio, generator=None):
    """A random contiguous part of floor(ratio * length) items shuffled in place: (ids, lengths).

    Sort keys: position p outside the part keeps key p; inside [s, s + r) a key uniform in [s, s + r), so a stable
    sort permutes the part among itself and leaves every other position (padding too) where it was."""
    span = torch.minimum(torch.clamp((lengths.float() * ratio).floor().long(), min=1), lengths)
    start = (torch.rand(lengths.shape, generator=generator, device=seq.device) * (lengths - span + 1)).long()
    positions = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0).expand_as(seq)
    inside = (positions >= start.unsqueeze(1)) & (positions < (start + span).unsqueeze(1))
    noise = torch.rand(seq.shape, generator=generator, device=seq.device)
    keys = torch.where(inside, start.unsqueeze(1) + noise * span.unsqueeze(1), positions.float())
    return seq.gather(1, keys.argsort(dim=1, stable=True)), lengths


def nt_xent(first, second, temperature):
    """NT-Xent over 2B views: view i's positive is its pair, the other 2B - 2 views its negatives (mean over 2B)."""
    views = torch.cat([first, second])
    logits = views @ views.T / temperature
    n = first.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=views.device), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    return F.cross_entropy(logits, labels)


class SequenceContrast(nn.Module):
    """`loss(model, seq, lengths, table)`: the contrastive term for one batch of a sequential model whose
    `encode_all(seq, table)` gives states at every position."""

    def __init__(self, config, dim):
        super().__init__()
        names = list(config["ssl_augmentations"] or [])
        unknown = [a for a in names if a not in AUGMENTATIONS]
        if not names or unknown:
            raise ConfigError(f"ssl_augmentations must be a non-empty list of {list(AUGMENTATIONS)}, got {names!r}")
        self.augmentations = names
        self.ratios = {}
        for name in names:
            key = f"ssl_{name}_ratio"
            ratio = config[key]
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
                raise ConfigError(f"{key} must be in (0, 1], got {ratio!r}")
            self.ratios[name] = float(ratio)
        self.temperature = config["ssl_temperature"]
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or self.temperature <= 0:
            raise ConfigError(f"ssl_temperature must be > 0, got {self.temperature!r}")
        self.mask_vector = nn.Parameter(torch.randn(dim) * 0.02)

    def view(self, seq, lengths, mask_id):
        """One augmented view: every row gets one augmentation drawn uniformly from `ssl_augmentations`."""
        choice = torch.randint(len(self.augmentations), lengths.shape, device=seq.device)
        out_seq, out_len = seq.clone(), lengths.clone()
        for k, name in enumerate(self.augmentations):
            if name == "crop":
                views = crop(seq, lengths, self.ratios[name])
            elif name == "mask":
                views = mask(seq, lengths, self.ratios[name], mask_id)
            else:
                views = reorder(seq, lengths, self.ratios[name])
            chosen = choice == k
            out_seq = torch.where(chosen.unsqueeze(1), views[0], out_seq)
            out_len = torch.where(chosen, views[1], out_len)
        return out_seq, out_len

    def loss(self, encode_all, seq, lengths, table):
        table = torch.cat([table, self.mask_vector.unsqueeze(0)])  # the mask id is item_num, one past the items
        mask_id = table.shape[0] - 1
        states = []
        for _ in range(2):
            view_seq, view_len = self.view(seq, lengths, mask_id)
            output = encode_all(view_seq, table)
            index = (view_len - 1).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
            states.append(output.gather(1, index).squeeze(1))
        return nt_xent(states[0], states[1], self.temperature)
