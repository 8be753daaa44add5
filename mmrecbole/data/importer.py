"""Import a dataset export (interactions, optional items and images) as RecBole atomic files plus a property file.

``import_dataset(ImportOptions(...))`` reads the files (``import_tables``), validates them, and writes
``<data_path>/<name>/``:

- ``<name>.inter``: ``user_id:token item_id:token [rating:float] timestamp:float`` (unix seconds; ISO dates are
  converted, naive ones read as UTC); duplicate (user, item, time) interactions are dropped (the first is kept);
- ``<name>.item`` (with an items file): ``item_id:token`` plus each text column as ``:token``, cells cleaned by the
  atomic-file writer. Items of the interactions missing from the items file get a row without text; items without
  any interaction are left out;
- ``<name>.yaml``: the dataset's settings (id/time/rating fields, ``load_col``, ``text_template``, ``image_dir``),
  which ``mmrecbole.config`` layers right after ``properties/dataset/<name>.yaml``. Text columns whose longest cell
  is over ``LONG_TEXT_CHARS`` stay out of ``load_col`` (RecBole never builds a vocabulary of plots; the feature
  extractor reads them from the file).

Writing is atomic: everything goes into a temporary folder beside the target, renamed into place at the end; a
failure leaves no folder behind. An existing ``<name>/`` is replaced only with ``force``.
"""
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from mmrecbole import DATASET_DIR
from mmrecbole.data import DATASET_BUILDERS
from mmrecbole.data.atomic_files import atomic_path, write_atomic_file
from mmrecbole.data.fileio import _UMASK, IMAGE_SUFFIXES, images_by_stem, write_text_atomically
from mmrecbole.data.import_tables import (clean_column, find_column, id_values, number_text, rating_values,
                                          read_table, time_values)
from mmrecbole.errors import ConfigError, DatasetError

USER_GUESSES = ("user_id", "user")
ITEM_GUESSES = ("item_id", "item")
TIME_GUESSES = ("timestamp", "time")
RATING_GUESSES = ("rating",)
#: Text columns with a longer cell are not loaded by RecBole (load_col), only read by the feature extractor.
LONG_TEXT_CHARS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


@dataclass
class ImportOptions:
    name: str
    interactions: str
    items: Optional[str] = None
    images: Optional[str] = None
    user: Optional[str] = None
    item: Optional[str] = None
    time: Optional[str] = None
    rating: Optional[str] = None
    text: Optional[Sequence[str]] = None
    item_key: Optional[str] = None
    data_path: Optional[str] = None
    force: bool = False


@dataclass
class ImportResult:
    name: str
    directory: str
    property_file: str
    stats: Dict[str, float]
    notes: List[str] = field(default_factory=list)
    next_commands: List[str] = field(default_factory=list)

    def summary(self) -> str:
        s = self.stats
        lines = [f"imported {self.name} -> {self.directory}",
                 f"  users {s['users']}, items {s['items']}, interactions {s['interactions']} "
                 f"(density {s['density']:.4%})"]
        if "with_text" in s:
            lines.append(f"  text: {s['with_text']} of {s['items']} items ({s['with_text'] / s['items']:.1%}) "
                         f"have text")
        if "with_image" in s:
            lines.append(f"  images: {s['with_image']} of {s['items']} items ({s['with_image'] / s['items']:.1%}) "
                         f"have an image file")
        lines += [f"  note: {note}" for note in self.notes]
        lines.append("next:")
        lines += [f"  {command}" for command in self.next_commands]
        return "\n".join(lines)


def _count(n: int, noun: str, number: bool = True) -> str:
    word = noun if n == 1 else noun + "s"
    return f"{n} {word}" if number else word


def target_dir(name: str, data_path: Optional[str]) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"--name={name!r} is not a dataset name: use letters, digits, '.', '_' or '-', starting "
                          "with a letter or digit (it becomes the folder and file names)")
    if name == "ml-100k" or name in DATASET_BUILDERS:
        raise ConfigError(f"--name={name} is taken by a dataset mmrecbole provides (RecBole's ml-100k or a built "
                          "one); choose another name")
    return os.path.join(os.path.abspath(os.path.expanduser(data_path or DATASET_DIR)), name)


def field_name(column: str) -> str:
    """A column name usable in an atomic-file header and a text template ('Product Name' -> 'Product_Name')."""
    name = re.sub(r"\W+", "_", str(column).strip()).strip("_")
    return name if name and not name[0].isdigit() else f"col_{name}"


def _yaml_scalar(value: str) -> str:
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value) and value.lower() not in _YAML_WORDS:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("\n", "\\n") + '"'


def _yaml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_yaml_scalar(v) for v in values) + "]"


def _interactions(options: ImportOptions, notes: List[str]):
    """(interactions with columns user_id, item_id, [rating,] timestamp; the item column's name in the file)."""
    path = options.interactions
    frame = read_table(path, "interactions")
    user = find_column(frame, path, "user", options.user, USER_GUESSES, required=True)
    item = find_column(frame, path, "item", options.item, ITEM_GUESSES, required=True)
    time = find_column(frame, path, "time", options.time, TIME_GUESSES, required=True,
                       why=": leave-one-out by time (the evaluation protocol) needs a time per interaction")
    rating = find_column(frame, path, "rating", options.rating, RATING_GUESSES, required=False)
    roles = {"user": user, "item": item, "time": time, "rating": rating}
    used = [(role, column) for role, column in roles.items() if column is not None]
    for index, (role, column) in enumerate(used):
        for other, same in used[index + 1:]:
            if same == column:
                raise ConfigError(f"{path}: column {column!r} is used as both --{role} and --{other}; name a "
                                  "different column for one of them")
    out = pd.DataFrame({"user_id": id_values(frame, user, path, "user"),
                        "item_id": id_values(frame, item, path, "item")})
    if rating is not None:
        out["rating"] = rating_values(frame, rating, path)
    out["timestamp"] = time_values(frame, time, path)
    notes.insert(0, f"columns of {os.path.basename(path)}: user {user!r}, item {item!r}, time {time!r}, "
                    + (f"rating {rating!r}" if rating else "no rating"))
    duplicated = out.duplicated(["user_id", "item_id", "timestamp"], keep="first")
    if duplicated.any():
        rows = ", ".join(str(r + 1) for r in np.flatnonzero(duplicated.to_numpy())[:5])
        count = int(duplicated.sum())
        notes.append(f"dropped {_count(count, 'duplicate (user, item, time) interaction')} "
                     f"({_count(count, 'row', number=False)} {rows}{', ...' if count > 5 else ''}; the first of "
                     "each is kept)")
        out = out[~duplicated.to_numpy()].reset_index(drop=True)
    return out, item


def _items(options: ImportOptions, inter_items: List[str], item_column: str, notes: List[str]):
    """(item frame of cleaned text with columns item_id + text fields, {field: source column})."""
    path = options.items
    frame = read_table(path, "items")
    key = find_column(frame, path, "item_key", options.item_key, tuple(dict.fromkeys((item_column, *ITEM_GUESSES))),
                      required=True)
    if options.text is None:
        text_columns = [c for c in frame.columns if c != key]
        if text_columns:
            notes.append(f"text columns: all other columns of {os.path.basename(path)} "
                         f"({', '.join(text_columns)}); choose with --text=colA,colB")
    else:
        text_columns = [find_column(frame, path, "text", c, (), required=True) for c in options.text]
        if key in text_columns:
            raise ConfigError(f"{path}: --text lists {key!r}, the item key column; list only text columns")
    fields: Dict[str, str] = {}
    for column in text_columns:
        name = field_name(column)
        if name == "item_id" or name in fields:
            raise ConfigError(f"{path}: text column {column!r} would be written as {name!r}, which "
                              f"{'is the item id field' if name == 'item_id' else 'another column also becomes'}; "
                              "rename the column in the file")
        fields[name] = column
    renamed = [f"{c!r} -> {n}" for n, c in fields.items() if n != c]
    if renamed:
        notes.append(f"text columns renamed for RecBole and text templates: {', '.join(renamed)}")
    items = pd.DataFrame({"item_id": id_values(frame, key, path, "item")})
    for name, column in fields.items():
        items[name] = clean_column(frame, column)
    duplicated = items.duplicated("item_id", keep="first")
    if duplicated.any():
        notes.append(f"{_count(int(duplicated.sum()), 'repeated item id')} in {os.path.basename(path)}: the first "
                     "row of each is kept")
        items = items[~duplicated.to_numpy()]
    known = set(items["item_id"])
    missing = [i for i in dict.fromkeys(inter_items) if i not in known]
    if missing:
        examples = ", ".join(repr(i) for i in missing[:5])
        notes.append(f"{_count(len(missing), 'item')} of the interactions not in {os.path.basename(path)} (e.g. "
                     f"{examples}): written without text")
        items = pd.concat([items, pd.DataFrame({"item_id": missing})], ignore_index=True).fillna("")
    used = set(inter_items)
    unused = ~items["item_id"].isin(used)
    if unused.any():
        notes.append(f"{_count(int(unused.sum()), 'item')} of {os.path.basename(path)} without any interaction: "
                     "left out")
        items = items[~unused.to_numpy()]
    return items.reset_index(drop=True), fields


def property_text(name: str, options: ImportOptions, fields: Dict[str, str], loaded: List[str],
                  has_rating: bool, image_dir: Optional[str]) -> str:
    """``<name>.yaml``: the settings a Config and the feature extractor need for this dataset."""
    sources = os.path.basename(options.interactions) + (f" and {os.path.basename(options.items)}"
                                                        if options.items else "")
    inter_cols = ["user_id", "item_id"] + (["rating"] if has_rating else []) + ["timestamp"]
    rows = [
        f"# {name}: written by `python -m mmrecbole.data import` from {sources}. Layered by mmrecbole.config right",
        f"# after properties/dataset/{name}.yaml (if any); re-import with --force to rewrite it.",
        "",
        "# --- RecBole dataset keys ---",
        ('field_separator: "\\t"', "(str) Column separator of the atomic files."),
        ('seq_separator: " "', "(str) Separator inside token_seq cells."),
        ("USER_ID_FIELD: user_id", f"(str) User id column of {name}.inter."),
        ("ITEM_ID_FIELD: item_id", f"(str) Item id column of {name}.inter" + (" and .item." if options.items else ".")),
        (f"RATING_FIELD: {'rating' if has_rating else '~'}",
         "(str|null) Explicit rating column; null = the export has none."),
        ("TIME_FIELD: timestamp", "(str) Unix time in seconds; orders interactions for leave-one-out by time."),
        ("load_col:", "(dict) Columns RecBole loads per atomic file; long text stays out (read by the feature "
                      "extractor)."),
        f"  inter: {_yaml_list(inter_cols)}",
    ]
    if fields:
        rows.append(f"  item: {_yaml_list(['item_id'] + loaded)}")
    rows += ["", "# --- Multimodal inputs ---"]
    if image_dir is not None:
        rows.append((f"image_dir: {_yaml_scalar(image_dir)}",
                     "(str) Folder of <item_id>.jpg|.jpeg|.png|.webp images (from --images)."))
    else:
        rows.append(("image_dir: images", f"(str) No --images given: put <item_id>.jpg files in dataset/{name}/"
                                          "images/ (relative = inside the dataset folder) or re-import with --images."))
    if fields:
        names = list(fields)
        template = "{" + names[0] + "}" + "".join(f"[. {{{n}}}]" for n in names[1:])
        rows.append((f"text_template: {_yaml_scalar(template)}",
                     "(str) Item text; {column} = .item column, [...] = dropped when a column inside it is empty."))
    width = max(len(r[0]) for r in rows if isinstance(r, tuple)) + 2
    return "\n".join(r if isinstance(r, str) else f"{r[0]:<{width}}# {r[1]}" for r in rows) + "\n"


def _next_commands(name: str, options: ImportOptions, property_file: str, has_text: bool, has_image: bool):
    modalities = [m for m, present in (("text", has_text), ("image", has_image)) if present]
    where = []
    if options.data_path:
        where = [f"--data_path={os.path.dirname(os.path.dirname(property_file))}", f"--config_files={property_file}"]
    commands = []
    if modalities:
        modality = "all" if len(modalities) == 2 else modalities[0]
        flags = [f"--dataset={name}", f"--modality={modality}", *where]
        commands.append(shlex.join(["python", "-m", "mmrecbole.features", "extract", *flags]))
        model = ["--model=MMSASRec", f"--dataset={name}"] + ([] if len(modalities) == 2 else
                                                              [f"--modalities=[{modalities[0]}]"])
    else:  # ID only: our SASRec without features trains ~10x faster than RecBole's (same backbone)
        model = ["--model=MMSASRec", f"--dataset={name}", "--modalities=[]"]
    commands.append(shlex.join(["python", "run_recbole_mm.py", *model, *where]))
    return commands


def _write(directory: str, name: str, force: bool, write) -> None:
    """Call ``write(tmp_folder)`` on a temporary folder beside ``directory``, then move it into place."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.import-", dir=parent)
    old = None
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700; give the folder the usual permissions
        if os.path.exists(directory):
            if not force:
                raise ConfigError(f"{directory} already exists: pass --force to replace it, or choose another --name")
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rename(directory, os.path.join(old, name))
        os.rename(tmp, directory)
    except BaseException:
        if old is not None and not os.path.exists(directory):
            os.rename(os.path.join(old, name), directory)  # put the previous dataset back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def import_dataset(options: ImportOptions) -> ImportResult:
    """Validate the export and write ``<data_path>/<name>/`` (see the module docstring)."""
    name = options.name
    directory = target_dir(name, options.data_path)
    if os.path.exists(directory) and not options.force:
        raise ConfigError(f"{directory} already exists: pass --force to replace it (its feature tables too), or "
                          "choose another --name")
    if options.text is not None and not options.items:
        raise ConfigError("--text names columns of the items file: pass --items=FILE too")
    image_dir = None
    if options.images:
        image_dir = os.path.abspath(os.path.expanduser(options.images))
        if not os.path.isdir(image_dir):
            raise DatasetError(f"{image_dir}: image folder not found (--images); it must hold one file per item "
                               f"named <item id>{'|'.join(IMAGE_SUFFIXES)}")
    notes: List[str] = []
    inter, item_column = _interactions(options, notes)
    item_ids = list(dict.fromkeys(inter["item_id"]))
    items, fields = (_items(options, inter["item_id"].tolist(), item_column, notes) if options.items
                     else (None, {}))
    users = inter["user_id"].nunique()
    stats = {"users": int(users), "items": len(item_ids), "interactions": len(inter),
             "density": len(inter) / (users * len(item_ids))}
    loaded = []
    if items is not None and fields:
        has_text = items[list(fields)].ne("").any(axis=1)
        stats["with_text"] = int(has_text.sum())
        empty = {n: int(items[n].eq("").sum()) for n in fields}
        if any(empty.values()):
            notes.append(f"{_count(stats['items'] - stats['with_text'], 'item')} without text; empty cells per column: "
                         + ", ".join(f"{n} {count}" for n, count in empty.items()))
        loaded = [n for n in fields if items[n].str.len().max() <= LONG_TEXT_CHARS]
        long_columns = [n for n in fields if n not in loaded]
        if long_columns:
            notes.append(f"long text columns kept out of load_col (read only by the feature extractor): "
                         f"{', '.join(long_columns)}")
    if image_dir is not None:
        images = images_by_stem(image_dir)
        stats["with_image"] = sum(1 for i in item_ids if i in images)
    property_file = os.path.join(directory, f"{name}.yaml")
    text = property_text(name, options, fields, loaded, "rating" in inter, image_dir)

    def write(folder: str) -> None:
        header = [("user_id", "token"), ("item_id", "token")] + ([("rating", "float")] if "rating" in inter else [])
        columns = [inter["user_id"], inter["item_id"]] + ([inter["rating"].map(number_text)] if "rating" in inter
                                                          else [])
        columns.append(inter["timestamp"].map(number_text))
        write_atomic_file(atomic_path(folder, name, "inter"), header + [("timestamp", "float")], zip(*columns))
        if items is not None:
            item_header = [("item_id", "token")] + [(n, "token") for n in fields]
            write_atomic_file(atomic_path(folder, name, "item"), item_header,
                              items[["item_id", *fields]].itertuples(index=False, name=None))
        write_text_atomically(os.path.join(folder, f"{name}.yaml"), text)

    _write(directory, name, options.force, write)
    has_text = bool(stats.get("with_text"))
    has_image = bool(stats.get("with_image"))
    return ImportResult(name, directory, property_file, stats, notes,
                        _next_commands(name, options, property_file, has_text, has_image))
