"""Item feature tables: text (BERT-family encoder) and image (torchvision CNN) vectors per item.

``load_or_build_features(dataset, modality, settings)`` returns a ``FeatureTable`` (raw ids, float32 matrix,
presence mask, provenance), building it on first use and reusing it while its provenance matches.
``table.align(recbole_dataset)`` gives torch tensors in RecBole's internal item order;
``attach_item_content(config, dataset)`` loads a model's tables onto the dataset it is built with, before it is
built. Encoders (torch, transformers, torchvision) are imported only when a table is actually built.
"""
from mmrecbole.features.store import (
    FEATURE_DEFAULTS,
    MODALITIES,
    FeatureJob,
    feature_path,
    load_or_build_features,
    materialize,
    plan_features,
    stored_status,
)
from mmrecbole.features.table import FeatureTable, provenance_changes
from mmrecbole.features.aligned import aligned_features, attach_item_content, item_content

__all__ = [
    "FEATURE_DEFAULTS",
    "MODALITIES",
    "FeatureJob",
    "FeatureTable",
    "aligned_features",
    "attach_item_content",
    "feature_path",
    "item_content",
    "load_or_build_features",
    "materialize",
    "plan_features",
    "provenance_changes",
    "stored_status",
]
