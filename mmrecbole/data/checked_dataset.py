"""RecBole's Dataset with every atomic file checked before it is read, and a filter that empties the data named.

A RecBole 1.2.1 quirk lives here (listed in compat.RECBOLE_TOUCHPOINTS): RecBole has one `encoding` setting for every
file and reads the header with `open()` and the rows with pandas, so a UTF-8 byte-order mark becomes part of the
first field's name; such a file is read as 'utf-8-sig' by swapping the setting for that one read.
"""
from __future__ import annotations

from mmrecbole.data.validate import check_atomic_file
from mmrecbole.errors import DatasetError


class CheckedAtomicFilesMixin:
    """Check every atomic file before RecBole's `_load_feat` reads it (mmrecbole.data.validate), and say which
    filter emptied the data instead of RecBole's "Some feat is empty" ValueError.

    RecBole reads a file's header with `open(encoding=config["encoding"])` and its rows with pandas: a UTF-8 byte
    order mark becomes part of the first field's name (KeyError 'user_id' later). A file with one is read as
    'utf-8-sig' (RecBole has no per-file encoding; the setting is swapped for that one read)."""

    def _load_feat(self, filepath, source):
        load_col, _ = self._get_load_and_unload_col(source)
        if load_col == set():
            return None  # RecBole skips the file
        loaded = load_col  # None = every column (unload_col is rare: its columns are checked too)
        required = []
        if str(getattr(source, "value", source)) == "inter":
            for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
                field = self.config[key]
                if field:
                    required.append((field, f"{key} names it"))
            if self.config["eval_args"]["order"] == "TO" and self.config["TIME_FIELD"]:
                required.append((self.config["TIME_FIELD"], "the time-ordered protocol (eval_args order: TO) "
                                 "sorts by it: add it, or use eval_args order: RO"))
        checked = check_atomic_file(filepath, loaded=loaded, required=required, encoding=self.config["encoding"],
                                    separator=self.config["field_separator"] or "\t",
                                    seq_separator=self.config["seq_separator"] or " ")
        if checked.encoding == (self.config["encoding"] or "utf-8"):
            return super()._load_feat(filepath, source)
        settings = self.config.final_config_dict
        saved = settings.get("encoding")
        settings["encoding"] = checked.encoding
        try:
            return super()._load_feat(filepath, source)
        finally:
            settings["encoding"] = saved

    def _reset_index(self):
        for name in self.feat_name_list:
            if getattr(self, name).empty:
                filters = {key: self.config[key] for key in ("val_interval", "user_inter_num_interval",
                                                             "item_inter_num_interval") if self.config[key]}
                what = {"inter_feat": "interaction", "user_feat": "user", "item_feat": "item"}.get(name, name)
                raise DatasetError(
                    f"dataset '{self.dataset_name}': no {what} is left after filtering "
                    f"({', '.join(f'{k}={v}' for k, v in filters.items()) or 'no filter set'}); loosen these "
                    "settings, or check that the .inter/.user/.item files share their ids"
                )
        super()._reset_index()
