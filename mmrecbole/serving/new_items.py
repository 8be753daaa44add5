"""New items at serving time: embed them with the bundle's feature pipeline and make the model rank them.

`add_items(recommender, rows, image_dir)` renders each row's text with the dataset's `text_template` and encodes it,
and encodes `<image_dir>/<item id>.<ext>`, with the encoders the bundle's feature tables were built with (their
provenance is checked: another encoder, weights file or recipe is refused); `add_item_vectors` takes precomputed
vectors instead. The model is then rebuilt over the longer catalogue: every trained tensor keeps its values, the new
items' rows of item-sized parameters are zero (no ID embedding, no item bias: they have no interactions) and their
feature rows come from their content, so content models rank them from what they are, and ID-free models
(`use_id: false`) exactly like any other item.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmrecbole.errors import FeatureError, ServingError

#: Feature scalings whose per-item result does not depend on the other items (standardize uses catalogue statistics).
ROW_WISE_NORMS = ("l2", "none")


def _check_can_add(recommender, ids: Sequence[str]) -> None:
    if not recommender.bundle.content:
        raise ServingError(f"{recommender.model_name} reads no item content: a new item would only have an untrained "
                           "ID vector; serve a content model (MMSASRec, MMGRU4Rec, VBPR, FREEDOM) or retrain")
    if recommender.config["feature_norm"] not in ROW_WISE_NORMS:
        raise ServingError(f"adding items needs feature_norm l2 or none (this model's is "
                           f"{recommender.config['feature_norm']!r}: its scale depends on the catalogue's statistics)")
    if recommender.bundle.other_parameter:
        raise ServingError(f"{recommender.model_name} keeps fitted state outside its tensors; it cannot take new "
                           "items at serving time")
    if not ids:
        raise ServingError("no items to add")
    clash = [i for i in ids if i in recommender.item_index]
    if clash:
        raise ServingError(f"item id{'s' if len(clash) > 1 else ''} {', '.join(clash[:5])} already in the catalogue")
    if len(set(ids)) != len(ids):
        raise ServingError("the new items repeat an id")


def add_item_vectors(recommender, ids: Sequence, vectors: Dict[str, Tuple[np.ndarray, np.ndarray]],
                     metadata: Optional[Dict[str, List]] = None) -> List[str]:
    """Add items given their feature vectors: {modality: (matrix [n, d], present [n])} for every modality the model
    reads (the same encoder's space as the bundle's tables). metadata: {"title"/"text"/"image": [n values]}."""
    ids = [str(i) for i in ids]
    _check_can_add(recommender, ids)
    bundle = recommender.bundle
    for modality, table in bundle.content.items():
        if modality not in vectors:
            raise ServingError(f"new items need {modality} vectors (the model reads {sorted(bundle.content)})")
        matrix, mask = vectors[modality]
        if np.shape(matrix) != (len(ids), table["matrix"].shape[1]) or np.shape(mask) != (len(ids),):
            raise ServingError(f"{modality} vectors must be [{len(ids)}, {table['matrix'].shape[1]}] with a "
                               f"[{len(ids)}] presence mask, got {np.shape(matrix)} / {np.shape(mask)}")
    for modality, table in bundle.content.items():
        matrix, mask = vectors[modality]
        table["matrix"] = torch.cat([table["matrix"], torch.as_tensor(np.asarray(matrix), dtype=torch.float32)])
        table["mask"] = torch.cat([table["mask"], torch.as_tensor(np.asarray(mask), dtype=torch.bool)])
    bundle.item_ids = bundle.item_ids + ids
    for key in ("title", "text", "image"):
        values = (metadata or {}).get(key) or [None] * len(ids)
        bundle.items[key] = bundle.items[key] + list(values)
    recommender.extend_catalogue(len(ids))
    return ids


def _encoders(recommender, modalities):
    from mmrecbole.features.store import image_encoder, text_encoder
    from mmrecbole.features.table import provenance_changes

    made = {}
    for modality in modalities:
        provenance = recommender.bundle.meta.get("feature_provenance", {}).get(modality)
        if provenance is None:
            raise FeatureError(f"the bundle records no provenance for its {modality} table: embed the new items "
                               "yourself and use add_item_vectors")
        encoder = (text_encoder if modality == "text" else image_encoder)(recommender.config)
        recipe = encoder.recipe()
        if modality == "text":
            recipe = dict(template=recommender.config["text_template"], **recipe)
        expected = {"encoder": encoder.identity(), "recipe": recipe}
        recorded = {"encoder": provenance.get("encoder"), "recipe": provenance.get("recipe")}
        changed = provenance_changes(recorded, expected)
        if changed:
            raise FeatureError(f"the {modality} encoder here differs from the one the model's table was built with "
                               f"({', '.join(changed)}): install the same encoder or use add_item_vectors")
        made[modality] = encoder
    return made


def add_items(recommender, rows: Sequence[dict], image_dir: Optional[str] = None) -> List[str]:
    """Embed `rows` (dicts with the item id column and the text template's columns) and `<image_dir>/<id>.<ext>` with
    the bundle's encoders, then add them (see the module docstring). Returns the new ids."""
    from mmrecbole.data.fileio import images_by_stem
    from mmrecbole.features.template import TextTemplate

    id_field = recommender.bundle.meta["iid_field"]
    if any(not isinstance(r, dict) or not str(r.get(id_field, "")).strip() for r in rows):
        raise ServingError(f"every new item needs its '{id_field}' (ITEM_ID_FIELD)")
    ids = [str(r[id_field]).strip() for r in rows]
    _check_can_add(recommender, ids)
    modalities = sorted(recommender.bundle.content)
    encoders = _encoders(recommender, modalities)
    vectors, texts, images = {}, [None] * len(ids), [None] * len(ids)
    if "text" in encoders:
        template = TextTemplate(recommender.config["text_template"])
        template.check_columns(sorted({k for r in rows for k in r}), "the new items")
        texts = [template.render({k: "" if v is None else str(v) for k, v in r.items()}) or None for r in rows]
        present = np.array([t is not None for t in texts])
        matrix = np.zeros((len(ids), encoders["text"].dim), dtype=np.float32)
        if present.any():
            matrix[present] = encoders["text"].encode([t for t in texts if t is not None])
        vectors["text"] = (matrix, present)
    if "image" in encoders:
        found = images_by_stem(image_dir) if image_dir and os.path.isdir(image_dir) else {}
        images = [found.get(i) for i in ids]
        with_image = [p for p in images if p]
        matrix = np.zeros((len(ids), encoders["image"].dim), dtype=np.float32)
        present = np.zeros(len(ids), dtype=bool)
        if with_image:
            encoded, ok = encoders["image"].encode(with_image, labels=[i for i, p in zip(ids, images) if p])
            rows_with = np.array([n for n, p in enumerate(images) if p])
            matrix[rows_with], present[rows_with] = encoded, ok
        vectors["image"] = (matrix, present)
    title_field = recommender.bundle.meta.get("title_field")
    titles = [str(r.get(title_field)) if title_field and r.get(title_field) else None for r in rows]
    return add_item_vectors(recommender, ids, vectors, {"title": titles, "text": texts, "image": images})
