"""Safe, atomic checkpoints: tensors + plain JSON, loaded with `torch.load(weights_only=True)`.

One `.pth` file holds:
  format            "mmrecbole-checkpoint/1"
  meta_json         model, dataset, entity counts and id-map digests, package versions, creation time
  config_json       the resolved plain settings (enough to rebuild the Config, the dataset split and the model)
  training_json     epoch, early-stopping step, best validation score and metric
  state_dict        the model's tensors
  other_parameter   fitted state outside state_dict (RecBole ItemKNN's similarity matrix...) encoded as tensors
  optimizer         the optimizer's state_dict (tensors and numbers), for resuming

Nothing in it is a pickled Python object, so loading never runs code. Files are written to a temporary name in the
same folder and renamed, so a crash never leaves a half-written checkpoint under the real name.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import time
import zipfile
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from mmrecbole import __version__, compat
from mmrecbole.data.fileio import write_atomically
from mmrecbole.errors import CheckpointError

FORMAT = "mmrecbole-checkpoint/1"


def _ids_digest(tokens) -> str:
    h = hashlib.sha1()
    for tok in tokens:
        h.update(str(tok).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset) -> dict:
    """What a checkpoint must match: entity counts and digests of the id maps (row i of an embedding = id i)."""
    return {
        "n_users": int(dataset.user_num),
        "n_items": int(dataset.item_num),
        "user_ids_sha1": _ids_digest(dataset.field2id_token[dataset.uid_field]),
        "item_ids_sha1": _ids_digest(dataset.field2id_token[dataset.iid_field]),
    }


# RecBole models keep some fitted state outside nn.Module parameters and list it in `other_parameter_name`
# (ItemKNN: scipy sparse `w` and `pred_mat`; LightGCN: cached embeddings). RecBole pickles
# those objects into its checkpoints. We encode them as plain tensors so that `torch.load(weights_only=True)` reads
# them.
_SPARSE = "__scipy_sparse__"
_NDARRAY = "__ndarray__"


def encode_other_parameters(model) -> dict:
    encoded = {}
    for name, value in model.other_parameter().items():
        if value is None or isinstance(value, (bool, int, float, str)):
            encoded[name] = value
        elif isinstance(value, torch.nn.Module):
            continue  # already in state_dict
        elif isinstance(value, torch.Tensor):
            encoded[name] = value.detach().cpu()
        elif sp.issparse(value):
            csr = value.tocsr()
            encoded[name] = {
                _SPARSE: value.getformat(),
                "data": torch.from_numpy(np.asarray(csr.data)),
                "indices": torch.from_numpy(np.asarray(csr.indices, dtype=np.int64)),
                "indptr": torch.from_numpy(np.asarray(csr.indptr, dtype=np.int64)),
                "shape": list(csr.shape),
            }
        elif isinstance(value, np.ndarray) and value.dtype != object:
            encoded[name] = {_NDARRAY: True, "array": torch.from_numpy(np.ascontiguousarray(value))}
        else:
            raise TypeError(
                f"cannot store {type(model).__name__}.{name} ({type(value).__name__}) in a safe checkpoint; "
                "keep fitted state in tensors, numpy arrays or scipy sparse matrices"
            )
    return encoded


def decode_other_parameters(encoded: dict, device) -> dict:
    decoded = {}
    for name, value in encoded.items():
        if isinstance(value, dict) and _SPARSE in value:
            csr = sp.csr_matrix(
                (value["data"].numpy(), value["indices"].numpy(), value["indptr"].numpy()), shape=value["shape"]
            )
            decoded[name] = csr.asformat(value[_SPARSE])
        elif isinstance(value, dict) and _NDARRAY in value:
            decoded[name] = value["array"].numpy()
        elif isinstance(value, torch.Tensor):
            decoded[name] = value.to(device)
        else:
            decoded[name] = value
    return decoded


def _plain(value):
    """JSON-safe copy of a config value (tuples -> lists, other objects -> their string form)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_RESERVED_PATHS: set = set()


def unique_path(path: str) -> str:
    """`<stem>-p<pid>.pth` (then -2, -3...): a name no other process, and no earlier call in this one, uses."""
    stem, ext = os.path.splitext(str(path))
    candidate, number = f"{stem}-p{os.getpid()}{ext}", 1
    while candidate in _RESERVED_PATHS or os.path.exists(candidate):
        number += 1
        candidate = f"{stem}-p{os.getpid()}-{number}{ext}"
    _RESERVED_PATHS.add(candidate)
    return candidate


def atomic_torch_save(obj, path: str) -> None:
    write_atomically(path, lambda handle: torch.save(obj, handle))


def save(path, *, model, config, dataset_fingerprint=None, training=None, optimizer_state=None, parent=None) -> None:
    """parent: the checkpoint a refit started from (quick_start.refit), kept in the metadata."""
    resolved = getattr(config, "resolved", None)
    if resolved is None:
        raise TypeError("config must be a mmrecbole.config.Config (it carries the resolved settings)")
    meta = {
        "model": config["model"],
        "dataset": config["dataset"],
        "dataset_fingerprint": dataset_fingerprint,
        "versions": {
            "mmrecbole": __version__,
            "recbole": compat.recbole_version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "parent": parent,
    }
    payload = {
        "format": FORMAT,
        "meta_json": json.dumps(meta),
        "config_json": json.dumps(_plain(resolved)),
        "training_json": json.dumps(training or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "other_parameter": encode_other_parameters(model),
        "optimizer": optimizer_state,
    }
    atomic_torch_save(payload, str(path))


class SavedModel:
    """What a saved file (a checkpoint, a serving bundle) says it holds, from its `meta`."""

    meta: dict

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]


@dataclass
class Checkpoint(SavedModel):
    path: str
    meta: dict
    config: dict
    training: dict
    state_dict: dict
    other_parameter: dict
    optimizer_state: dict | None

    def check_matches(self, model: str, dataset: str, fingerprint: dict | None = None) -> None:
        """Refuse a checkpoint of another model or dataset, or of the same dataset with other ids/counts."""
        if self.model != model:
            raise CheckpointError(
                f"checkpoint {self.path} holds a {self.model} model, not {model}; pick a {model} checkpoint or "
                f"run with --model={self.model}"
            )
        if self.dataset != dataset:
            raise CheckpointError(
                f"checkpoint {self.path} was trained on dataset '{self.dataset}', not '{dataset}'"
            )
        saved = self.meta.get("dataset_fingerprint")
        if saved is not None and not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint {self.path} is damaged: its dataset_fingerprint is not a mapping")
        if fingerprint is not None and saved is not None and saved != fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} was trained on '{self.dataset}' with {saved.get('n_users')} users and "
                f"{saved.get('n_items')} items (ids {saved.get('item_ids_sha1')}); the dataset built now has "
                f"{fingerprint['n_users']} users and {fingerprint['n_items']} items (ids "
                f"{fingerprint['item_ids_sha1']}): its files or filtering changed, so the embeddings' rows no "
                "longer match; retrain"
            )

    def restore_into(self, model, device="cpu") -> None:
        try:
            result = model.load_state_dict(self.state_dict, strict=False)
        except RuntimeError as exc:  # a tensor of another shape: "size mismatch for item_embedding.weight: ..."
            detail = " ".join(str(exc).split())
            raise CheckpointError(f"checkpoint {self.path} does not fit this {type(model).__name__}: "
                                  f"{detail[detail.find('size mismatch'):][:200] or detail[:200]} (was it trained "
                                  "with other model settings?)") from None
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"checkpoint {self.path} does not fit this {type(model).__name__}: missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]} (was it trained with "
                "other model settings?)"
            )
        model.load_other_parameter(decode_other_parameters(self.other_parameter, device))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else type(exc).__name__)


def read(path, map_location="cpu") -> Checkpoint:
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted copy? copy it again or retrain")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is truncated or not ours
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt (not a torch zip "
                              "archive); use a .pth file written by mmrecbole, or retrain")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects, not only tensors and plain values "
            f"(a RecBole or foreign checkpoint?) [{_first_line(exc)}]"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt ({_first_line(exc)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mmrecbole checkpoint (expected format {FORMAT})")
    fields = {}
    for key, name in (("meta_json", "meta"), ("config_json", "config"), ("training_json", "training")):
        try:
            fields[name] = json.loads(payload[key])
        except KeyError:
            raise CheckpointError(f"checkpoint {path} is damaged: it has no {key!r} entry; retrain") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is damaged: {key} is not valid JSON ({_first_line(exc)}); "
                                  "retrain") from None
        if not isinstance(fields[name], dict):
            raise CheckpointError(f"checkpoint {path} is damaged: {key} is not a JSON object; retrain")
    for key in ("model", "dataset"):
        if not isinstance(fields["meta"].get(key), str):
            raise CheckpointError(f"checkpoint {path} is damaged: its metadata names no {key}; retrain")
    for key in ("state_dict", "other_parameter"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"checkpoint {path} is damaged: it has no {key!r} mapping; retrain")
    return Checkpoint(path=path, state_dict=payload["state_dict"], other_parameter=payload["other_parameter"],
                      optimizer_state=payload.get("optimizer"), **fields)
