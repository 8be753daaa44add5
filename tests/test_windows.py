"""all_positions training windows: every training target exactly once, bucketed batches, and it learns."""
import numpy as np
import torch

from mmrecbole.config import Config
from mmrecbole.data.windows import TARGETS_FIELD, SequenceWindowLoader, cut_windows, user_sequences
from mmrecbole.quick_start import build, run
from tests.planted import FAST, ring_walks


def test_cut_windows_covers_every_target_once():
    sequence = np.arange(1, 24)  # 23 items, max_length 5 -> targets 2..23, each once
    windows = cut_windows(sequence, 5)
    targets = np.concatenate([t for _, t in windows])
    assert sorted(targets.tolist()) == list(range(2, 24))
    for inputs, nexts in windows:
        assert len(inputs) <= 5 and np.array_equal(inputs[1:], nexts[:-1])
    assert np.array_equal(windows[0][1], sequence[-5:])  # the most recent window is full


def test_user_sequences_are_recovered_from_prefix_rows():
    # Prefix rows (in time order per user, as RecBole emits them) of users 3: [7, 8, 9, 10] and 5: [4, 2];
    # history lists truncated to length 2, so lengths saturate and cannot order the rows.
    uids = np.array([3, 3, 5, 3])
    histories = np.array([[7, 0], [7, 8], [4, 0], [8, 9]])
    targets = np.array([8, 9, 2, 10])
    sequences = user_sequences(uids, histories, targets)
    assert sequences[3].tolist() == [7, 8, 9, 10] and sequences[5].tolist() == [4, 2]


def test_loader_matches_the_training_split(ring_data_path):
    config = Config("MMSASRec", "planted", config_dict={**FAST, "data_path": ring_data_path, "modalities": [],
                                                        "train_mode": "all_positions", "window_batch_size": 16,
                                                        "MAX_ITEM_LIST_LENGTH": 4})
    _, train, _, _, _ = build(config)
    assert isinstance(train, SequenceWindowLoader)
    walks = dict(ring_walks())  # planted: 10 items per user; LS leaves 8 for training -> 7 targets each
    batches = list(train)
    assert sum(int((b[TARGETS_FIELD] > 0).sum()) for b in batches) == 7 * len(walks) == train.n_targets
    seen = {}
    for batch in batches:
        widths = batch["item_length"]
        assert batch["item_id_list"].shape[1] == int(widths.max())  # trimmed to the batch's longest window
    # Windows of user 1 reproduce their walk (ids are remapped, so compare through the dataset's tokens).
    tokens = train._dataset.field2id_token["item_id"]
    for batch in batches:
        for row in range(len(batch)):
            items = batch["item_id_list"][row][: batch["item_length"][row]]
            nexts = batch[TARGETS_FIELD][row][: batch["item_length"][row]]
            seq = [int(tokens[i]) for i in items.tolist()] + [int(tokens[int(nexts[-1])])]
            seen.setdefault(len(seq), []).append(seq)
    assert all(any(seq == walk[i:i + len(seq)] for walk in walks.values() for i in range(10)) for seqs in seen.values()
               for seq in seqs)


def test_all_positions_mode_learns_the_planted_answer(ring_data_path):
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "train_mode": "all_positions",
                "window_batch_size": 16, "hidden_size": 32, "inner_size": 64, "n_layers": 1,
                "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.01, "epochs": 40}
    result = run("MMSASRec", "planted", config_dict=settings, console_log=False)
    assert result["test"]["hit@5"] >= 0.85, result["test"]


def test_recbole_models_refuse_all_positions(ring_data_path):
    import pytest

    from mmrecbole.errors import ConfigError

    config = Config("SASRec", "planted", config_dict={**FAST, "data_path": ring_data_path,
                                                      "train_mode": "all_positions"})
    with pytest.raises(ConfigError, match="not supported by SASRec"):
        build(config)
    torch.manual_seed(0)
