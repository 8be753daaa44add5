"""RecBole's baselines through our pipeline learn the planted answer (tests/planted.py; chance hit@5 = 0.16).

BPR, SASRec and Pop are covered in test_planted_known_answer.py. LightGCN also guards the SciPy pin: with
SciPy >= 1.12 it fails at construction (`dok_matrix._update`)."""
import math

import pytest

from mmrecbole.quick_start import run
from mmrecbole.trainer import make_trainer
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


def test_pop_counts_every_training_interaction_exactly(tmp_path):
    """Pop's scores are `bincount` of the training split's items, whatever the seed or batch size (RecBole 1.2.1's
    Pop counted an item once per batch however often it appeared there, plus the sampled negatives)."""
    import numpy as np
    import torch

    from mmrecbole.compat import dataset_of
    from mmrecbole.config import Config
    from mmrecbole.quick_start import build

    rng = np.random.default_rng(0)
    folder = tmp_path / "skewed"
    folder.mkdir()
    with open(folder / "skewed.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user in range(1, 101):  # Zipf-like popularity: many repeats of the same items within a batch
            items = np.unique(rng.zipf(1.3, size=12) % 40 + 1)
            for step, item in enumerate(rng.permutation(items)):
                f.write(f"{user}\t{item}\t3\t{user * 100 + step}\n")
    results = []
    for seed, batch in ((1, 64), (2, 4096)):
        config = Config("Pop", "skewed", config_dict={**FAST, "data_path": str(tmp_path), "seed": seed,
                                                      "train_batch_size": batch})
        _, train, valid, test, model = build(config)
        trainer = make_trainer(config, model)
        trainer.fit(train, valid, saved=True, show_progress=False)
        expected = np.bincount(dataset_of(train).inter_feat["item_id"].numpy(), minlength=model.n_items)
        np.testing.assert_array_equal(model.item_count.numpy(), expected)
        user = dataset_of(test).inter_feat[config["USER_ID_FIELD"]][:3]
        scores = model.full_sort_predict({config["USER_ID_FIELD"]: user}).view(3, -1)
        assert torch.equal(scores[0], torch.from_numpy(expected).float()) and torch.equal(scores[0], scores[2])
        results.append(trainer.evaluate(test, load_best_model=True, show_progress=False))
    assert results[0] == results[1]
