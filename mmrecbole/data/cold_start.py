"""Cold-start item evaluation (`cold_start_item_ratio` > 0), as a mixin on RecBole's dataset classes."""
from __future__ import annotations

import numpy as np
import torch


class ColdStartItemsMixin:
    """Cold-start evaluation (`cold_start_item_ratio` > 0): a random share of items (by `seed`) is removed from
    training entirely, and only test interactions whose target is such an item are evaluated (candidates: all
    items). RecBole has no such mode; we hook its `Dataset.build` (where the interaction table is still a pandas
    DataFrame with remapped ids, before the split and the sequential augmentation):

    - every interaction with a cold item is dropped except a user's last one (its leave-one-out test target), so
      no training sequence or training pair contains a cold item, and validation never targets one;
    - after the split, the test part keeps only rows whose target is cold.
    """

    def build(self):
        ratio = float(self.config["cold_start_item_ratio"] or 0.0)
        if not 0.0 < ratio < 1.0:
            return super().build()
        frame = self.inter_feat
        items = np.unique(frame[self.iid_field].to_numpy())
        rng = np.random.default_rng(int(self.config["seed"]))
        count = max(1, int(round(ratio * len(items))))
        cold = np.sort(rng.choice(items, size=count, replace=False))
        ordered = frame.sort_values([self.uid_field, self.time_field], kind="stable")
        is_last = ~ordered[self.uid_field].duplicated(keep="last")
        keep = ~ordered[self.iid_field].isin(cold) | is_last
        self.inter_feat = ordered[keep].reset_index(drop=True)
        self.cold_items = torch.from_numpy(cold)
        train, valid, test = super().build()
        targets = test.inter_feat[self.iid_field]
        test = test.copy(test.inter_feat[torch.isin(targets, self.cold_items)])
        self.logger.info(f"cold-start items: {count} of {len(items)} held out of training; "
                         f"{len(test.inter_feat)} test interactions target them")
        return [train, valid, test]
