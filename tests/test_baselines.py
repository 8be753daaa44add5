"""RecBole's baselines through our pipeline learn the planted answer (tests/planted.py; chance hit@5 = 0.16).

BPR, SASRec and Pop are covered in test_planted_known_answer.py. LightGCN also guards the SciPy pin: with
SciPy >= 1.12 it fails at construction (`dok_matrix._update`)."""
import math

import pytest

from mmrecbole.quick_start import run
from tests.planted import FAST

SEQ = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10}
CASES = {
    "LightGCN": ({"epochs": 30, "learning_rate": 0.01, "embedding_size": 32}, 0.85),
    "NeuMF": ({"epochs": 30, "learning_rate": 0.01, "mf_embedding_size": 16, "mlp_embedding_size": 16,
               "mlp_hidden_size": [32]}, 0.8),
    "ItemKNN": ({"k": 10}, 0.85),
    "GRU4Rec": ({"epochs": 20, "learning_rate": 0.01, "embedding_size": 32, "hidden_size": 32,
                 "MAX_ITEM_LIST_LENGTH": 10}, 0.85),
    # Masked-item training learns "next item" more slowly than causal models; still far above chance.
    "BERT4Rec": ({**SEQ, "epochs": 100, "stopping_step": 30, "learning_rate": 0.01, "hidden_dropout_prob": 0.0,
                  "attn_dropout_prob": 0.0}, 0.5),
}


@pytest.mark.parametrize("model", sorted(CASES))
def test_baseline_learns_planted_answer(model, ring_data_path):
    settings, threshold = CASES[model]
    result = run(model, "planted", config_dict={**FAST, "data_path": ring_data_path, **settings}, console_log=False)
    assert all(math.isfinite(v) for v in result["test"].values())
    assert result["test"]["hit@5"] >= threshold, result["test"]
