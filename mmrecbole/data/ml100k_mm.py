"""Builder for ``ml-100k-mm``: MovieLens-100K interactions and items, plus plot/director/cast text per item.

Inputs: the ``ml-100k`` atomic files inside the installed ``recbole`` wheel (interactions, titles, years, genres)
and ``plots.json`` from the raw directory (IMDB plot summaries keyed by MovieLens item id). Posters are not copied:
the image feature extractor reads ``<raw dir>/posters/<item_id>.jpg`` where they are.

Outputs, in ``dataset/ml-100k-mm/``: ``ml-100k-mm.inter``, ``ml-100k-mm.item`` and ``build_manifest.json`` (input
and output hashes; a later call with the same inputs and intact outputs does nothing).

The long text columns (description, director, cast) are declared ``:token`` so the file stays valid for RecBole,
but the dataset property file leaves them out of ``load_col``: RecBole must not build a vocabulary of plot strings.
"""
import importlib.util
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

from mmrecbole import DATASET_DIR, shared_data_dir
from mmrecbole.data.atomic_files import atomic_path, read_atomic_file, read_header, write_atomic_file
from mmrecbole.data.fileio import sha256_file, write_atomically
from mmrecbole.data.manifest import BuildResult, is_up_to_date, write_manifest
from mmrecbole.errors import DatasetError

logger = logging.getLogger(__name__)

DATASET_NAME = "ml-100k-mm"
#: Bump when the output format or cleaning rules change: outputs built by an older builder are rebuilt.
BUILDER_VERSION = 1
RAW_DIR_ENV = "MMRECBOLE_RAW_DIR"

ITEM_HEADER = (
    ("item_id", "token"),
    ("movie_title", "token_seq"),
    ("release_year", "token"),
    ("genre", "token_seq"),
    ("description", "token"),
    ("director", "token"),
    ("cast", "token"),
)
# RecBole's copy of ml-100k spells a missing title/year 'unkonwn' (item 267).
_UNKNOWN_VALUES = {"unknown", "unkonwn"}
# IMDB's page text for titles without a plot (51 entries of plots.json, Star Wars among them): not a plot.
_PLACEHOLDER_PLOT_PREFIX = "It looks like we don't have any Plot Summaries"


def default_raw_dir() -> str:
    return shared_data_dir("ml-100k-mm")


def resolve_raw_dir(raw_dir: Optional[str] = None) -> Tuple[str, str]:
    """(directory, where the choice came from): the ``mm_raw_dir`` value if given, else $MMRECBOLE_RAW_DIR, else
    ``<project>/../shared/data/ml-100k-mm``."""
    if raw_dir:
        return os.path.abspath(os.path.expanduser(str(raw_dir))), "property mm_raw_dir"
    if os.environ.get(RAW_DIR_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[RAW_DIR_ENV])), f"environment variable {RAW_DIR_ENV}"
    return default_raw_dir(), "the default location (<project>/../shared/data, or $MMRECBOLE_SHARED_DATA)"


def recbole_ml100k_dir() -> str:
    """``recbole/dataset_example/ml-100k`` inside the installed recbole package (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("package 'recbole' is not installed; it ships the ml-100k interactions (pip install recbole)")
    return os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", "ml-100k")


def _require_file(path: str, what: str, how_to_fix: str) -> None:
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}. {how_to_fix}")


def _raw_inputs(raw_dir: Optional[str]) -> Dict[str, str]:
    """Paths of the three inputs, each checked to exist (with a message naming it and how to point elsewhere)."""
    directory, origin = resolve_raw_dir(raw_dir)
    point_elsewhere = (
        f"Point to the ml-100k-mm raw files with the property mm_raw_dir or the environment variable {RAW_DIR_ENV} "
        f"(looked there because of {origin})."
    )
    if not os.path.isdir(directory):
        raise DatasetError(f"ml-100k-mm raw directory not found: {directory}. {point_elsewhere}")
    recbole_dir = recbole_ml100k_dir()
    reinstall = "Reinstall recbole==1.2.1, which ships these files."
    inputs = {
        "inter": os.path.join(recbole_dir, "ml-100k.inter"),
        "item": os.path.join(recbole_dir, "ml-100k.item"),
        "plots": os.path.join(directory, "plots.json"),
    }
    _require_file(inputs["inter"], "recbole's ml-100k interactions", reinstall)
    _require_file(inputs["item"], "recbole's ml-100k item table", reinstall)
    _require_file(inputs["plots"], "ml-100k-mm plots file", point_elsewhere)
    return inputs


def _clean_scalar(value) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in _UNKNOWN_VALUES else text


def _clean_names(values) -> str:
    """A director/cast list as 'A, B, C'; the scrape writes a missing list as ['nan']."""
    if not isinstance(values, list):
        values = [values]
    names = [str(v).strip() for v in values if v is not None and str(v).strip().lower() not in ("", "nan", "none")]
    return ", ".join(names)


def _clean_plot(value) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.startswith(_PLACEHOLDER_PLOT_PREFIX) else text


def load_plots(path: str) -> Dict[str, dict]:
    """plots.json as {item id (str): record}; the first record wins when an id repeats."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            records = json.load(handle)
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); expected a list of objects with 'movie_id'") from exc
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON list of objects with 'movie_id', got {type(records).__name__}")
    plots: Dict[str, dict] = {}
    for position, record in enumerate(records):
        if not isinstance(record, dict) or "movie_id" not in record:
            raise DatasetError(f"{path}: entry {position} has no 'movie_id' (each entry must be an object with one)")
        try:
            item_id = str(int(record["movie_id"]))
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: entry {position} has movie_id {record['movie_id']!r}, not an integer")
        plots.setdefault(item_id, record)
    return plots


def _item_rows(item_path: str, plots: Dict[str, dict]) -> Tuple[List[list], Dict[str, int]]:
    items = read_atomic_file(item_path)
    genre_column = "class" if "class" in items.columns else "genre"
    rows, stats = [], {"items": 0, "with_plot_record": 0, "with_description": 0}
    for record in items.to_dict("records"):
        item_id = record["item_id"]
        plot = plots.get(item_id, {})
        description = _clean_plot(plot.get("description"))
        rows.append([
            item_id,
            _clean_scalar(record.get("movie_title")),
            _clean_scalar(record.get("release_year")),
            record.get(genre_column, ""),
            description,
            _clean_names(plot.get("director", [])),
            _clean_names(plot.get("cast", [])),
        ])
        stats["items"] += 1
        stats["with_plot_record"] += bool(plot)
        stats["with_description"] += bool(description)
    stats["plot_records_unknown_item"] = len(set(plots) - set(items["item_id"]))
    return rows, stats


def build_ml100k_mm(out_dir: Optional[str] = None, raw_dir: Optional[str] = None, force: bool = False) -> BuildResult:
    """Write ``ml-100k-mm.inter`` / ``.item`` into ``out_dir`` (default ``dataset/ml-100k-mm``).

    ``raw_dir``: where ``plots.json`` lives (the ``mm_raw_dir`` property); None falls back to $MMRECBOLE_RAW_DIR,
    then ``<project>/../shared/data/ml-100k-mm``. Does nothing when the manifest shows the same inputs and intact
    outputs, unless ``force``. Raises DatasetError naming the missing file and how to point elsewhere.
    """
    out_dir = os.path.abspath(out_dir or os.path.join(DATASET_DIR, DATASET_NAME))
    outputs = {
        "inter": atomic_path(out_dir, DATASET_NAME, "inter"),
        "item": atomic_path(out_dir, DATASET_NAME, "item"),
    }
    inputs = _raw_inputs(raw_dir)
    input_hashes = {name: sha256_file(path) for name, path in inputs.items()}
    if not force and is_up_to_date(out_dir, BUILDER_VERSION, input_hashes, outputs):
        logger.debug("ml-100k-mm is up to date in %s", out_dir)
        return BuildResult(out_dir, outputs["inter"], outputs["item"], rebuilt=False)

    header = read_header(inputs["inter"])
    if [name for name, _ in header][:2] != ["user_id", "item_id"]:
        raise DatasetError(f"{inputs['inter']}: unexpected header {header}; is this recbole's ml-100k.inter?")
    with open(inputs["inter"], "rb") as handle:
        inter_bytes = handle.read()
    rows, stats = _item_rows(inputs["item"], load_plots(inputs["plots"]))
    stats["interactions"] = inter_bytes.count(b"\n") - 1

    os.makedirs(out_dir, exist_ok=True)
    write_atomically(outputs["inter"], lambda handle: handle.write(inter_bytes))
    write_atomic_file(outputs["item"], ITEM_HEADER, rows)
    write_manifest(out_dir, DATASET_NAME, BUILDER_VERSION, inputs, input_hashes, outputs, stats)
    logger.info("built %s in %s: %s", DATASET_NAME, out_dir, stats)
    return BuildResult(out_dir, outputs["inter"], outputs["item"], rebuilt=True, stats=stats)
