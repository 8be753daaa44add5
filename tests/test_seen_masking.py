"""Every model ranks the same candidates: all of the user's seen items are masked, for sequential models too, even
when the history is longer than the model's input window (MAX_ITEM_LIST_LENGTH).

Known answers that need no model internals, and a numpy re-computation of the metrics from raw scores."""
import numpy as np
import pytest
import torch

from mmrecbole.compat import dataset_of
from mmrecbole.config import Config
from mmrecbole.quick_start import build, run
from mmrecbole.trainer import make_trainer
from tests.planted import FAST, write_histories

SMALL_SEQ = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1}
SEQUENTIAL = {
    "SASRec": SMALL_SEQ,
    "GRU4Rec": {"embedding_size": 16, "hidden_size": 16},
    "BERT4Rec": {**SMALL_SEQ, "mask_ratio": 0.4},  # RecBole masks int(ratio * window) items: >= 1 at window 3
    # window_context 1: below the smallest window tried (3); their default (25) is for 50-item windows.
    "MMSASRec": {**SMALL_SEQ, "modalities": [], "window_context": 1},
    "MMGRU4Rec": {"embedding_size": 16, "hidden_size": 16, "modalities": [], "window_context": 1},
}


@pytest.fixture(scope="module")
def eleven_of_twelve(tmp_path_factory):
    """60 users who each saw 11 of 12 items in a random order: 9 train, 1 valid, 1 test. With every seen item
    masked, 3 candidates remain at validation and 2 at test, one of them the target: Hit@3 (valid) and Hit@2
    (test) are exactly 1 for any model."""
    rng = np.random.default_rng(7)
    histories = {str(u): [str(i) for i in rng.permutation(np.arange(1, 13))[:11]] for u in range(1, 61)}
    return write_histories(tmp_path_factory.mktemp("eleven"), histories, "eleven")


@pytest.fixture(scope="module")
def long_histories(tmp_path_factory):
    """80 users with 8..20 distinct items of 30, far longer than a window of 3."""
    rng = np.random.default_rng(3)
    histories = {str(u): [str(i) for i in rng.choice(np.arange(1, 31), size=int(rng.integers(8, 21)), replace=False)]
                 for u in range(1, 81)}
    return write_histories(tmp_path_factory.mktemp("long"), histories, "long"), histories


@pytest.mark.parametrize("window", [3, 20])
@pytest.mark.parametrize("model", ["BPR", "Pop", *SEQUENTIAL])
def test_only_unseen_items_are_candidates_whatever_the_window(eleven_of_twelve, model, window):
    settings = {**FAST, "data_path": eleven_of_twelve, "epochs": 1, "topk": [2, 3], "metrics": ["Hit"],
                "valid_metric": "Hit@3", **SEQUENTIAL.get(model, {})}
    if model in SEQUENTIAL:
        settings["MAX_ITEM_LIST_LENGTH"] = window
    elif window != 3:
        pytest.skip("general models have no input window")
    result = run(model, "eleven", config_dict=settings, saved=False, console_log=False)
    assert result["valid"]["hit@3"] == 1.0
    assert result["test"]["hit@2"] == 1.0


def numpy_metrics(scores, seen, targets, k):
    """Hit@k and NDCG@k of one target per row from raw scores, with the `seen` (row, item) pairs and the padding
    item 0 removed from the candidates: an independent re-computation of the protocol."""
    scores = np.array(scores, dtype=np.float64)
    scores[:, 0] = -np.inf
    for row, items in enumerate(seen):
        scores[row, list(items)] = -np.inf
    assert np.isfinite(scores[np.arange(len(targets)), targets]).all()
    rank = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1)  # 0 = first
    hit = (rank < k).astype(float)
    ndcg = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return {f"hit@{k}": hit.mean(), f"ndcg@{k}": ndcg.mean()}


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "MMSASRec"])
def test_sequential_metrics_equal_numpy_with_every_seen_item_masked(long_histories, model):
    data_path, histories = long_histories
    settings = {**FAST, "data_path": data_path, "epochs": 2, "MAX_ITEM_LIST_LENGTH": 3, "topk": [5],
                "metrics": ["Hit", "NDCG"], "valid_metric": "NDCG@5", **SEQUENTIAL[model]}
    config = Config(model, "long", config_dict=settings)
    _, train, valid, test, model_obj = build(config)
    trainer = make_trainer(config, model_obj)
    trainer.fit(train, valid, saved=True, show_progress=False)
    dataset = dataset_of(test)
    user_tokens = dataset.field2id_token[dataset.uid_field]
    item_ids = dataset.field2token_id[dataset.iid_field]
    for phase, loader, cut in (("valid", valid, 2), ("test", test, 1)):
        reported = trainer.evaluate(loader, load_best_model=(phase == "valid"), show_progress=False)
        model_obj.eval()
        scores, seen, targets = [], [], []
        with torch.no_grad():
            for interaction, _, _, _ in loader:
                scores.append(model_obj.full_sort_predict(interaction).numpy())
                for user, target in zip(interaction[dataset.uid_field].numpy(),
                                        interaction[dataset.iid_field].numpy()):
                    items = [item_ids[i] for i in histories[user_tokens[user]]]
                    assert items[-cut] == target  # the split is leave-one-out by time
                    seen.append(set(items[:-cut]))
                    targets.append(target)
        # Most users have more seen items than the window holds: the window alone would not mask them.
        assert np.mean([len(s) > 3 for s in seen]) > 0.9
        expected = numpy_metrics(np.concatenate(scores), seen, np.array(targets), 5)
        for name, value in expected.items():
            assert reported[name] == pytest.approx(value, abs=1e-4), (phase, name)


def test_a_target_seen_before_stays_rankable(tmp_path):
    """Repeat consumption: like RecBole's general loader (history = used items - positives), a sequential row's
    target is not masked even when the user saw it earlier."""
    histories = {str(u): ["1", "2", "3", "4", "5", "2"] for u in range(1, 21)}
    data_path = write_histories(tmp_path, histories, "repeat")
    config = Config("SASRec", "repeat", config_dict={**FAST, "data_path": data_path, "MAX_ITEM_LIST_LENGTH": 2,
                                                     **SMALL_SEQ})
    _, _, _, test, model = build(config)
    trainer = make_trainer(config, model)
    trainer.tot_item_num = dataset_of(test).item_num
    model.eval()
    interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(next(iter(test)))
    assert torch.isfinite(scores[positive_u, positive_i]).all()
    item_ids = dataset_of(test).field2token_id["item_id"]
    masked = {item for item in "1345" if torch.isinf(scores[:, item_ids[item]]).all()}
    assert masked == set("1345")  # items 1 and 3 are outside the window of 2 and masked all the same


@pytest.mark.parametrize("model", ["BPR", "Pop", "ImplicitALS", "SASRec", "MMSASRec"])
def test_unmasked_protocol_keeps_every_item_a_candidate_for_every_family(eleven_of_twelve, model):
    """mask_seen_items: False: no batch carries a history (RecBole itself would mask general models'), so the
    metrics equal a numpy re-computation from the raw scores with nothing removed but the padding item."""
    settings = {**FAST, "data_path": eleven_of_twelve, "epochs": 1, "topk": [5], "metrics": ["Hit", "NDCG"],
                "valid_metric": "NDCG@5", "mask_seen_items": False, **SEQUENTIAL.get(model, {})}
    config = Config(model, "eleven", config_dict=settings)
    _, train, valid, test, model_obj = build(config)
    trainer = make_trainer(config, model_obj)
    trainer.fit(train, valid, saved=True, show_progress=False)
    reported = trainer.evaluate(test, load_best_model=True, show_progress=False)
    model_obj.eval()
    scores, targets = [], []
    with torch.no_grad():
        for interaction, history_index, _, positive_i in test:
            assert history_index is None
            scores.append(model_obj.full_sort_predict(interaction).reshape(len(positive_i), -1).numpy())
            targets.append(positive_i.numpy())
    expected = numpy_metrics(np.concatenate(scores), [()] * sum(map(len, targets)), np.concatenate(targets), 5)
    for name, value in expected.items():
        if model != "Pop":  # Pop's counts tie, and the order among tied items is torch.topk's, not numpy's
            assert reported[name] == pytest.approx(value, abs=1e-4), name
    masked = run(model, "eleven", config_dict={**settings, "mask_seen_items": True}, saved=False, console_log=False)
    assert masked["test"]["hit@5"] == 1.0 > reported["hit@5"]  # 2 candidates when masked; 12 here
