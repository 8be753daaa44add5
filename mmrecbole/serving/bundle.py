"""The model bundle: one safe file with everything serving needs, and nothing it must rebuild from the dataset.

A `.bundle` file is a torch zip archive read with `torch.load(weights_only=True)` (tensors, strings, numbers,
lists; never a pickled object), written atomically like checkpoints. It holds:

  format          "mmrecbole-bundle/1"
  meta_json       model, dataset, the checkpoint it came from (path, created, training), versions, creation time
  config_json     the checkpoint's resolved settings (enough to rebuild the Config and the model class)
  state_dict, other_parameter    the checkpoint's weights and fitted state (mmrecbole.checkpoint's encoding)
  ids_json        {"users": [raw ids], "items": [raw ids]}: row i = RecBole's internal id i (row 0 = padding)
  items_json      {"title", "text", "image"}: per internal item id, what a result shows (image: a file path or null)
  train           what some models read from the training split when they are built: the user x item pairs of
                  RecBole's `inter_matrix(form="coo")` (LightGCN, FREEDOM, RecBole's ItemKNN) and the items that
                  occur in training (content models zero the ID embedding of the others)
  history         every user's known interactions (training, validation and test), in time order: what a request
                  for a user excludes and what a sequential model reads
  content         per modality the aligned feature table (matrix, presence mask) content models are built from

`BundleDataset` stands in for the RecBole dataset when the model is rebuilt: it answers exactly the questions the
supported models ask at construction (counts, id maps, the training matrix, the training items, the feature tables),
from the bundle, so loading needs neither the atomic files nor RecBole's dataset build. The format's writer and
reader live in mmrecbole.export (training writes bundles and never imports the serving layer); `rewrite` writes a
loaded bundle again, with the items added at serving time.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import scipy.sparse as sp
import torch

from mmrecbole import checkpoint
from mmrecbole.errors import CheckpointError
from mmrecbole.export import FORMAT, Bundle, read  # noqa: F401  (the format and reader, with the writer)


def rewrite(bundle: "Bundle", config, model, path) -> str:
    """Write `bundle` again with `model`'s current tensors, e.g. after `Recommender.add_items` (the longer
    catalogue, its feature rows and titles), to `path`; its metadata names the bundle it came from."""
    meta = {**bundle.meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "rewritten_from": os.path.abspath(bundle.path),
            "dataset_fingerprint": checkpoint.dataset_fingerprint(BundleDataset(bundle, config))}
    payload = {
        "format": FORMAT,
        "meta_json": json.dumps(meta),
        "config_json": json.dumps(bundle.config),
        "training_json": json.dumps(bundle.training),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "other_parameter": checkpoint.encode_other_parameters(model),
        "ids_json": json.dumps({"users": bundle.user_ids, "items": bundle.item_ids}),
        "items_json": json.dumps(bundle.items),
        "train": bundle.train,
        "history": bundle.history,
        "content": bundle.content,
    }
    checkpoint.atomic_torch_save(payload, str(path))
    return str(path)


# -- rebuilding the model ------------------------------------------------------------------------------------------
class _TrainingItems(dict):
    """The one column of the training split's interactions that content models read (which items occur)."""


class BundleDataset:
    """What the models ask of a RecBole dataset at construction, answered from a bundle."""

    def __init__(self, bundle: Bundle, config):
        self.config = config
        self.uid_field, self.iid_field = bundle.meta["uid_field"], bundle.meta["iid_field"]
        self.field2id_token = {self.uid_field: np.array(bundle.user_ids, dtype=object),
                               self.iid_field: np.array(bundle.item_ids, dtype=object)}
        self.user_num, self.item_num = len(bundle.user_ids), len(bundle.item_ids)
        self.inter_feat = _TrainingItems({self.iid_field: bundle.train["seen_items"]})
        self._train = bundle.train
        self.cold_items = None
        from mmrecbole.features.aligned import ITEM_CONTENT_ATTRIBUTE

        setattr(self, ITEM_CONTENT_ATTRIBUTE,
                {m: (table["matrix"], table["mask"]) for m, table in bundle.content.items()})

    def num(self, field):
        if field == self.uid_field:
            return self.user_num
        if field == self.iid_field:
            return self.item_num
        raise CheckpointError(f"this model asks for the size of field {field!r} at construction; serving supports "
                              "models built from user and item ids only")

    def inter_matrix(self, form="coo", value_field=None):
        if value_field is not None or "row" not in self._train:
            raise CheckpointError("this model reads training interaction values at construction, which a bundle "
                                  "does not keep; serving supports it only through its checkpoint")
        coo = sp.coo_matrix((self._train["data"].numpy(), (self._train["row"].numpy(), self._train["col"].numpy())),
                            shape=(self.user_num, self.item_num))
        return coo if form == "coo" else coo.asformat(form)
