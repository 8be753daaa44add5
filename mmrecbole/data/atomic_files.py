"""Reading and writing RecBole atomic files (``<name>.inter``, ``<name>.item``): tab-separated, header ``name:type``.

RecBole parses these with ``pandas.read_csv(engine="python")`` and the default quote handling, so a cell that starts
with a double quote breaks its parser ("'\\t' expected after '\\"'") and a tab or newline inside a cell shifts
columns. ``clean_cell`` removes both hazards before anything is written.
"""
import csv
import io
import os
import re
from typing import Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from mmrecbole.data.fileio import write_atomically
from mmrecbole.errors import DatasetError

#: Columns tried, in order, for an item's title when `item_title_field` is not set (serving's reasons, features
#: inspect).
TITLE_COLUMNS = ("title", "movie_title", "name", "item_name")

#: RecBole 1.2.1's feature types (``recbole.utils.enum_type.FeatureType``).
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
_WHITESPACE = re.compile(r"\s+")


def clean_cell(value) -> str:
    """One cell as safe text: None -> '', whitespace runs (tabs, newlines) -> one space, '"' -> "'"."""
    if value is None:
        return ""
    text = _WHITESPACE.sub(" ", str(value)).strip()
    return text.replace('"', "'")


def atomic_path(dataset_dir: str, dataset_name: str, suffix: str) -> str:
    return os.path.join(dataset_dir, f"{dataset_name}.{suffix}")


def write_atomic_file(path: str, header: Sequence[Tuple[str, str]], rows: Iterable[Sequence]) -> int:
    """Write an atomic file (atomically: temp file + rename). Returns the number of data rows written."""
    for name, ftype in header:
        if ftype not in ATOMIC_TYPES:
            raise ValueError(f"column {name!r}: type {ftype!r} is not one of RecBole's {ATOMIC_TYPES}")
    lines = ["\t".join(f"{name}:{ftype}" for name, ftype in header)]
    width = len(header)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"row has {len(row)} cells, header has {width}: {row!r}")
        lines.append("\t".join(clean_cell(cell) for cell in row))
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    write_atomically(path, lambda handle: handle.write(payload))
    return len(lines) - 1


def read_header(path: str, encoding: str = "utf-8") -> List[Tuple[str, str]]:
    """``[(name, type), ...]`` from an atomic file's first line."""
    with open(path, "r", encoding=encoding, errors="replace") as handle:
        return _parse_header(path, handle.readline())


def read_atomic_file(path: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """An atomic file as a DataFrame of strings with plain column names (types dropped); empty cells are ''.

    Every cell is kept as text (ids stay '007', not 7) and no quote processing is done, so free text (plots, casts)
    comes back exactly as written. UTF-8 is tried first; MovieLens' original files are latin-1, read as a fallback.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"atomic file not found: {path}")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    header = _parse_header(path, text.split("\n", 1)[0])
    names = [name for name, _ in header]
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DatasetError(f"{path}: columns {missing} not in its header {names}")
    frame = pd.read_csv(
        io.StringIO(text),
        sep="\t",
        header=0,
        names=names,
        usecols=list(columns) if columns is not None else None,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        engine="c",
    )
    return frame


def _parse_header(path: str, first_line: str) -> List[Tuple[str, str]]:
    header = []
    for cell in first_line.rstrip("\r\n").split("\t"):
        name, sep, ftype = cell.rpartition(":")
        if not sep or ftype not in ATOMIC_TYPES:
            raise DatasetError(
                f"{path}: header cell {cell!r} is not 'name:type' with type in {ATOMIC_TYPES}; "
                "atomic files need a header like 'item_id:token<TAB>movie_title:token_seq'"
            )
        header.append((name, ftype))
    return header
