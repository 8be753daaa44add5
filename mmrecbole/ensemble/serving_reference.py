"""What serving needs of a saved LGBMStacker beyond its LightGBM model (mmrecbole.serving.stacker reads it).

`<stacker folder>/serving.bundle` (torch zip, weights only, written atomically) holds the item statistics of the
protocol's training split that the features read (popularity, first appearance, the item/time search keys), the
content unit tables of its `content_modalities`, and the bundles of its base models (written beside their
checkpoints when missing), by path.
"""
from __future__ import annotations

import json
import os

import torch

from mmrecbole import checkpoint

FILE = "serving.bundle"
FORMAT = "mmrecbole-stacker-serving/1"


def write(folder: str, reference, content: dict, base_checkpoints: list) -> str:
    from mmrecbole import quick_start
    from mmrecbole.export import bundle_path_for

    bundles = []
    for path in base_checkpoints:
        bundle = bundle_path_for(path)
        if not os.path.isfile(bundle):
            quick_start.write_bundle(path, bundle)
        bundles.append(os.path.abspath(bundle))
    keys = reference.item_time_keys
    payload = {
        "format": FORMAT,
        "meta_json": json.dumps({"base_bundles": bundles, "time_origin": reference.time_origin,
                                 "time_span": reference.time_span, "key_stride": reference.key_stride,
                                 "has_time": reference.has_time, "has_time_keys": keys is not None}),
        "item_popularity": torch.from_numpy(reference.item_popularity),
        "item_first_time": torch.from_numpy(reference.item_first_time),
        "item_time_keys": torch.from_numpy(keys) if keys is not None else torch.zeros(0, dtype=torch.float64),
        "content": {m: {"unit": torch.from_numpy(unit), "has": torch.from_numpy(has)}
                    for m, (unit, has) in content.items()},
    }
    path = os.path.join(folder, FILE)
    checkpoint.atomic_torch_save(payload, path)
    return path
