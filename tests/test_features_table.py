"""FeatureTable: validation, .npz round trip (no pickle), provenance comparison, alignment to RecBole item ids."""
import os

import numpy as np
import pytest
import torch

from mmrecbole.errors import FeatureError
from mmrecbole.features.table import FeatureTable, provenance_changes
from tests.feature_fixtures import StubDataset


def _table(ids=("10", "20", "30"), dim=2, mask=None, provenance=None, matrix=None):
    n = len(ids)
    matrix = np.arange(n * dim, dtype=np.float32).reshape(n, dim) + 1 if matrix is None else matrix
    mask = np.ones(n, dtype=bool) if mask is None else mask
    return FeatureTable(ids, matrix, mask, provenance or {"dim": dim, "modality": "text", "info": {"x": 1}})


def test_save_load_round_trip_without_pickle(tmp_path):
    table = _table(mask=np.array([True, False, True]))
    path = str(tmp_path / "features" / "text.npz")
    table.save(path)
    assert sorted(os.listdir(tmp_path / "features")) == ["text.npz"]  # the temp file was renamed, not left behind
    with np.load(path, allow_pickle=False) as data:
        assert data["ids"].dtype.kind == "U" and data["provenance"].dtype.kind == "U"
    loaded = FeatureTable.load(path)
    assert loaded.ids.tolist() == ["10", "20", "30"]
    np.testing.assert_array_equal(loaded.matrix, table.matrix)
    assert loaded.mask.tolist() == [True, False, True]
    assert loaded.provenance == table.provenance and loaded.dim == 2
    assert loaded.vector("20") is None and loaded.vector("99") is None
    np.testing.assert_array_equal(loaded.vector(10), table.matrix[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"matrix": np.array([[1, np.nan], [0, 0], [1, 1]], dtype=np.float32)}, "NaN/inf"),
        ({"matrix": np.array([[1, np.inf], [0, 0], [1, 1]], dtype=np.float32)}, "NaN/inf"),
        ({"provenance": {"dim": 3}}, "dim=3"),
        ({"ids": ("1", "2", "1")}, "duplicated item ids"),
        ({"mask": np.ones(2, dtype=bool)}, "mask shape"),
        ({"provenance": {"modality": "text"}}, "no 'dim'"),
    ],
)
def test_invalid_tables_raise_feature_error(kwargs, message):
    with pytest.raises(FeatureError, match=message):
        _table(**kwargs)


def test_nan_in_a_stored_file_is_caught_on_load(tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(path, ids=np.array(["1", "2"]), matrix=np.array([[0.0, np.nan], [1, 1]], dtype=np.float32),
             mask=np.array([True, True]), provenance=np.array(['{"dim": 2}']))
    with pytest.raises(FeatureError, match=r"bad\.npz.*NaN"):
        FeatureTable.load(path)


def test_unreadable_or_missing_file(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(FeatureError, match="unreadable"):
        FeatureTable.load(str(garbage))
    with pytest.raises(FeatureError, match="not found"):
        FeatureTable.load(str(tmp_path / "absent.npz"))


def test_provenance_changes_ignore_info():
    base = {"dim": 2, "recipe": {"template": "{a}", "pooling": "mean"}, "info": {"created": 1}}
    assert provenance_changes(base, dict(base, info={"created": 2})) == []
    changed = dict(base, recipe={"template": "{b}", "pooling": "mean"}, inputs_sha256="x")
    assert provenance_changes(base, changed) == ["inputs_sha256", "recipe.template"]


def test_align_follows_recbole_internal_order_after_filtering():
    # Table holds items 10, 20, 30, 40 (20 lacks the modality). RecBole kept 30, 10, 20, 50 in that internal order:
    # 40 was filtered out, 50 is not in the table.
    table = _table(ids=("10", "20", "30", "40"), mask=np.array([True, False, True, True]))
    matrix, mask = table.align(StubDataset(["30", "10", "20", "50"]))
    assert matrix.dtype == torch.float32 and mask.dtype == torch.bool and matrix.shape == (5, 2)
    assert mask.tolist() == [False, True, True, False, False]
    assert torch.equal(matrix[0], torch.zeros(2))  # padding row
    assert torch.equal(matrix[1], torch.from_numpy(table.matrix[2]))  # internal id 1 = raw '30'
    assert torch.equal(matrix[2], torch.from_numpy(table.matrix[0]))  # internal id 2 = raw '10'
    assert torch.equal(matrix[3], torch.zeros(2)) and torch.equal(matrix[4], torch.zeros(2))


def test_align_strict_and_no_overlap():
    table = _table(ids=("10", "20", "30"))
    with pytest.raises(FeatureError, match="unknown to the dataset"):
        table.align(StubDataset(["10", "20"]), strict=True)
    matrix, mask = table.align(StubDataset(["10", "20", "30"]), strict=True)
    assert mask.tolist() == [False, True, True, True]
    with pytest.raises(FeatureError, match="none of its 3 item ids"):
        table.align(StubDataset(["7", "8"]))
