"""Reading a user's export (CSV, TSV, Parquet, JSON lines) and checking its columns, for ``mmrecbole.data.importer``.

Every problem is a one-line ``DatasetError`` naming the file, the column and the row (1-based data row: the header is
not counted, so "row 1" is the first record) and saying how to fix it. Cells become text the way the atomic-file
writer wants them (``clean_cell``: tabs/newlines -> one space, ``"`` -> ``'``); ids read from CSV stay text ('007'
stays '007'), ids that a JSON or Parquet file stores as numbers are written without a spurious '.0'.
"""
import json
import math
import os
import re
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from mmrecbole.config import closest
from mmrecbole.data.atomic_files import clean_cell
from mmrecbole.errors import DatasetError

#: File extension -> format read.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
PYARROW_PIN = "pyarrow==25.0.1"
_SHOWN_COLUMNS = 20
# A time of day followed by a UTC offset ('12:30:00Z', '12:30+02:00'): such dates are parsed apart from naive ones
# (pandas gives a naive date that follows an offset one in the same column that offset, not UTC).
_HAS_OFFSET = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(z|[+-]\d{2}(:?\d{2})?)$", re.IGNORECASE)
_EPOCH = pd.Timestamp(0, tz="UTC")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_table(path: str, option: str) -> pd.DataFrame:
    """The file given to ``--<option>`` as a DataFrame (CSV/TSV: every cell a string, nothing read as NaN)."""
    if not os.path.isfile(path):
        what = "a folder, not a file" if os.path.isdir(path) else "file not found"
        raise DatasetError(f"{path}: {what} (--{option}); check the path")
    extension = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(extension)
    if fmt is None:
        raise DatasetError(f"{path}: unknown format {extension or '(no extension)'!r} (--{option}); name the file "
                           f"with one of {', '.join(sorted(FORMATS))}")
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                                encoding="utf-8-sig")
        elif fmt == "parquet":
            frame = _read_parquet(path)
        else:
            frame = _read_json(path, fmt)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({_one_line(exc)}); save it as UTF-8") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # EmptyDataError, pyarrow's ArrowInvalid too
        raise DatasetError(f"{path}: cannot be read as {fmt} ({_one_line(exc)}); check the file "
                           f"(CSV: quote cells that hold the separator or newlines)") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DatasetError(f"{path}: no records (--{option}); it needs a header and at least one row")
    return frame


def _read_parquet(path: str) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs pyarrow, which is not installed: pip install "
                           f"{PYARROW_PIN} (pinned in requirements.txt), or export the table as CSV") from None
    return pd.read_parquet(path)


def _read_json(path: str, fmt: str) -> pd.DataFrame:
    """JSON lines (one object per line); a ``.json`` file may also hold one array of objects."""
    with open(path, "r", encoding="utf-8-sig") as handle:
        text = handle.read()
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"{path}: not valid JSON ({_one_line(exc)}); expected an array of objects "
                               "or one object per line") from None
    else:
        records = []
        # split on '\n' only: str.splitlines() would also split inside strings holding U+2028 and friends
        for line_number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise DatasetError(f"{path}: line {line_number} is not valid JSON ({_one_line(exc)}); JSON lines "
                                   "need one complete object per line") from None
    for row, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: row {row} is a JSON {type(record).__name__}, not an object; each record "
                               "must be an object like {\"user_id\": ..., \"item_id\": ...}")
    return pd.DataFrame(records, dtype=object)


def as_text(value) -> str:
    """One cell as text: missing -> '', 3.0 -> '3', a list -> 'a, b'."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if float(value).is_integer() and abs(value) < 2 ** 53:
            return str(int(value))
        return repr(float(value))
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(t for t in (as_text(v) for v in value) if t)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def clean_column(frame: pd.DataFrame, column: str) -> List[str]:
    """The column's cells as cleaned atomic-file text."""
    return [clean_cell(as_text(v)) for v in frame[column].tolist()]


def _columns_text(columns: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:_SHOWN_COLUMNS])
    return shown + (f" and {len(columns) - _SHOWN_COLUMNS} more" if len(columns) > _SHOWN_COLUMNS else "")


def find_column(frame: pd.DataFrame, path: str, option: str, given: Optional[str], guesses: Sequence[str],
                required: bool, why: str = "") -> Optional[str]:
    """The column for ``--<option>``: the one given (which must exist), else the first of ``guesses`` present
    (exact name first, then ignoring case); None when optional and absent."""
    columns = list(frame.columns)
    if given is not None:
        if given in columns:
            return given
        hint = closest(given, columns)
        raise DatasetError(f"{path}: no column {given!r} (--{option}={given})"
                           + (f"; did you mean {hint!r}?" if hint else "") + f"; its columns: {_columns_text(columns)}")
    for guess in guesses:
        if guess in columns:
            return guess
    lowered = {c.lower(): c for c in columns}
    for guess in guesses:
        if guess in lowered:
            return lowered[guess]
    if required:
        raise DatasetError(f"{path}: no {option} column (looked for {', '.join(guesses)}){why}; name it with "
                           f"--{option}=COLUMN; its columns: {_columns_text(columns)}")
    return None


def id_values(frame: pd.DataFrame, column: str, path: str, what: str) -> List[str]:
    """Cleaned ids; an empty one is an error naming its row."""
    values = clean_column(frame, column)
    for row, value in enumerate(values, 1):
        if not value:
            raise DatasetError(f"{path}: column {column!r}, row {row}: empty {what} id; every row needs one "
                               "(fill it in or drop the row)")
    return values


def rating_values(frame: pd.DataFrame, column: str, path: str) -> np.ndarray:
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        numbers = series.to_numpy(dtype=float)
        texts = None
    else:
        texts = [as_text(v).strip() for v in series.tolist()]
        numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype=float)
    _refuse_non_finite(numbers, texts, column, path, "rating {} is not a number; fix the value or drop the row")
    return numbers


def time_values(frame: pd.DataFrame, column: str, path: str) -> np.ndarray:
    """Unix seconds (float64) from numbers or ISO 8601 dates (naive dates are UTC)."""
    series = frame[column]
    fix = "write times as unix seconds or as ISO 8601 dates such as 2021-03-04 or 2021-03-04T12:30:00Z"
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
        seconds = ((stamps - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
        _check_finite(seconds, None, column, path, fix)
        return seconds
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        seconds = series.to_numpy(dtype=float)
        _check_finite(seconds, None, column, path, fix)
        return seconds
    texts = [as_text(v).strip() for v in series.tolist()]
    for row, text in enumerate(texts, 1):
        if not text:
            raise DatasetError(f"{path}: column {column!r}, row {row}: empty time; every interaction needs one "
                               f"(leave-one-out by time orders by it): {fix}")
    numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype=float)
    not_number = ~np.isfinite(numbers)
    if not not_number.any():
        return numbers
    if not not_number[0]:  # row 1 is a number: the column holds numbers, with some bad cells
        row = int(np.flatnonzero(not_number)[0])
        raise DatasetError(f"{path}: column {column!r}, row {row + 1}: time {texts[row]!r} is not a number (row 1 "
                           f"is); {fix}, the same in every row")
    seconds = np.full(len(texts), np.nan)
    aware = np.array([bool(_HAS_OFFSET.search(t)) for t in texts], dtype=bool)
    for group in (aware, ~aware):
        if group.any():
            parsed = pd.to_datetime(pd.Series(texts, dtype=object)[group], format="ISO8601", utc=True,
                                    errors="coerce")
            seconds[group] = ((parsed - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
    _check_finite(seconds, texts, column, path, fix)
    return seconds


def _check_finite(seconds: np.ndarray, texts, column: str, path: str, fix: str) -> None:
    _refuse_non_finite(seconds, texts, column, path, "time {} is neither a number nor an ISO 8601 date; " + fix)


def _refuse_non_finite(values: np.ndarray, texts, column: str, path: str, problem: str) -> None:
    """DatasetError naming the file, column and (1-based) row of the first value that is not finite; `problem`
    has a `{}` for the cell as written."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        shown = repr(texts[row]) if texts is not None else "a missing value"
        raise DatasetError(f"{path}: column {column!r}, row {row + 1}: {problem.format(shown)} ({len(bad)} such "
                           "rows)")


def number_text(value: float) -> str:
    """A float cell without a spurious '.0' (881250949, 3.5)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)
