"""Where feature tables live and when they are (re)built.

``dataset/<name>/features/<modality>.npz`` holds one ``FeatureTable`` per (dataset, modality). ``plan_features``
works out, without running an encoder, the provenance a fresh build would record (input hash, encoder hash,
recipe, dimension); ``load_or_build_features`` reuses the stored table only when its provenance equals that plan,
otherwise it encodes, saves atomically and returns the new table. Models call it on first use.

Settings are any mapping with the keys of ``FEATURE_DEFAULTS`` (a RecBole ``Config``, a dict from the property
file, ...); missing keys and None values take the defaults below, which are also written out, with comments, in
``properties/dataset/ml-100k-mm.yaml``.
"""
import datetime
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from mmrecbole.data import atomic_path, dataset_dir, prepare_dataset, read_atomic_file, resolve_raw_dir
from mmrecbole.data.fileio import sha256_file, sha256_text
from mmrecbole.errors import FeatureError
from mmrecbole.features.packaged import DEFAULT_TEXT_ENCODER, packaged_encoder_path
from mmrecbole.features.table import FORMAT_VERSION, INFO_KEY, FeatureTable, provenance_changes

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
DEFAULT_TEXT_TEMPLATE = "{movie_title}[ ({release_year})][. {genre}][. Directed by {director}][. {description}]"
#: Every feature setting and its default (None = "work it out": packaged model, model's own limit, ...).
FEATURE_DEFAULTS: Dict[str, Any] = {
    "mm_raw_dir": None,
    "image_dir": None,
    "text_encoder": DEFAULT_TEXT_ENCODER,
    "text_encoder_path": None,
    "text_template": DEFAULT_TEXT_TEMPLATE,
    "text_pooling": "mean",
    "text_normalize": True,
    "text_max_length": None,
    "image_model": "mobilenet_v2",
    "image_weights": None,
    "image_resize": 256,
    "image_crop": 224,
    "image_num_workers": None,
    "feature_batch_size": 64,
    "feature_device": "auto",
}
# RecBole keys read as well (not ours; their defaults are RecBole's).
_RECBOLE_DEFAULTS = {"ITEM_ID_FIELD": "item_id", "data_path": None}


def setting(settings: Optional[Mapping], key: str) -> Any:
    """``settings[key]``, or the default when absent or None (a RecBole Config answers None for unknown keys)."""
    value = None
    if settings is not None:
        try:
            value = settings[key]
        except (KeyError, TypeError):
            value = None
    if value is None:
        return FEATURE_DEFAULTS.get(key, _RECBOLE_DEFAULTS.get(key))
    return value


def _int_setting(settings, key: str, minimum: int) -> Optional[int]:
    value = setting(settings, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FeatureError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bool_setting(settings, key: str) -> bool:
    value = setting(settings, key)
    if not isinstance(value, (bool, np.bool_)):
        raise FeatureError(f"{key} must be true or false, got {value!r}")
    return bool(value)


def feature_path(dataset_name: str, modality: str, data_path: Optional[str] = None,
                 text_encoder: Optional[str] = None) -> str:
    """``<data_path>/<dataset>/features/<modality>.npz`` (data_path defaults to the project's dataset/); text
    features of a packaged encoder other than the default go to ``text.<encoder>.npz``, so that rows of one board
    that compare encoders (and run side by side) do not rebuild one file in turn."""
    _check_modality(modality)
    name = modality
    if modality == "text" and text_encoder not in (None, DEFAULT_TEXT_ENCODER):
        name = f"text.{text_encoder}"
    return os.path.join(dataset_dir(dataset_name, data_path), "features", f"{name}.npz")


def settings_feature_path(dataset_name: str, modality: str, settings) -> str:
    """The file ``load_or_build_features`` reads for these settings (mmrecbole.features.store.feature_path)."""
    return feature_path(dataset_name, modality, setting(settings, "data_path"), setting(settings, "text_encoder"))


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise FeatureError(f"modality must be one of {MODALITIES}, got {modality!r}")


@dataclass
class FeatureJob:
    """A planned build: where it goes, the provenance it would record (minus ``info``), and how to run it.

    ``ids``: the table's item ids in row order. ``run(rows)`` encodes the items ``ids[rows]`` (default: all of them)
    and returns their table; a shard (mmrecbole.features.shards) is a contiguous slice of rows."""

    dataset_name: str
    modality: str
    path: str
    provenance: Dict[str, Any]
    run: Callable[..., FeatureTable]
    ids: List[str]


def _versions(*packages: str) -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _info(**extra) -> Dict[str, Any]:
    return dict(created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra)


def _item_ids(directory: str, dataset_name: str, id_field: str) -> Tuple[List[str], Optional[Any]]:
    """Item ids (and the .item frame, if there is one): from ``<name>.item``, else the ids seen in ``<name>.inter``."""
    item_file = atomic_path(directory, dataset_name, "item")
    if os.path.isfile(item_file):
        frame = read_atomic_file(item_file)
        if id_field not in frame.columns:
            raise FeatureError(f"{item_file} has no {id_field!r} column (ITEM_ID_FIELD); columns: {list(frame.columns)}")
        return frame[id_field].tolist(), frame
    inter = read_atomic_file(atomic_path(directory, dataset_name, "inter"), columns=[id_field])
    return list(dict.fromkeys(inter[id_field].tolist())), None


def text_encoder_folder(settings) -> str:
    """text_encoder_path when set, else the packaged encoder named by text_encoder; not both."""
    path, name = setting(settings, "text_encoder_path"), setting(settings, "text_encoder")
    if path is not None and name != DEFAULT_TEXT_ENCODER:
        raise FeatureError(f"text_encoder ({name}) and text_encoder_path ({path}) both name an encoder; set one: "
                           "text_encoder for a packaged one, text_encoder_path for a local folder")
    return path if path is not None else packaged_encoder_path(name)


def text_encoder(settings):
    """The TextEncoder the settings describe (cheap: the model loads on the first encode)."""
    from mmrecbole.features.text import TextEncoder

    return TextEncoder(
        text_encoder_folder(settings),
        pooling=setting(settings, "text_pooling"),
        normalize=_bool_setting(settings, "text_normalize"),
        max_length=_int_setting(settings, "text_max_length", 1),
        batch_size=_int_setting(settings, "feature_batch_size", 1),
        device=setting(settings, "feature_device"),
    )


def image_encoder(settings):
    """The ImageEncoder the settings describe (the CNN loads on the first encode)."""
    from mmrecbole.features.image import ImageEncoder

    return ImageEncoder(
        setting(settings, "image_model"),
        setting(settings, "image_weights"),
        resize=_int_setting(settings, "image_resize", 1),
        crop=_int_setting(settings, "image_crop", 1),
        batch_size=_int_setting(settings, "feature_batch_size", 1),
        num_workers=_int_setting(settings, "image_num_workers", 0),
        device=setting(settings, "feature_device"),
    )


def _plan_text(dataset_name: str, directory: str, settings, path: str) -> FeatureJob:
    from mmrecbole.features.template import TextTemplate

    id_field = setting(settings, "ITEM_ID_FIELD")
    ids, frame = _item_ids(directory, dataset_name, id_field)
    item_file = atomic_path(directory, dataset_name, "item")
    if frame is None:
        raise FeatureError(f"text features need an item file with text columns: {item_file} not found")
    template = TextTemplate(setting(settings, "text_template"))
    template.check_columns(list(frame.columns), item_file)
    texts = [template.render(record) for record in frame.to_dict("records")]
    encoder = text_encoder(settings)
    provenance = {
        "format": FORMAT_VERSION,
        "dataset": dataset_name,
        "modality": "text",
        "encoder": encoder.identity(),
        "recipe": dict(template=template.template, **encoder.recipe()),
        "inputs_sha256": sha256_text(json.dumps(list(zip(ids, texts)), ensure_ascii=False)),
        "dim": encoder.dim,
    }

    def run(rows: slice = slice(None)) -> FeatureTable:
        part_ids, part_texts = ids[rows], texts[rows]
        present = np.array([bool(t) for t in part_texts], dtype=bool)
        matrix = np.zeros((len(part_ids), encoder.dim), dtype=np.float32)
        if present.any():
            matrix[present] = encoder.encode([t for t in part_texts if t])
        info = _info(
            items=len(part_ids), with_feature=int(present.sum()), device=getattr(encoder, "device", "cpu"),
            versions=_versions("torch", "transformers", "numpy"), **encoder.describe(),
        )
        return FeatureTable(part_ids, matrix, present, dict(provenance, **{INFO_KEY: info}), source=path)

    return FeatureJob(dataset_name, "text", path, provenance, run, list(ids))


def declares(settings, key: str) -> bool:
    """Whether `settings` (property-file values, or a Config) set `key` at all, if only to null."""
    final = getattr(settings, "final_config_dict", None)
    return key in (final if final is not None else (settings or {}))


def dataset_modalities(settings) -> tuple:
    """The modalities a dataset has: text always (a template over its .item columns), image when its property file
    declares ``image_dir`` (even as null) or one is given."""
    return MODALITIES if declares(settings, "image_dir") else ("text",)


def resolve_image_dir(directory: str, settings) -> str:
    """``image_dir`` (relative = inside the dataset folder); null = ``<mm_raw_dir>/posters`` for a dataset whose
    property file declares ``image_dir`` (ml-100k-mm). A dataset that declares none has no images: without this
    check it would read ml-100k-mm's posters, whose file names are MovieLens ids."""
    image_dir = setting(settings, "image_dir")
    if image_dir is None:
        if not declares(settings, "image_dir"):
            raise FeatureError(f"the dataset in {directory} declares no image folder: image features need image_dir "
                               "(a folder of <item id>.jpg|.png, relative to the dataset folder) in its property "
                               "file or as --image_dir=FOLDER; or leave 'image' out of modalities")
        return os.path.join(resolve_raw_dir(setting(settings, "mm_raw_dir"))[0], "posters")
    return os.path.normpath(os.path.join(directory, os.path.expanduser(str(image_dir))))


def _plan_image(dataset_name: str, directory: str, settings, path: str) -> FeatureJob:
    from mmrecbole.features.image import index_images

    ids, _ = _item_ids(directory, dataset_name, setting(settings, "ITEM_ID_FIELD"))
    image_dir = resolve_image_dir(directory, settings)
    images = index_images(image_dir)
    encoder = image_encoder(settings)
    # The item ids and each image's bytes: a changed, added or removed poster changes the hash.
    inputs = [[i, sha256_file(images[i]) if i in images else None] for i in ids]
    provenance = {
        "format": FORMAT_VERSION,
        "dataset": dataset_name,
        "modality": "image",
        "encoder": encoder.identity(),
        "recipe": encoder.recipe(),
        "inputs_sha256": sha256_text(json.dumps(inputs)),
        "dim": encoder.dim,
    }

    def run(rows: slice = slice(None)) -> FeatureTable:
        part_ids = ids[rows]
        row_of = {item_id: row for row, item_id in enumerate(part_ids)}
        part_with_image = [i for i in part_ids if i in images]
        matrix = np.zeros((len(part_ids), encoder.dim), dtype=np.float32)
        present = np.zeros(len(part_ids), dtype=bool)
        ok = []
        if part_with_image:
            vectors, ok = encoder.encode([images[i] for i in part_with_image], labels=part_with_image)
            found = np.array([row_of[i] for i in part_with_image], dtype=np.int64)
            matrix[found], present[found] = vectors, ok
        info = _info(
            items=len(part_ids), with_feature=int(present.sum()), image_dir=image_dir,
            unreadable_item_ids=[i for i, good in zip(part_with_image, ok) if not good],
            device=getattr(encoder, "device", "cpu"), versions=_versions("torch", "torchvision", "pillow", "numpy"),
            **encoder.describe(),
        )
        return FeatureTable(part_ids, matrix, present, dict(provenance, **{INFO_KEY: info}), source=path)

    return FeatureJob(dataset_name, "image", path, provenance, run, list(ids))


def plan_features(dataset_name: str, modality: str, settings: Optional[Mapping] = None) -> FeatureJob:
    """The build that ``load_or_build_features`` would run, with its provenance computed (no encoder run).

    Builds the dataset's atomic files first when a builder exists and they are missing or stale.
    """
    _check_modality(modality)
    directory = prepare_dataset(
        dataset_name, setting(settings, "data_path"), raw_dir=setting(settings, "mm_raw_dir")
    )
    path = settings_feature_path(dataset_name, modality, settings)
    planner = _plan_text if modality == "text" else _plan_image
    return planner(dataset_name, directory, settings, path)


def stored_status(job: FeatureJob) -> Tuple[Optional[FeatureTable], str]:
    """(stored table or None, 'up to date' | 'missing' | 'stale: <what changed>' | 'unreadable: <why>')."""
    if not os.path.isfile(job.path):
        return None, "missing"
    try:
        stored = FeatureTable.load(job.path)
    except FeatureError as exc:
        return None, f"unreadable: {exc}"
    changes = provenance_changes(stored.provenance, job.provenance)
    return stored, ("stale: " + ", ".join(changes) + " changed") if changes else "up to date"


def materialize(job: FeatureJob, force: bool = False) -> Tuple[FeatureTable, str]:
    """(table, what happened): the stored table if it is up to date ('reused'), else a freshly encoded one, saved
    atomically ('built (<why>)')."""
    status = "forced"
    if not force:
        stored, status = stored_status(job)
        if stored is not None and status == "up to date":
            logger.debug("reusing %s", job.path)
            return stored, "reused (up to date)"
    log = logger.warning if status.startswith("unreadable") else logger.info  # a damaged file: say so
    log("building %s features of %s (%s) -> %s", job.modality, job.dataset_name, status, job.path)
    table = job.run()
    table.save(job.path)
    return table, f"built ({status})"


def load_or_build_features(
    dataset_name: str, modality: str, settings: Optional[Mapping] = None, force: bool = False
) -> FeatureTable:
    """The ``modality`` table of ``dataset_name``: the stored one when its provenance still matches, else a new
    one (encoded now, saved atomically to ``dataset/<name>/features/<modality>.npz``, see ``feature_path``)."""
    return materialize(plan_features(dataset_name, modality, settings), force=force)[0]
