"""Builder for ``amazon-office``: Amazon Office Products (2014, 5-core) interactions and item text, no images.

Inputs (the ``mm_raw_dir`` property, default ``<project>/../shared/data/amazon-office``): ``interactions.tsv``
(``user  item_asin  time  split``, rows in each user's order, oldest first) and ``items.tsv`` (``item_asin  text``:
title, category and brand run together).

Timestamps have day resolution and many users have several interactions on one day, so the file order is the order:
``amazon-office.inter`` keeps it row for row, and leave-one-out by time sorts stably (equal times keep the file
order, ``compat.TrueTimeOrderMixin``). The builder refuses a file whose own ``split`` column disagrees with that order
(each user's last row ``test``, the one before ``dev``) or whose times go backwards inside a user: either would make
our split differ from the one the data was published with.

Outputs, in ``dataset/amazon-office/``: ``amazon-office.inter`` (``user_id item_id timestamp``), ``amazon-office.item``
(``item_id text``) and ``build_manifest.json``.
"""
import csv
import logging
import os
from typing import Dict, List, Optional, Tuple

from mmrecbole import DATASET_DIR, shared_data_dir
from mmrecbole.data.atomic_files import atomic_path, write_atomic_file
from mmrecbole.data.fileio import sha256_file
from mmrecbole.data.manifest import BuildResult, is_up_to_date, write_manifest
from mmrecbole.errors import DatasetError

logger = logging.getLogger(__name__)

DATASET_NAME = "amazon-office"
#: Bump when the output format or checks change: outputs built by an older builder are rebuilt.
BUILDER_VERSION = 1
INTER_COLUMNS = ("user", "item_asin", "time", "split")
ITEM_COLUMNS = ("item_asin", "text")
INTER_HEADER = (("user_id", "token"), ("item_id", "token"), ("timestamp", "float"))
ITEM_HEADER = (("item_id", "token"), ("text", "token"))


def default_raw_dir() -> str:
    return shared_data_dir(DATASET_NAME)


def _raw_inputs(raw_dir: Optional[str]) -> Dict[str, str]:
    directory = os.path.abspath(os.path.expanduser(str(raw_dir))) if raw_dir else default_raw_dir()
    origin = ("property mm_raw_dir" if raw_dir
              else "the default location (<project>/../shared/data, or $MMRECBOLE_SHARED_DATA)")
    inputs = {"interactions": os.path.join(directory, "interactions.tsv"),
              "items": os.path.join(directory, "items.tsv")}
    for path in inputs.values():
        if not os.path.isfile(path):
            raise DatasetError(f"amazon-office raw file not found: {path} (looked there because of {origin}); point "
                               "to the folder holding interactions.tsv and items.tsv with --mm_raw_dir=DIR")
    return inputs


def _rows(path: str, columns: Tuple[str, ...]):
    """(line number, row dict) of a tab-separated file with a header naming at least ``columns``."""
    with open(path, "r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        missing = [c for c in columns if c not in (header or [])]
        if missing:
            raise DatasetError(f"{path}: header {header} lacks columns {missing}; expected {list(columns)}")
        index = [header.index(c) for c in columns]
        for line, cells in enumerate(reader, start=2):
            if len(cells) != len(header):
                raise DatasetError(f"{path} line {line}: {len(cells)} cells, the header has {len(header)}")
            yield line, {c: cells[i] for c, i in zip(columns, index)}


def _read_interactions(path: str) -> Tuple[List[list], Dict[str, int]]:
    """Rows ``[user, item, time]`` in file order, checked: users' rows contiguous, times non-decreasing inside a
    user, the file's split = leave-one-out on the file order."""
    rows: List[list] = []
    splits: Dict[str, List[str]] = {}
    last_time: Dict[str, int] = {}
    previous_user = None
    ties_in_last_three = 0
    for line, row in _rows(path, INTER_COLUMNS):
        user, item, split = row["user"].strip(), row["item_asin"].strip(), row["split"].strip()
        if not user or not item:
            raise DatasetError(f"{path} line {line}: empty user or item_asin")
        try:
            time = int(float(row["time"]))
        except ValueError:
            raise DatasetError(f"{path} line {line}: time {row['time']!r} is not a number (unix seconds)") from None
        if user != previous_user and user in splits:
            raise DatasetError(f"{path} line {line}: user {user}'s rows are not contiguous; the file order is the "
                               "time order within a user, so each user's rows must be together")
        if user in last_time and time < last_time[user]:
            raise DatasetError(f"{path} line {line}: user {user}'s time {time} is before their previous row's "
                               f"{last_time[user]}; rows must be in each user's order, oldest first")
        previous_user, last_time[user] = user, time
        splits.setdefault(user, []).append(split)
        rows.append([user, item, time])
    if not rows:
        raise DatasetError(f"{path}: no interactions")
    start = 0
    for user, labels in splits.items():
        expected = ["train"] * (len(labels) - 2) + ["dev", "test"]
        if len(labels) < 3 or labels != expected:
            raise DatasetError(f"{path}: user {user}'s split column is {labels}, expected {expected} (each user's "
                               "last row test, the one before dev): the file order disagrees with its own split")
        times = [r[2] for r in rows[start:start + len(labels)][-3:]]
        ties_in_last_three += len(set(times)) < len(times)
        start += len(labels)
    stats = {"interactions": len(rows), "users": len(splits), "users_with_tie_in_last_three": ties_in_last_three,
             "repeated_user_item_pairs": len(rows) - len({(r[0], r[1]) for r in rows})}
    return rows, stats


def _read_items(path: str, used: set) -> Tuple[List[list], Dict[str, int]]:
    texts: Dict[str, str] = {}
    for line, row in _rows(path, ITEM_COLUMNS):
        item = row["item_asin"].strip()
        if item in texts:
            raise DatasetError(f"{path} line {line}: item {item} appears twice")
        texts[item] = row["text"]
    missing = sorted(used - set(texts))
    if missing:
        raise DatasetError(f"{path}: {len(missing)} items of the interactions have no row, e.g. {missing[:3]}")
    rows = [[item, text] for item, text in texts.items() if item in used]
    return rows, {"items": len(rows), "items_without_interactions": len(texts) - len(rows),
                  "items_with_empty_text": sum(not text.strip() for _, text in rows)}


def build_amazon_office(out_dir: Optional[str] = None, raw_dir: Optional[str] = None,
                        force: bool = False) -> BuildResult:
    """Write ``amazon-office.inter`` / ``.item`` into ``out_dir`` (default ``dataset/amazon-office``); does nothing
    when the manifest shows the same inputs and intact outputs, unless ``force``."""
    out_dir = os.path.abspath(out_dir or os.path.join(DATASET_DIR, DATASET_NAME))
    outputs = {"inter": atomic_path(out_dir, DATASET_NAME, "inter"), "item": atomic_path(out_dir, DATASET_NAME, "item")}
    inputs = _raw_inputs(raw_dir)
    input_hashes = {name: sha256_file(path) for name, path in inputs.items()}
    if not force and is_up_to_date(out_dir, BUILDER_VERSION, input_hashes, outputs):
        logger.debug("amazon-office is up to date in %s", out_dir)
        return BuildResult(out_dir, outputs["inter"], outputs["item"], rebuilt=False)
    inter_rows, stats = _read_interactions(inputs["interactions"])
    item_rows, item_stats = _read_items(inputs["items"], {row[1] for row in inter_rows})
    stats.update(item_stats)
    os.makedirs(out_dir, exist_ok=True)
    write_atomic_file(outputs["inter"], INTER_HEADER, inter_rows)
    write_atomic_file(outputs["item"], ITEM_HEADER, item_rows)
    write_manifest(out_dir, DATASET_NAME, BUILDER_VERSION, inputs, input_hashes, outputs, stats)
    logger.info("built %s in %s: %s", DATASET_NAME, out_dir, stats)
    return BuildResult(out_dir, outputs["inter"], outputs["item"], rebuilt=True, stats=stats)
