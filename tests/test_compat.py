"""mmrecbole.compat's RecBole workarounds: each one changes nothing but what it says it fixes."""
import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from mmrecbole import compat
from mmrecbole.quick_start import run
from tests.planted import FAST


def _interaction():
    generator = torch.Generator().manual_seed(0)
    return Interaction({
        "user_id": torch.arange(1, 41),
        "rating": torch.rand(40, generator=generator),
        "item_id_list": torch.randint(0, 9, (40, 5), generator=generator),  # a 2-d field: rows are indexed
    })


@pytest.mark.parametrize("index", [
    np.array([3, 0, 39, 3, 7]),                      # repeats, any order
    np.array([5, 1, 2], dtype=np.int32),             # another integer width
    np.array([-1, -40, 2]),                          # negative positions count from the end, as in a list
    np.arange(40) % 3 == 0,                          # a boolean mask
    np.array([], dtype=np.int64),                    # no rows
    torch.tensor([9, 8, 8, 0]),
    torch.arange(40) > 30,
], ids=["int64", "int32", "negative", "mask", "empty", "tensor", "tensor-mask"])
def test_tensor_indexing_selects_what_recboles_list_indexing_selects(index):
    data = _interaction()
    fast = data[index]
    slow = compat._recbole_interaction_rows(data, index)  # RecBole's own __getitem__ (index.tolist())
    assert set(fast.interaction) == set(slow.interaction)
    for key in slow.interaction:
        assert fast[key].dtype == slow[key].dtype and torch.equal(fast[key], slow[key]), key
    assert len(fast) == len(slow)


def test_other_indices_keep_recboles_behaviour():
    data = _interaction()
    assert torch.equal(data["user_id"], data.user_id)        # a field name
    assert torch.equal(data[[2, 4]]["user_id"], torch.tensor([3, 5]))  # a list: RecBole's own path
    assert torch.equal(data[np.int64(6)]["user_id"], torch.tensor(7))  # a numpy scalar: RecBole's own path


def test_training_with_the_fast_indexing_is_identical_to_recboles(ring_data_path, monkeypatch):
    """BPR's batches, sampled negatives and joined features go through Interaction indexing: same numbers, bit for
    bit, with RecBole's list indexing put back."""
    settings = {**FAST, "data_path": ring_data_path, "epochs": 3, "eval_step": 1}
    fast = run("BPR", "planted", config_dict=settings, saved=False)
    monkeypatch.setattr(Interaction, "__getitem__", compat._recbole_interaction_rows)
    slow = run("BPR", "planted", config_dict=settings, saved=False)
    assert [h[:2] for h in fast["valid_history"]] == [h[:2] for h in slow["valid_history"]]  # (epoch, score, s)
    assert fast["test"] == slow["test"]
    assert fast["test_per_user"] == slow["test_per_user"]
