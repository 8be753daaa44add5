"""Checks of an atomic file before RecBole reads it, so that a malformed file ends in one line naming the file, the
line and the column, not in a pandas traceback or (worse) in silently shifted columns.

RecBole 1.2.1 reads `<name>.inter|.user|.item` with `pandas.read_csv(engine="python")`: a row with fewer cells than
the header gets NaN (a missing timestamp reorders the user's history), a row with more is read without complaint, a
header cell without `:type` or a non-numeric float raises deep inside pandas. `check_atomic_file` refuses all of
these with the place and the fix. A UTF-8 byte-order mark is accepted: the caller reads the file as 'utf-8-sig'.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Collection, List, Optional, Tuple

import numpy as np

from mmrecbole.data.atomic_files import ATOMIC_TYPES
from mmrecbole.errors import DatasetError

_EXAMPLE_HEADER = "'user_id:token<TAB>item_id:token<TAB>timestamp:float'"


@dataclass(frozen=True)
class CheckedFile:
    """What the check learnt: the header [(name, type)], the data row count, and the encoding to read it with."""

    header: Tuple[Tuple[str, str], ...]
    rows: int
    encoding: str


def _decode(path: str, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}: byte {raw[exc.start:exc.start + 1]!r} is not valid {encoding}; save the file as "
            f"UTF-8 (or set --encoding to the encoding it is written in, e.g. latin-1)"
        ) from None
    except LookupError:
        raise DatasetError(f"encoding {encoding!r} (setting 'encoding') is not a known text encoding; use utf-8") from None


def _header(path: str, first_line: str, separator: str) -> List[Tuple[str, str]]:
    cells = first_line.rstrip("\r").split(separator)
    if len(cells) == 1 and separator != "," and "," in cells[0]:
        raise DatasetError(
            f"{path}, line 1: the header has no {separator!r} separator but has commas: atomic files are "
            f"tab-separated (field_separator); convert it, e.g. with python -m mmrecbole.data import"
        )
    header, seen = [], {}
    for column, cell in enumerate(cells, start=1):
        name, sep, ftype = cell.rpartition(":")
        if not sep or not name:
            raise DatasetError(
                f"{path}, line 1, column {column}: header cell {cell!r} has no ':type'; each header cell is "
                f"name:type with type one of {', '.join(ATOMIC_TYPES)}, e.g. {_EXAMPLE_HEADER}"
            )
        if ftype not in ATOMIC_TYPES:
            raise DatasetError(
                f"{path}, line 1, column {column}: type {ftype!r} of field {name!r} is not one of "
                f"{', '.join(ATOMIC_TYPES)}"
            )
        if name in seen:
            raise DatasetError(f"{path}, line 1: field {name!r} appears twice in the header (columns {seen[name]} "
                               f"and {column}); rename or drop one")
        seen[name] = column
        header.append((name, ftype))
    return header


def _all_numbers(values) -> bool:
    try:
        np.asarray(values, dtype=np.float64)
    except ValueError:
        return False
    return True


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def check_atomic_file(
    path: str,
    *,
    loaded: Optional[Collection[str]] = None,
    required: Collection[Tuple[str, str]] = (),
    encoding: Optional[str] = None,
    separator: str = "\t",
    seq_separator: str = " ",
) -> CheckedFile:
    """Refuse a malformed atomic file with a DatasetError naming the file, line and column.

    Args:
        loaded: the fields RecBole will load (None = all); only their values are type-checked, but every row must
            have as many cells as the header.
        required: (field, why) pairs that must be in the header and loaded, e.g. ('timestamp', 'the time-ordered
            protocol (eval_args order: TO) sorts by it'); their cells may not be empty.
        encoding: the file's text encoding (RecBole's `encoding` setting; None = utf-8).
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    encoding = encoding or "utf-8"
    if raw.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8":
        raw, encoding = raw[len(codecs.BOM_UTF8):], "utf-8-sig"  # written by Excel / Notepad: accepted
    if not raw.strip():
        raise DatasetError(f"{path} is empty: an atomic file starts with a header line like {_EXAMPLE_HEADER}, "
                           "then one row per line")
    lines = _decode(path, raw, "utf-8" if encoding == "utf-8-sig" else encoding).split("\n")
    header = _header(path, lines[0], separator)
    names = [name for name, _ in header]
    for field, why in required:
        if field not in names or (loaded is not None and field not in loaded):
            where = "is not in its header" if field not in names else "is not loaded (load_col)"
            raise DatasetError(f"{path}: field {field!r} {where}, but {why}; header fields: {', '.join(names)}")
    checks = []  # (column index, name, kind) of the cells to check in every row
    must_have = {field for field, _ in required}
    for index, (name, ftype) in enumerate(header):
        if loaded is not None and name not in loaded:
            continue
        if ftype == "float":
            checks.append((index, name, "float"))
        elif ftype == "float_seq":
            checks.append((index, name, "float_seq"))
        elif name in must_have:
            checks.append((index, name, "token"))
    width = len(header)
    numbered = [(number, line.rstrip("\r")) for number, line in enumerate(lines[1:], start=2)
                if line.strip()]  # pandas skips blank lines too
    cells = [line.split(separator) for _, line in numbered]
    for (number, _), row in zip(numbered, cells):
        if len(row) != width:
            raise DatasetError(
                f"{path}, line {number}: {len(row)} cells, the header has {width} ({', '.join(names)}); "
                f"a cell may not contain the separator {separator!r}, and an empty value is still a cell"
            )
    for index, name, kind in checks:
        column = [row[index].strip() for row in cells]
        # The common case (every cell fine) is checked at C speed; only a column with a bad cell is walked row by
        # row, to name the first one.
        fine = all(column) if name in must_have else True
        fine = fine and (kind == "token" or (kind == "float" and _all_numbers([v for v in column if v])))
        if fine:
            continue
        for (number, _), value in zip(numbered, column):
            if not value:
                if name in must_have:
                    raise DatasetError(f"{path}, line {number}, column {index + 1} ({name}): empty, and every row "
                                       f"needs a {name}")
                continue
            if kind == "float" and _not_a_number(value):
                raise DatasetError(f"{path}, line {number}, column {index + 1} ({name}:float): {value!r} is not a "
                                   "number")
            if kind == "float_seq":
                bad = next((v for v in value.split(seq_separator) if v and _not_a_number(v)), None)
                if bad is not None:
                    raise DatasetError(f"{path}, line {number}, column {index + 1} ({name}:float_seq): {bad!r} is "
                                       "not a number")
    rows = len(numbered)
    if rows == 0:
        raise DatasetError(f"{path} has a header but no data rows")
    return CheckedFile(tuple(header), rows, encoding)
