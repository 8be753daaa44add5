"""Known-answer checks: on the planted ring data (tests/planted.py) real models must find the held-out item."""
import pytest

from mmrecbole.quick_start import run
from tests.planted import FAST

SETTINGS = {
    "BPR": {"epochs": 40, "learning_rate": 0.01, "embedding_size": 32},
    "SASRec": {"epochs": 30, "learning_rate": 0.005, "hidden_size": 32, "inner_size": 64, "n_layers": 1,
               "MAX_ITEM_LIST_LENGTH": 10},
    "Pop": {},
}


def _run(model, data_path):
    return run(model, "planted", config_dict={**FAST, "data_path": data_path, **SETTINGS[model]}, console_log=False)


@pytest.mark.parametrize("model", ["BPR", "SASRec"])
def test_model_ranks_the_planted_next_item_in_top5(model, ring_data_path):
    result = _run(model, ring_data_path)
    # 31 unseen candidates per user: chance is 5/31 = 0.16 for hit@5.
    assert result["test"]["hit@5"] >= 0.85, result["test"]
    assert result["valid"]["hit@5"] >= 0.85, result["valid"]


def test_popularity_cannot_solve_the_fixture(ring_data_path):
    # Control: items are equally popular, so a model without user signal stays near chance.
    assert _run("Pop", ring_data_path)["test"]["hit@5"] <= 0.4
