"""Carry a trained model's tensors over to a grown dataset (refit): rows follow raw ids, never internal positions.

RecBole numbers users and items by order of appearance in the files it builds, so a new dataset version (the old
one plus newer interactions) numbers them differently. `IdMap.between(old tokens, new tokens)` pairs each raw id's
old row with its new row; `transfer_state` builds the new model's state dict from the old one:

- tensors of the same shape that are not indexed by users or items: copied;
- user- or item-indexed tensors (first dimension = the entity count, plus up to two trailing special rows such as
  BERT4Rec's mask token): each kept raw id's row moves to its new position; rows of new ids are zero (no
  interactions yet: no ID embedding, no bias) or, with `new_rows="mean"` (the `refit_new_rows` setting), the mean
  of the kept rows (an average user or item), except the feature buffers of content models (`features_*`,
  `mask_*`), which come whole from the new model (its content tables, aligned to the new ids);
- anything else: refused, naming the tensor.

A tensor is entity-indexed when its name says "user" or "item" (`user_embedding`, `items.id_embedding`,
`item_bias`, `user_factors`...) and its first dimension fits that entity's count; position embeddings, layers and
adapters are copied whatever their size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from mmrecbole.errors import CheckpointError, ConfigError

#: Trailing rows after the entity rows that a tensor may carry (BERT4Rec's mask token is one).
MAX_SPECIAL_ROWS = 2
#: How rows of new ids start (the `refit_new_rows` setting).
NEW_ROWS = ("zero", "mean")
CONTENT_BUFFERS = ("features_", "mask_")


@dataclass
class IdMap:
    """Rows of the raw ids both versions hold: old_rows[i] (old internal id) -> new_rows[i] (new internal id)."""

    old_count: int
    new_count: int
    old_rows: np.ndarray
    new_rows: np.ndarray
    dropped: List[str]  # raw ids of the old version the new one lacks
    added: List[str]  # raw ids only the new version has

    @classmethod
    def between(cls, old_tokens: Sequence, new_tokens: Sequence) -> "IdMap":
        """Both token lists start with the padding token (internal id 0), which always maps to 0."""
        new_index = {str(t): i for i, t in enumerate(new_tokens)}
        old_rows, new_rows, dropped = [0], [0], []
        for i, token in enumerate(old_tokens[1:], start=1):
            j = new_index.get(str(token))
            if j is None:
                dropped.append(str(token))
            else:
                old_rows.append(i)
                new_rows.append(j)
        old_set = {str(t) for t in old_tokens[1:]}
        added = [str(t) for t in new_tokens[1:] if str(t) not in old_set]
        return cls(len(old_tokens), len(new_tokens), np.asarray(old_rows), np.asarray(new_rows), dropped, added)

    @property
    def kept_share(self) -> float:
        """Share of the old version's ids that the new version still holds."""
        return (len(self.old_rows) - 1) / max(1, self.old_count - 1)

    def move(self, old: torch.Tensor, new_template: torch.Tensor, fill_from_template: bool,
             new_rows: str = "zero") -> torch.Tensor:
        """`old` rows [old_count + s, ...] placed at their new rows of a [new_count + s, ...] tensor (s special rows
        copied at the end); other rows zero (`new_rows="zero"`), the mean of the kept rows other than the padding
        row 0 ("mean"), or `new_template`'s when `fill_from_template`."""
        special = old.shape[0] - self.old_count
        moved = new_template.detach().clone() if fill_from_template else torch.zeros_like(new_template)
        moved = moved.to(old.device, old.dtype)
        if new_rows == "mean" and not fill_from_template and len(self.old_rows) > 1:
            moved[1:self.new_count] = old[torch.as_tensor(self.old_rows[1:])].mean(dim=0)
        moved[torch.as_tensor(self.new_rows)] = old[torch.as_tensor(self.old_rows)]
        if special:
            moved[self.new_count:] = old[self.old_count:]
        return moved

    def fits(self, old_shape, new_shape) -> bool:
        special = old_shape[0] - self.old_count
        return (0 <= special <= MAX_SPECIAL_ROWS and new_shape[0] - self.new_count == special
                and tuple(old_shape[1:]) == tuple(new_shape[1:]))


def _entity_of(name: str, old_shape, new_shape, users: IdMap, items: IdMap):
    """The IdMap indexing tensor `name`, or None: its name says user or item (position embeddings, layers and
    adapters are not moved even when a size happens to match) and its first dimension fits that entity's count."""
    lowered = name.lower()
    candidates = [m for label, m in (("user", users), ("item", items))
                  if label in lowered and m.fits(old_shape, new_shape)]
    if len(candidates) == 2:  # "user" and "item" both in the name: the last one named
        candidates = [users if lowered.rfind("user") > lowered.rfind("item") else items]
    return candidates[0] if candidates else None


def transfer_state(old_state: Dict[str, torch.Tensor], new_state: Dict[str, torch.Tensor], users: IdMap,
                   items: IdMap, new_rows: str = "zero") -> Dict[str, torch.Tensor]:
    """The new model's state dict built from the old one (see the module docstring); `new_rows`: how rows of new
    ids start, one of NEW_ROWS."""
    if new_rows not in NEW_ROWS:
        raise ConfigError(f"refit_new_rows must be one of {list(NEW_ROWS)}, got {new_rows!r}")
    moved = {}
    for name, fresh in new_state.items():
        if name not in old_state:
            raise CheckpointError(f"the old model has no tensor {name}: was it trained with other model settings?")
        old = old_state[name].to(fresh.device)
        content = name.rsplit(".", 1)[-1].startswith(CONTENT_BUFFERS)
        entity = _entity_of(name, old.shape, fresh.shape, users, items)
        if content and fresh.shape[0] == items.new_count:
            moved[name] = fresh
        elif entity is not None and (old.shape != fresh.shape or not torch.equal(
                torch.as_tensor(entity.old_rows), torch.as_tensor(entity.new_rows))):
            moved[name] = entity.move(old, fresh, fill_from_template=False, new_rows=new_rows)
        elif old.shape == fresh.shape:
            moved[name] = old
        else:
            raise CheckpointError(f"cannot carry {name} of shape {tuple(old.shape)} over to {tuple(fresh.shape)}: "
                                  "it is indexed by neither users nor items")
    return moved


def restarts(shrink, perturb) -> bool:
    """Whether (refit_shrink, refit_perturb) move the carried weights at all; refuses values outside [0, 1]."""
    for name, value in (("refit_shrink", shrink), ("refit_perturb", perturb)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return (shrink, perturb) != (1, 0)


def shrink_perturb(moved: Dict[str, torch.Tensor], fresh: Dict[str, torch.Tensor], trainable: Sequence[str],
                   shrink: float, perturb: float) -> Dict[str, torch.Tensor]:
    """Ash & Adams' "shrink and perturb" (NeurIPS 2020, warm-starting generalises worse than a fresh start):
    every trainable tensor becomes `shrink` x its carried value + `perturb` x the new model's own fresh
    initialisation (noise from the initialiser's distribution, padding rows zero like the init's). Buffers (content
    features, masks) and anything not in `trainable` stay as carried. shrink 1, perturb 0: the carried state."""
    if not restarts(shrink, perturb):
        return moved
    wanted = set(trainable)
    return {name: shrink * tensor + perturb * fresh[name].to(tensor.device)
            if name in wanted and tensor.is_floating_point() else tensor for name, tensor in moved.items()}


def transfer_optimizer_state(old_opt: dict, new_opt: dict, parameter_names: List[str], old_state, new_state,
                             users: IdMap, items: IdMap) -> dict:
    """The new optimizer's state_dict `new_opt` with the old one's per-parameter state (Adam's step and moments),
    each entity-indexed buffer's rows moved like its parameter's (new rows zero, as in a fresh optimizer). The
    hyper-parameters (learning rate, weight decay) stay the new run's: a refit may train with another rate."""
    state = {}
    for index, buffers in old_opt.get("state", {}).items():
        name = parameter_names[int(index)]
        old_param, new_param = old_state[name], new_state[name]
        entity = _entity_of(name, old_param.shape, new_param.shape, users, items)
        state[index] = {key: entity.move(value, torch.zeros(new_param.shape, dtype=value.dtype), False)
                        if entity is not None and torch.is_tensor(value) and value.shape == old_param.shape
                        else value for key, value in buffers.items()}
    return {"state": state, "param_groups": new_opt["param_groups"]}
