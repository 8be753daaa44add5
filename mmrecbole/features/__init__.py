"""Item feature tables: text (BERT-family encoder) and image (torchvision CNN) vectors per item.

``load_or_build_features(dataset, modality, settings)`` returns a ``FeatureTable`` (raw ids, float32 matrix,
presence mask, provenance), building it on first use and reusing it while its provenance matches.
``table.align(recbole_dataset)`` gives torch tensors in RecBole's internal item order. Encoders (torch,
transformers, torchvision) are imported only when a table is actually built.
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

__all__ = [
    "FEATURE_DEFAULTS",
    "MODALITIES",
    "FeatureJob",
    "FeatureTable",
    "feature_path",
    "load_or_build_features",
    "materialize",
    "plan_features",
    "provenance_changes",
    "stored_status",
]
