"""``FeatureTable``: one modality's item vectors, keyed by raw item id, with a presence mask and provenance.

Stored as one ``.npz`` (no pickle) per (dataset, modality): ``ids`` (unicode), ``matrix`` (float32 [n, d]),
``mask`` (bool [n]) and ``provenance`` (a JSON string in a one-element unicode array).

Provenance has two parts. Everything except ``info`` identifies the result -- encoder identity and weights hash,
the text template or image preprocessing, the hash of the inputs, the dimension -- and a stored table is reused
only while that part equals what a fresh build would record. ``info`` (package versions, device, counts) describes
the build but does not force a rebuild: a torch patch release or an fp16 GPU build changes vectors by float noise,
not meaning.
"""
import io
import json
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmrecbole.data.fileio import write_atomically
from mmrecbole.errors import FeatureError

FORMAT_VERSION = 1
#: Provenance key whose content is descriptive only (not compared when deciding to reuse a stored table).
INFO_KEY = "info"


def provenance_key(provenance: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a provenance that must match for a stored table to be reused."""
    return {k: v for k, v in provenance.items() if k != INFO_KEY}


def provenance_changes(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """Dotted names of the identifying provenance entries that differ, e.g. ['recipe.template', 'inputs_sha256']."""
    changes: List[str] = []

    def walk(a, b, prefix):
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif _normalise_json(a) != _normalise_json(b):
            changes.append(prefix[:-1])

    walk(provenance_key(stored), provenance_key(expected), "")
    return changes


def _normalise_json(value):
    # JSON round trips turn tuples into lists; compare in stored form.
    return json.loads(json.dumps(value, sort_keys=True))


class FeatureTable:
    """Item vectors of one modality.

    ``ids``: raw item ids as in the atomic files (strings). ``matrix``: float32 [n, d]; rows of absent items are 0.
    ``mask``: bool [n], True where the item has this modality. ``provenance``: see the module docstring; must hold
    ``dim``. Construction validates: shapes, duplicated ids, NaN/inf, dimension vs provenance -> FeatureError.
    """

    def __init__(self, ids: Sequence, matrix, mask, provenance: Mapping[str, Any], source: str = "<memory>"):
        self.source = source
        self.ids = np.asarray([str(i) for i in ids], dtype=np.str_)
        self.matrix = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32))
        self.mask = np.asarray(mask, dtype=bool)
        self.provenance = _normalise_json(dict(provenance))
        self._validate()
        self._row_of = {item_id: row for row, item_id in enumerate(self.ids.tolist())}

    # ----- validation -------------------------------------------------------------------------------------------
    def _fail(self, problem: str) -> None:
        raise FeatureError(
            f"feature table {self.source}: {problem}. Rebuild it with "
            "`python -m mmrecbole.features extract --force` (or delete the file)"
        )

    def _validate(self) -> None:
        n = len(self.ids)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != n:
            self._fail(f"matrix shape {self.matrix.shape} does not fit {n} ids (expected [{n}, dim])")
        if self.mask.shape != (n,):
            self._fail(f"mask shape {self.mask.shape} does not fit {n} ids")
        unique, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            self._fail(f"duplicated item ids {unique[counts > 1][:5].tolist()}")
        dim = self.provenance.get("dim")
        if dim is None:
            self._fail("provenance has no 'dim'")
        if self.matrix.shape[1] != dim:
            self._fail(f"matrix has {self.matrix.shape[1]} columns but provenance says dim={dim}")
        finite = np.isfinite(self.matrix).all(axis=1)
        if not finite.all():
            bad = self.ids[~finite]
            self._fail(f"NaN/inf in {len(bad)} rows (item ids {bad[:5].tolist()})")

    # ----- basic access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def modality(self) -> Optional[str]:
        return self.provenance.get("modality")

    def __contains__(self, item_id) -> bool:
        """Whether the table has a row for the item (with or without this modality)."""
        return str(item_id) in self._row_of

    def vector(self, item_id) -> Optional[np.ndarray]:
        """The item's vector, or None when the item is absent or lacks this modality."""
        row = self._row_of.get(str(item_id))
        return None if row is None or not self.mask[row] else self.matrix[row]

    def coverage(self) -> Tuple[int, int]:
        """(items with this modality, items in the table)."""
        return int(self.mask.sum()), len(self)

    # ----- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the ``.npz`` atomically (temp file beside it, then rename)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            ids=self.ids,
            matrix=self.matrix,
            mask=self.mask,
            provenance=np.asarray([json.dumps(self.provenance, sort_keys=True)], dtype=np.str_),
        )
        write_atomically(path, lambda handle: handle.write(buffer.getbuffer()))

    @classmethod
    def load(cls, path: str) -> "FeatureTable":
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"ids", "matrix", "mask", "provenance"} - set(data.files)
                if missing:
                    raise FeatureError(f"feature table {path}: missing arrays {sorted(missing)}; rebuild it with --force")
                ids, matrix, mask = data["ids"], data["matrix"], data["mask"]
                provenance = json.loads(str(data["provenance"][0]))
        except FeatureError:
            raise
        except FileNotFoundError:
            raise FeatureError(f"feature table not found: {path}; build it with `python -m mmrecbole.features extract`")
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # a truncated or 0-byte .npz (a copy cut short, a disk full): BadZipFile / EOFError from numpy
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise FeatureError(f"feature table {path} is unreadable ({detail}): truncated or not a feature table; "
                               "rebuild it (python -m mmrecbole.features extract --force)") from None
        return cls(ids, matrix, mask, provenance, source=path)

    # ----- alignment to a RecBole dataset -----------------------------------------------------------------------
    def align(self, dataset, strict: bool = False):
        """``(matrix, mask)`` as torch float32 [item_num, d] / bool [item_num] in RecBole's internal item order.

        Row 0 is RecBole's padding id (zeros, mask False); row i is the item whose raw id is
        ``dataset.field2id_token[dataset.iid_field][i]``. Dataset items absent from the table, or lacking this
        modality, get a zero row and mask False. Table ids unknown to the dataset are expected (RecBole filtered
        them out) unless ``strict``; if none match at all the table belongs to another dataset -> FeatureError.
        Only ``iid_field``, ``field2id_token`` and ``item_num`` of ``dataset`` are used.
        """
        import torch

        tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
        item_num = int(dataset.item_num)
        if len(tokens) != item_num:
            raise FeatureError(f"dataset has item_num={item_num} but {len(tokens)} item id tokens")
        rows = np.fromiter((self._row_of.get(t, -1) for t in tokens), dtype=np.int64, count=item_num)
        rows[0] = -1  # padding, even if the table happened to hold an id spelled like RecBole's '[PAD]'
        found = rows >= 0
        if not found.any():
            raise FeatureError(
                f"feature table {self.source}: none of its {len(self)} item ids (e.g. {self.ids[:3].tolist()}) match "
                f"the dataset's {item_num - 1} items (e.g. {tokens[1:4]}); was it built for another dataset?"
            )
        if strict:
            unknown = sorted(set(self._row_of) - set(tokens[1:]))
            if unknown:
                raise FeatureError(
                    f"feature table {self.source}: {len(unknown)} item ids unknown to the dataset "
                    f"(e.g. {unknown[:5]}) and strict=True"
                )
        matrix = np.zeros((item_num, self.dim), dtype=np.float32)
        mask = np.zeros(item_num, dtype=bool)
        matrix[found] = self.matrix[rows[found]]
        mask[found] = self.mask[rows[found]]
        matrix[~mask] = 0.0
        return torch.from_numpy(matrix), torch.from_numpy(mask)

    def __repr__(self) -> str:
        present, total = self.coverage()
        return f"FeatureTable(modality={self.modality!r}, items={total}, with_feature={present}, dim={self.dim})"
