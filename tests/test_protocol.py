"""The evaluation protocol every model shares: seen items masked (sequential models too), selection on validation."""
import numpy as np
import pytest
import torch

from mmrecbole.config import Config
from mmrecbole.quick_start import build, run
from mmrecbole.trainer import make_trainer
from tests.planted import FAST


@pytest.mark.parametrize("mask", [True, False])
def test_sequential_full_ranking_masks_seen_items(ring_data_path, mask):
    config = Config("SASRec", "planted", config_dict={**FAST, "data_path": ring_data_path, "hidden_size": 16,
                                                      "inner_size": 16, "n_layers": 1, "mask_seen_items": mask})
    _, _, _, test, model = build(config)
    trainer = make_trainer(config, model)
    trainer.tot_item_num = test._dataset.item_num
    model.eval()
    batch = next(iter(test))
    interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
    seen = interaction["item_id_list"]
    seen_scores = torch.gather(scores, 1, seen)[seen > 0]
    if mask:
        assert torch.isinf(seen_scores).all()
    else:
        assert torch.isfinite(seen_scores).all()
    # The target is never among the seen items in this data, so it is always rankable.
    assert torch.isfinite(scores[positive_u, positive_i]).all()


def test_reported_valid_metrics_are_from_the_best_validation_epoch(ring_data_path):
    result = run("BPR", "planted", config_dict={**FAST, "data_path": ring_data_path, "epochs": 8,
                                                "learning_rate": 0.01, "embedding_size": 16}, console_log=False)
    scores = [score for _, score, _ in result["valid_history"]]
    best = max(range(len(scores)), key=lambda i: (scores[i], i))  # ties: the later epoch, as RecBole keeps it
    assert result["best_epoch"] == result["valid_history"][best][0]
    assert result["valid"]["ndcg@5"] == pytest.approx(scores[best], abs=1e-4)
    assert result["best_valid_score"] == pytest.approx(np.max(scores), abs=1e-4)


def test_per_user_test_metrics_average_to_the_reported_ones(ring_data_path):
    result = run("BPR", "planted", config_dict={**FAST, "data_path": ring_data_path, "epochs": 3,
                                                "embedding_size": 16}, console_log=False)
    per_user = result["test_per_user"]
    assert len(per_user["user_id"]) == len(set(per_user["user_id"])) == 80
    for name, value in result["test"].items():
        assert np.mean(per_user[name]) == pytest.approx(value, abs=1e-4)


def test_sequential_full_ranking_batches_are_bounded_in_scores_and_change_no_metric(ring_data_path):
    settings = {**FAST, "data_path": ring_data_path, "hidden_size": 16, "inner_size": 16, "n_layers": 1,
                "epochs": 2}
    small = Config("SASRec", "planted", config_dict={**settings, "eval_batch_size": 41 * 7})  # 41 items incl. pad
    _, _, _, test, _ = build(small)
    batches = list(test)
    assert max(len(b[0]) for b in batches) == 7 and len(batches) == 12  # 80 users, 7 per batch
    chunked = run("SASRec", "planted", config_dict={**settings, "eval_batch_size": 41 * 7}, console_log=False)
    whole = run("SASRec", "planted", config_dict={**settings, "eval_batch_size": 41 * 1000}, console_log=False)
    assert chunked["test"] == whole["test"] and chunked["valid"] == whole["valid"]
    capped = Config("SASRec", "planted", config_dict={**settings, "eval_batch_size": 41 * 1000,
                                                       "eval_sequence_rows": 9})
    assert max(len(b[0]) for b in build(capped)[3]) == 9  # the row cap wins over a larger score budget
    rows_capped = run("SASRec", "planted", config_dict={**settings, "eval_batch_size": 41 * 1000,
                                                        "eval_sequence_rows": 9}, console_log=False)
    assert rows_capped["test"] == whole["test"] and rows_capped["valid"] == whole["valid"]
