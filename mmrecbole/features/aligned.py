"""Feature tables aligned to a RecBole dataset's item ids, loaded by the pipeline before a model is built.

`attach_item_content(config, dataset)` loads (or builds, the first time: BERT / the CNN) every table the model of
`config` reads and hangs them on the dataset the model is constructed with; the model's `ItemContentEncoder` only
takes them from there (`item_content`), so building a model never runs an encoder or writes a file.
"""
from __future__ import annotations

import logging

from mmrecbole.errors import ConfigError, FeatureError
from mmrecbole.features.store import MODALITIES, load_or_build_features
from mmrecbole.features.table import FeatureTable

logger = logging.getLogger(__name__)

#: The attribute of a RecBole dataset that holds {modality: (matrix [item_num, d], mask [item_num])}.
ITEM_CONTENT_ATTRIBUTE = "mm_item_content"
#: ... and {modality: the provenance of the table it came from} (what a serving bundle records for new items).
ITEM_CONTENT_PROVENANCE = "mm_item_content_provenance"


def aligned_features(config, dataset, modality, with_provenance=False):
    """(matrix [item_num, d] float32, mask [item_num] bool) of one modality in RecBole's item order, and the table's
    provenance third when `with_provenance`.

    `mm_feature_files: {modality: path}` names a precomputed table (FeatureTable .npz) to use as is; otherwise the
    table under dataset/<name>/features/ is reused while its provenance matches, or built now."""
    files = config["mm_feature_files"] or {}
    if modality in files:
        table = FeatureTable.load(files[modality])
        check_named_table(table, config, dataset, modality)
    else:
        table = load_or_build_features(config["dataset"], modality, config)
    matrix, mask = table.align(dataset)
    covered = int(mask.sum())
    logger.info(f"{modality} features: {covered}/{len(mask) - 1} items, dim {matrix.shape[1]} ({table.source})")
    if covered == 0:
        raise ConfigError(f"no item of dataset '{config['dataset']}' has {modality} features ({table.source})")
    return (matrix, mask, dict(table.provenance or {})) if with_provenance else (matrix, mask)


def check_named_table(table: FeatureTable, config, dataset, modality: str) -> None:
    """A table named in mm_feature_files must be of this dataset (its provenance), of this text template, and hold a
    row for every item: an overlapping id range of another dataset would otherwise align silently."""
    where = f"mm_feature_files {modality}: {table.source}"
    provenance = table.provenance or {}
    built_for = provenance.get("dataset")
    if built_for is not None and built_for != config["dataset"]:
        raise FeatureError(f"{where} was built for dataset '{built_for}', not '{config['dataset']}'; build this "
                           f"dataset's table (python -m mmrecbole.features extract --dataset={config['dataset']}) "
                           "or fix mm_feature_files")
    if provenance.get("modality") not in (None, modality):
        raise FeatureError(f"{where} holds {provenance['modality']} features, not {modality}")
    template = (provenance.get("recipe") or {}).get("template")
    if modality == "text" and template is not None and template != config["text_template"]:
        raise FeatureError(f"{where} was built with text_template {template!r}, but this run's text_template is "
                           f"{config['text_template']!r}; rebuild the table or set text_template to match")
    ids = set(str(i) for i in table.ids)
    items = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    missing = [t for t in items if t not in ids]
    if missing:
        raise FeatureError(f"{where} has no row for {len(missing)} of the dataset's {len(items)} items (e.g. "
                           f"{missing[:3]}): built for other data? rebuild it for this dataset")


def checked_modalities(modalities) -> list:
    """`modalities` as a list, ConfigError unless it is a list drawn from MODALITIES."""
    if not isinstance(modalities, (list, tuple)) or any(m not in MODALITIES for m in modalities):
        raise ConfigError(f"modalities must be a list drawn from {list(MODALITIES)}, got {modalities!r}")
    return list(modalities)


def attach_item_content(config, dataset, modalities=None) -> None:
    """Load the `modalities` (default: config's `modalities`) tables aligned to `dataset` and keep them on it."""
    wanted = checked_modalities(config["modalities"] if modalities is None else modalities)
    tables = dict(getattr(dataset, ITEM_CONTENT_ATTRIBUTE, None) or {})
    provenance = dict(getattr(dataset, ITEM_CONTENT_PROVENANCE, None) or {})
    for modality in wanted:
        if modality not in tables:
            matrix, mask, provenance[modality] = aligned_features(config, dataset, modality, True)
            tables[modality] = (matrix, mask)
    setattr(dataset, ITEM_CONTENT_ATTRIBUTE, tables)
    setattr(dataset, ITEM_CONTENT_PROVENANCE, provenance)


def item_content(dataset, modality):
    """The (matrix, mask) `attach_item_content` put on `dataset` for `modality`."""
    tables = getattr(dataset, ITEM_CONTENT_ATTRIBUTE, None) or {}
    if modality not in tables:
        raise ConfigError(f"the {modality} feature table was not loaded for this dataset: build content models "
                          "through mmrecbole.quick_start.build (or call "
                          "mmrecbole.features.attach_item_content(config, dataset) first)")
    return tables[modality]
