"""The serving bundle written after training (`quick_start.run`, `quick_start.write_bundle`): its format, path and
writer. What it holds and how serving reads it: mmrecbole.serving.bundle. The writer lives beside checkpoints, below
serving, because training writes it: training never imports the serving layer.
"""
from __future__ import annotations

import json
import os
import pickle
import time
import zipfile

import numpy as np
import torch

from mmrecbole import __version__, checkpoint, compat
from mmrecbole.data.atomic_files import TITLE_COLUMNS
from mmrecbole.errors import CheckpointError

FORMAT = "mmrecbole-bundle/1"
SUFFIX = ".bundle"


def bundle_path_for(checkpoint_path: str) -> str:
    """Where the bundle of a checkpoint goes by default: beside it, `<checkpoint stem>.bundle`."""
    return os.path.splitext(str(checkpoint_path))[0] + SUFFIX



def servable(model_class) -> bool:
    """Serving rebuilds general and sequential recommenders (built from user and item ids, plus item features for
    content models); context- and knowledge-aware models read feature columns a bundle does not keep."""
    from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender

    return isinstance(model_class, type) and issubclass(model_class, (GeneralRecommender, SequentialRecommender))


def check_servable(model_class) -> None:
    if not servable(model_class):
        from mmrecbole.errors import ServingError

        name = getattr(model_class, "__name__", str(model_class))
        raise ServingError(f"{name} cannot be served: serving supports general and sequential recommenders (built "
                           "from user and item ids, plus item features for content models); context- and "
                           "knowledge-aware models read feature columns a bundle does not keep")


# -- writing ----------------------------------------------------------------------------------------------------
def _interactions(dataset) -> tuple:
    """(users, items, timestamps or None) of every interaction of `dataset`, in its order.

    RecBole sorts a dataset by time (stable: file order among ties) before splitting it. A sequential dataset is then
    augmented in place: one row per interaction but each user's first, whose target is that interaction and whose
    `item_id_list` holds the ones before it; its first row (`item_length` 1) lists the user's first interaction. The
    original sequence is read back from that: first row's list, then every row's target."""
    inter = dataset.inter_feat
    suffix = dataset.config["LIST_SUFFIX"]
    users = inter[dataset.uid_field].numpy().astype(np.int64)
    items = inter[dataset.iid_field].numpy().astype(np.int64)
    time_field = dataset.time_field if dataset.time_field and dataset.time_field in inter else None
    times = inter[time_field].numpy().astype(np.float64) if time_field else None
    seq_field = dataset.iid_field + suffix
    if seq_field not in inter:
        return users, items, times
    first = inter[dataset.item_list_length_field].numpy() == 1
    rows = np.arange(len(users))
    # (row, 0) = a user's first interaction, read from the first row's list; (row, 1) = the row's target
    all_rows = np.concatenate([rows[first], rows])
    rank = np.concatenate([np.zeros(first.sum(), dtype=np.int64), np.ones(len(rows), dtype=np.int64)])
    order = np.lexsort((rank, all_rows))
    all_users = np.concatenate([users[first], users])[order]
    all_items = np.concatenate([inter[seq_field][first][:, 0].numpy().astype(np.int64), items])[order]
    if time_field:
        list_times = inter[time_field + suffix][first][:, 0].numpy().astype(np.float64) \
            if time_field + suffix in inter else np.full(first.sum(), np.nan)
        times = np.concatenate([list_times, times])[order]
    return all_users, all_items, times


def _histories(dataset) -> tuple:
    """(indptr [n_users + 1], items, timestamps or None): each user's interactions, oldest first."""
    users, items, times = _interactions(dataset)
    order = np.argsort(users, kind="stable")  # group by user, keep the time order inside each group
    indptr = np.zeros(dataset.user_num + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    indptr = np.cumsum(indptr)
    return (torch.from_numpy(indptr), torch.from_numpy(items[order]),
            torch.from_numpy(times[order]) if times is not None else None)


def _item_frame(config):
    """The dataset's .item file as strings (None when there is none)."""
    from mmrecbole.data import dataset_dir
    from mmrecbole.data.atomic_files import atomic_path, read_atomic_file

    path = atomic_path(dataset_dir(config["dataset"], config["data_path"]), config["dataset"], "item")
    return read_atomic_file(path) if os.path.isfile(path) else None


def _item_metadata(config, dataset) -> tuple:
    """({"title", "text", "image"}: lists indexed by internal item id, None where unknown, row 0 = padding; the
    title column used)."""
    from mmrecbole.data import dataset_dir
    from mmrecbole.data.fileio import images_by_stem
    from mmrecbole.errors import UserError
    from mmrecbole.features.store import resolve_image_dir
    from mmrecbole.features.template import TextTemplate

    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    n = len(tokens)
    titles, texts, images = [None] * n, [None] * n, [None] * n
    frame, title_field = _item_frame(config), None
    if frame is not None:
        id_field = dataset.iid_field
        records = {str(r[id_field]): r for r in frame.to_dict("records")} if id_field in frame.columns else {}
        title_field = config["item_title_field"] or next((c for c in TITLE_COLUMNS if c in frame.columns), None)
        if title_field is not None and title_field not in frame.columns:
            raise CheckpointError(f"item_title_field {title_field!r} is not a column of the dataset's .item file "
                                  f"(columns: {list(frame.columns)})")
        template = None
        if config["text_template"]:
            try:
                template = TextTemplate(config["text_template"])
                template.check_columns(list(frame.columns), "the .item file")
            except UserError:
                template = None  # this dataset's items have no text under that template: show titles only
        for row, token in enumerate(tokens[1:], start=1):
            record = records.get(token)
            if record is None:
                continue
            if title_field is not None:
                titles[row] = str(record[title_field]) or None
            if template is not None:
                texts[row] = template.render(record) or None
    try:  # a dataset that declares no image folder has no images (features.store.resolve_image_dir)
        folder = resolve_image_dir(dataset_dir(config["dataset"], config["data_path"]), config)
    except UserError:
        folder = None
    if folder and os.path.isdir(folder):
        found = images_by_stem(folder)
        for row, token in enumerate(tokens[1:], start=1):
            images[row] = found.get(token)
    return {"title": titles, "text": texts, "image": images}, title_field


def _training_pairs(model, train_dataset) -> dict:
    from recbole.model.abstract_recommender import GeneralRecommender

    from mmrecbole.model.layers import items_in_training

    seen = items_in_training(train_dataset).nonzero().squeeze(1).long()
    pairs = {"seen_items": seen}
    if isinstance(model, GeneralRecommender):  # sequential models never read the training matrix when built
        coo = train_dataset.inter_matrix(form="coo")
        pairs.update(row=torch.from_numpy(coo.row.astype(np.int64)), col=torch.from_numpy(coo.col.astype(np.int64)),
                     data=torch.from_numpy(np.asarray(coo.data, dtype=np.float32)))
    return pairs


def write(path, *, checkpoint_path, config, dataset, train_dataset, model) -> str:
    """Write the bundle of `checkpoint_path` (the weights) built with `config`, the full `dataset` (id maps, histories)
    and its training split `train_dataset` (what the model was built from); `model` is the built model (its class and
    type). Returns the path."""
    from mmrecbole.features.aligned import ITEM_CONTENT_ATTRIBUTE, ITEM_CONTENT_PROVENANCE

    check_servable(type(model))
    ckpt = checkpoint.read(checkpoint_path)
    ckpt.check_matches(config["model"], config["dataset"], checkpoint.dataset_fingerprint(dataset))
    indptr, items, times = _histories(dataset)
    provenance = getattr(train_dataset, ITEM_CONTENT_PROVENANCE, None) or {}
    content = {modality: {"matrix": torch.as_tensor(matrix).float().cpu(), "mask": torch.as_tensor(mask).bool().cpu()}
               for modality, (matrix, mask) in (getattr(train_dataset, ITEM_CONTENT_ATTRIBUTE, None) or {}).items()}
    metadata, title_field = _item_metadata(config, dataset)
    meta = {
        "model": ckpt.model,
        "dataset": ckpt.dataset,
        "dataset_fingerprint": checkpoint.dataset_fingerprint(dataset),
        "checkpoint": {"path": os.path.abspath(ckpt.path), "created": ckpt.meta.get("created"),
                       "parent": ckpt.meta.get("parent")},
        "uid_field": dataset.uid_field,
        "iid_field": dataset.iid_field,
        "title_field": title_field,
        "feature_provenance": {modality: provenance.get(modality) for modality in content},
        "versions": {"mmrecbole": __version__, "recbole": compat.recbole_version(), "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    payload = {
        "format": FORMAT,
        "meta_json": json.dumps(meta),
        "config_json": json.dumps(ckpt.config),
        "training_json": json.dumps(ckpt.training),
        "state_dict": ckpt.state_dict,
        "other_parameter": ckpt.other_parameter,
        "ids_json": json.dumps({"users": [str(t) for t in dataset.field2id_token[dataset.uid_field]],
                                "items": [str(t) for t in dataset.field2id_token[dataset.iid_field]]}),
        "items_json": json.dumps(metadata),
        "train": _training_pairs(model, train_dataset),
        "history": {"indptr": indptr, "items": items, **({"timestamps": times} if times is not None else {})},
        "content": content,
    }
    checkpoint.atomic_torch_save(payload, str(path))
    return str(path)


# -- reading ----------------------------------------------------------------------------------------------------
class Bundle(checkpoint.SavedModel):
    """A read bundle: its metadata, settings, weights and the data tables, as plain Python / tensors."""

    def __init__(self, path: str, payload: dict, fields: dict):
        self.path = path
        self.meta, self.config, self.training = fields["meta"], fields["config"], fields["training"]
        self.user_ids, self.item_ids = fields["ids"]["users"], fields["ids"]["items"]
        self.items = fields["items"]
        self.state_dict, self.other_parameter = payload["state_dict"], payload["other_parameter"]
        self.train, self.history, self.content = payload["train"], payload["history"], payload["content"]


def read(path) -> Bundle:
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"bundle not found: {path} (write one with --bundle --checkpoint=PATH)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"cannot read bundle {path}: the file is truncated or corrupt (not a torch zip archive)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: it contains pickled Python objects") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read bundle {path}: the file is truncated or corrupt ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = " (a checkpoint: write its bundle with --bundle --checkpoint=PATH)" if isinstance(payload, dict) and \
            payload.get("format") == checkpoint.FORMAT else ""
        raise CheckpointError(f"{path} is not a mmrecbole bundle (expected format {FORMAT}){hint}")
    fields = {}
    for key, name in (("meta_json", "meta"), ("config_json", "config"), ("training_json", "training"),
                      ("ids_json", "ids"), ("items_json", "items")):
        try:
            fields[name] = json.loads(payload[key])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"bundle {path} is damaged: {key} is missing or not JSON; write it again") from None
    for key in ("state_dict", "other_parameter", "train", "history", "content"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"bundle {path} is damaged: it has no {key!r} mapping; write it again")
    return Bundle(path, payload, fields)
