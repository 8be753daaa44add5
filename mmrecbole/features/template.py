"""Item text templates: ``{column}`` placeholders plus ``[...]`` optional segments.

``"{movie_title}[ ({release_year})][. {description}]"`` renders "Heat (1995). A group of ..." and, for an item
without a plot, "Heat (1995)" rather than "Heat (1995). ". A segment in square brackets is dropped when any
column inside it is empty; text outside brackets is always kept. Square brackets inside column values are fine:
only the template is parsed. An item whose template columns are all empty renders as '' (= missing text).
"""
import re
import string
from typing import List, Mapping, Sequence, Tuple

from mmrecbole.errors import FeatureError

_WHITESPACE = re.compile(r"\s+")


class TextTemplate:
    def __init__(self, template: str):
        if not isinstance(template, str) or not template.strip():
            raise FeatureError(f"text_template must be a non-empty string, got {template!r}")
        self.template = template
        self.segments: List[Tuple[str, bool, Tuple[str, ...]]] = []  # (format string, optional, columns)
        for text, optional in _split_segments(template):
            self.segments.append((text, optional, _columns(template, text)))
        self.columns: Tuple[str, ...] = tuple(dict.fromkeys(c for _, _, cols in self.segments for c in cols))
        if not self.columns:
            raise FeatureError(f"text_template {template!r} names no column; use e.g. '{{movie_title}}'")

    def check_columns(self, available: Sequence[str], where: str) -> None:
        missing = [c for c in self.columns if c not in available]
        if missing:
            raise FeatureError(
                f"text_template uses columns {missing} that {where} does not have; available: {list(available)}"
            )

    def render(self, record: Mapping[str, str]) -> str:
        values = {c: _as_text(record.get(c)) for c in self.columns}
        if not any(values.values()):
            return ""
        parts = []
        for text, optional, columns in self.segments:
            if optional and not all(values[c] for c in columns):
                continue
            parts.append(text.format(**{c: values[c] for c in columns}))
        # A leading empty column leaves its separator behind (". plot"); drop it.
        return _WHITESPACE.sub(" ", "".join(parts)).strip().lstrip(".,;: ")


def _as_text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None / NaN from pandas
        return ""
    return _WHITESPACE.sub(" ", str(value)).strip()


def _split_segments(template: str) -> List[Tuple[str, bool]]:
    segments, current, optional = [], [], False
    for char in template:
        if char == "[":
            if optional:
                raise FeatureError(f"text_template {template!r}: nested '[' is not supported")
            segments.append(("".join(current), False))
            current, optional = [], True
        elif char == "]":
            if not optional:
                raise FeatureError(f"text_template {template!r}: ']' without a matching '['")
            segments.append(("".join(current), True))
            current, optional = [], False
        else:
            current.append(char)
    if optional:
        raise FeatureError(f"text_template {template!r}: '[' is never closed")
    segments.append(("".join(current), False))
    return [(text, opt) for text, opt in segments if text]


def _columns(template: str, text: str) -> Tuple[str, ...]:
    columns = []
    try:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is None:
                continue
            if not name.isidentifier():
                raise FeatureError(f"text_template {template!r}: '{{{name}}}' is not a plain column name")
            columns.append(name)
    except ValueError as exc:
        raise FeatureError(f"text_template {template!r} is malformed ({exc}); write literal braces as '{{{{' '}}}}'")
    return tuple(columns)
