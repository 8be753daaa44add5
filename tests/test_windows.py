"""all_positions training windows: every training target exactly once, bucketed batches, and it learns."""
import numpy as np
import pytest
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


def test_context_windows_predict_every_target_once_with_history():
    sequence = np.arange(1, 24)  # 23 items, max_length 5, context 3: stride 2
    windows = cut_windows(sequence, 5, context=3)
    targets = np.concatenate([t[t > 0] for _, t in windows])
    assert sorted(targets.tolist()) == list(range(2, 24))  # each exactly once (0 = no loss)
    for inputs, nexts in windows:
        assert np.array_equal(inputs[1:], sequence[inputs[0]: inputs[0] + len(inputs) - 1])  # contiguous history
        for position in np.flatnonzero(nexts):
            history = position + 1  # items before the target inside the window
            assert history >= 3 or inputs[0] == 1  # >= context, except in the user's earliest window
    assert len(windows) == 10 and len(cut_windows(sequence, 5)) == 5  # the overlap costs more windows
    with pytest.raises(ValueError, match="window_context must be >= 0 and < MAX_ITEM_LIST_LENGTH"):
        cut_windows(sequence, 5, context=5)


def test_shifted_windows_still_predict_every_target_once():
    sequence = np.arange(1, 24)  # 23 items: targets 2..23
    for context in (0, 2):
        step = 5 - context
        default, full = cut_windows(sequence, 5, context), cut_windows(sequence, 5, context, latest=step)
        assert len(default) == len(full) and all(np.array_equal(a, c) and np.array_equal(b, d)
                                                 for (a, b), (c, d) in zip(default, full))
        for latest in range(1, step + 1):
            windows = cut_windows(sequence, 5, context, latest=latest)
            targets = np.concatenate([t[t > 0] for _, t in windows])
            assert sorted(targets.tolist()) == list(range(2, 24))
            assert windows[0][1][-latest:].tolist() == list(range(24 - latest, 24))  # the most recent window's share
            assert int((windows[0][1] > 0).sum()) == latest
            for inputs, nexts in windows:
                assert len(inputs) <= 5 and np.array_equal(inputs, np.arange(inputs[0], inputs[0] + len(inputs)))
    with pytest.raises(ValueError, match=r"latest must be in \[1, 3\]"):
        cut_windows(sequence, 5, context=2, latest=4)


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
                                                        "MAX_ITEM_LIST_LENGTH": 4, "window_context": 0})
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


@pytest.mark.parametrize("position_encoding", ["absolute", "relative"])
def test_all_positions_mode_learns_the_planted_answer(ring_data_path, position_encoding):
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "train_mode": "all_positions",
                "position_encoding": position_encoding,
                "window_batch_size": 16, "hidden_size": 32, "inner_size": 64, "n_layers": 1,
                "MAX_ITEM_LIST_LENGTH": 10, "window_context": 0, "learning_rate": 0.01, "epochs": 40}
    result = run("MMSASRec", "planted", config_dict=settings, console_log=False)
    assert result["test"]["hit@5"] >= 0.85, result["test"]


def test_recbole_models_refuse_all_positions(ring_data_path):
    from mmrecbole.errors import ConfigError

    with pytest.raises(ConfigError, match="'train_mode' in config_dict is a setting of MMGRU4Rec, MMSASRec, not of "
                                          "SASRec"):
        Config("SASRec", "planted", config_dict={**FAST, "data_path": ring_data_path, "train_mode": "all_positions"})
    # a model of ours that has the key but not the capability is refused when its loaders are built
    config = Config("MMSASRec", "planted", config_dict={**FAST, "data_path": ring_data_path, "modalities": [],
                                                        "train_mode": "all_positions"})
    from mmrecbole.model.sequential_recommender import MMSASRec

    class NoWindows(MMSASRec):
        supports_all_positions = False

    config.model_class = NoWindows
    with pytest.raises(ConfigError, match="not supported by MMSASRec"):
        build(config)
    torch.manual_seed(0)


def _loader_over(lengths_per_user, bucketing, batch_size=4, max_length=6, seed=7, device="cpu", context=0,
                 batch_targets=0, shift=False):
    """A SequenceWindowLoader over users with the given numbers of training items (RecBole's prefix rows built here)."""
    from types import SimpleNamespace

    from recbole.data.interaction import Interaction

    uids, histories, targets = [], [], []
    for user, n_items in enumerate(lengths_per_user, start=1):
        items = list(range(1, n_items + 1))
        for end in range(1, n_items):
            history = items[max(0, end - max_length): end]
            uids.append(user)
            histories.append(history + [0] * (max_length - len(history)))
            targets.append(items[end])
    feat = Interaction({"user_id": torch.tensor(uids), "item_id_list": torch.tensor(histories),
                        "item_id": torch.tensor(targets)})
    dataset = SimpleNamespace(inter_feat=feat, uid_field="user_id", iid_field="item_id")
    config = {"window_batch_size": batch_size, "seed": seed, "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
              "ITEM_LIST_LENGTH_FIELD": "item_length", "MAX_ITEM_LIST_LENGTH": max_length,
              "window_bucketing": bucketing, "window_context": context, "device": device,
              "window_batch_targets": batch_targets, "window_shift": shift, "single_spec": True}
    return SequenceWindowLoader(config, dataset)


def _padded_cells(batches):
    return sum(int(b["item_id_list"].numel()) - int(b["item_length"].sum()) for b in batches)


def test_bucketing_groups_windows_of_similar_length_and_saves_padding():
    lengths = [2, 7, 3, 7, 4, 7, 5, 6, 2, 7, 3, 6, 4, 5, 2, 7]  # users of 1..6 targets
    bucketed, plain = _loader_over(lengths, True), _loader_over(lengths, False)
    for loader in (bucketed, plain):  # both cover every target once per epoch
        batches = list(loader)
        assert sum(int((b[TARGETS_FIELD] > 0).sum()) for b in batches) == loader.n_targets == sum(lengths) - 16
    # Bucketed: the batches' length ranges do not overlap (each batch is a run of the length-sorted windows).
    for epoch in range(3):
        spans = sorted((int(b["item_length"].min()), int(b["item_length"].max())) for b in bucketed)
        assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:])), spans
    # Cutting the length-sorted windows into batches gives the least padding there is; random batches mix lengths.
    assert _padded_cells(list(bucketed)) < _padded_cells(list(plain))


def test_window_context_keeps_one_loss_per_target_and_refuses_bad_values():
    lengths = [20, 3, 14, 9]
    plain, overlapped = _loader_over(lengths, True), _loader_over(lengths, True, context=4)
    assert plain.n_targets == overlapped.n_targets == sum(lengths) - len(lengths)
    assert len(overlapped.lengths) > len(plain.lengths)
    targets = sorted(int(t) for b in overlapped for t in b[TARGETS_FIELD].flatten() if t > 0)
    assert targets == sorted(t for n in lengths for t in range(2, n + 1))
    from mmrecbole.errors import ConfigError

    with pytest.raises(ConfigError, match=r"window_context must be >= 0 and < MAX_ITEM_LIST_LENGTH \(6\), got 6"):
        _loader_over(lengths, True, context=6)


def test_target_budget_gives_every_step_about_the_same_number_of_targets():
    lengths = [2, 7, 3, 7, 4, 7, 5, 6, 2, 7, 3, 6, 4, 5, 2, 7] * 4  # users of 1..6 targets, max_length 6
    for bucketing in (True, False):
        by_windows = _loader_over(lengths, bucketing, batch_size=4)
        by_targets = _loader_over(lengths, bucketing, batch_targets=12)
        counts = [int((b[TARGETS_FIELD] > 0).sum()) for b in by_targets]
        assert sum(counts) == by_targets.n_targets == sum(lengths) - len(lengths)  # every target once
        # a batch closes once its running count reaches the budget: within one window (<= 6 targets) of it, but for
        # the epoch's remainder batch
        assert all(12 - 6 < c < 12 + 6 for c in sorted(counts)[1:]), counts
        if bucketing:  # 4 windows per batch: from 4 targets (short windows) to 24 (long ones)
            window_counts = [int((b[TARGETS_FIELD] > 0).sum()) for b in by_windows]
            assert min(window_counts) == 4 and max(window_counts) == 24
        assert len(by_targets) == -(-by_targets.n_targets // 12)


def _epoch_windows(loader):
    """({(first input, length)} of the windows, sorted targets) of one epoch."""
    windows, targets = set(), []
    for batch in loader:
        for row in range(len(batch)):
            length = int(batch["item_length"][row])
            windows.add((int(batch["item_id_list"][row][0]), length))
            targets += [int(t) for t in batch[TARGETS_FIELD][row][:length] if t > 0]
    return windows, sorted(targets)


def test_window_shift_moves_the_boundaries_every_epoch_and_keeps_every_target_once():
    lengths = [20, 3, 14, 9, 17]  # max_length 6: long users get several windows
    every_target = sorted(t for n in lengths for t in range(2, n + 1))
    for context, batch_targets in ((0, 0), (2, 0), (0, 10)):
        shifted = _loader_over(lengths, True, context=context, batch_targets=batch_targets, shift=True)
        epochs = []
        for _ in range(4):
            n_batches = len(shifted)  # len() describes the epoch about to be iterated
            batches = list(shifted)
            assert n_batches == len(batches) or batch_targets  # a target budget's len() is the usual estimate
            windows, targets = _epoch_windows(batches)
            assert targets == every_target  # each target once per epoch, whatever the boundaries
            epochs.append(windows)
        assert len({frozenset(w) for w in epochs}) > 1  # boundaries moved
    fixed = _loader_over(lengths, True)
    assert _epoch_windows(fixed)[0] == _epoch_windows(fixed)[0]  # without the shift: the same windows every epoch


def test_bucketing_shuffles_the_batches_between_epochs():
    loader = _loader_over([2, 7, 3, 7, 4, 7, 5, 6, 2, 7, 3, 6, 4, 5, 2, 7], True)
    first = [b["item_length"].tolist() for b in loader]
    second = [b["item_length"].tolist() for b in loader]
    assert first != second and sorted(map(sorted, first)) == sorted(map(sorted, second))


def test_torch_compile_gives_the_same_loss_and_gradients(ring_data_path):
    """`torch_compile: True` routes the encoder through torch.compile (TorchInductor) with the same results."""
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "window_context": 0,
                "train_mode": "all_positions", "window_batch_size": 16, "hidden_size": 16, "inner_size": 32,
                "n_layers": 1, "n_heads": 1, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0,
                "MAX_ITEM_LIST_LENGTH": 4}
    models = []
    for compiled in (False, True):
        config = Config("MMSASRec", "planted", config_dict={**settings, "torch_compile": compiled})
        _, train, _, _, model = build(config)
        models.append((model, train))
    (eager, train), (compiled, _) = models
    compiled.load_state_dict(eager.state_dict())
    for width_batch in list(train)[:3]:  # batches of different widths: dynamic shapes, no per-width failure
        losses = []
        for model in (eager, compiled):
            model.zero_grad()
            loss = model.calculate_loss(width_batch)
            loss.backward()
            losses.append((loss.detach(), model.items.id_embedding.weight.grad.clone()))
        torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-3, atol=1e-5)
    assert compiled._compiled_encode_all is not None and eager._compiled_encode_all is None


@pytest.mark.gpu
def test_window_table_lives_on_the_cuda_device():
    """On CUDA the loader copies its window table to the device once: batches come out there, same as on the CPU."""
    lengths = [2, 7, 3, 7, 4, 7]
    for cpu_batch, cuda_batch in zip(_loader_over(lengths, True), _loader_over(lengths, True, device="cuda")):
        assert cuda_batch["item_id_list"].device.type == "cuda"
        for field in ("item_id_list", "item_length", TARGETS_FIELD):
            assert torch.equal(cpu_batch[field], cuda_batch[field].cpu())


@pytest.mark.parametrize("position_encoding", ["absolute", "relative"])
def test_without_dropout_a_window_loss_is_its_prefix_rows_loss(ring_data_path, position_encoding):
    # The reason all_positions numbers are comparable with RecBole's prefix mode: under the causal mask the output at
    # position k sees only positions <= k, so a window predicts each target from the same history as its prefix row.
    # MAX_ITEM_LIST_LENGTH 10 >= a user's 8 training items: one window per user, every target with its full history.
    # A mask that let position k see k + 1 (or a target misaligned by one) would separate the two losses.
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "window_context": 0, "window_batch_size": 16,
                "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32,
                "initializer_range": 0.5,  # large weights: sharp attention, so a leak shows in the loss
                "position_encoding": position_encoding}
    _, windows, _, _, model = build(Config("MMSASRec", "planted",
                                           config_dict={**settings, "train_mode": "all_positions"}))
    _, prefixes, _, _, _ = build(Config("MMSASRec", "planted", config_dict={**settings, "train_mode": "prefix"}))
    model.eval()  # no dropout anywhere (modality and ID dropout too: they check self.training)
    with torch.no_grad():
        window_sum = sum(float(model.calculate_loss(b)) * int((b[TARGETS_FIELD] > 0).sum()) for b in windows)
        prefix_sum = sum(float(model.calculate_loss(b)) * len(b) for b in prefixes)
    n_prefix_rows = sum(len(b) for b in prefixes)
    assert n_prefix_rows == windows.n_targets == 7 * len(ring_walks())
    assert window_sum / windows.n_targets == pytest.approx(prefix_sum / n_prefix_rows, rel=1e-5)


def _relative_and_absolute_models(ring_data_path):
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16,
                "inner_size": 32, "initializer_range": 0.5, "window_context": 0}
    return [build(Config("MMSASRec", "planted", config_dict={**settings, "position_encoding": encoding}))[4].eval()
            for encoding in ("relative", "absolute")]


def test_relative_positions_read_a_history_alike_wherever_it_starts(ring_data_path):
    # The point of position_encoding: relative. A history [a, b, c] read at its last item gives the same output
    # whether it starts at position 0 or after two masked (padding) slots, as a target does inside an all_positions
    # window whatever the window's alignment. Absolute position vectors tell the two apart.
    relative, absolute = _relative_and_absolute_models(ring_data_path)
    history = torch.tensor([5, 9, 2])
    at_start = torch.cat([history, torch.zeros(7, dtype=torch.long)]).unsqueeze(0)
    shifted = torch.cat([torch.zeros(2, dtype=torch.long), history, torch.zeros(5, dtype=torch.long)]).unsqueeze(0)
    outputs = {}
    with torch.no_grad():
        for name, model in (("relative", relative), ("absolute", absolute)):
            table = model.items()
            outputs[name] = (model.encode_all(at_start, table)[0, 2], model.encode_all(shifted, table)[0, 4])
    torch.testing.assert_close(outputs["relative"][0], outputs["relative"][1], rtol=1e-5, atol=1e-5)
    assert (outputs["absolute"][0] - outputs["absolute"][1]).abs().max() > 1e-2


def test_relative_positions_are_read_through_the_distance_bias(ring_data_path):
    # The bias must reach the attention logits: the same history read without it gives another output.
    relative, _ = _relative_and_absolute_models(ring_data_path)
    sequence = torch.tensor([[5, 9, 2, 7, 0]])
    with torch.no_grad():
        with_bias = relative.encode_all(sequence, relative.items())[0, 3]
        relative.distance_bias.weight.zero_()
        without_bias = relative.encode_all(sequence, relative.items())[0, 3]
    assert (with_bias - without_bias).abs().max() > 1e-2


def test_an_unknown_position_encoding_names_the_key(ring_data_path):
    from mmrecbole.errors import ConfigError

    with pytest.raises(ConfigError, match="position_encoding must be 'absolute' or 'relative', got 'rotary'"):
        build(Config("MMSASRec", "planted", config_dict={**FAST, "data_path": ring_data_path, "modalities": [],
                                                          "position_encoding": "rotary"}))


def test_cpu_loss_scores_only_target_positions_and_equals_the_ignore_index_loss(ring_data_path):
    """On the CPU the window loss scores only positions with a target; it must equal the loss over every position
    with padding ignored (the CUDA formula)."""
    import torch.nn.functional as F

    from mmrecbole.data.windows import TARGETS_FIELD

    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "window_context": 3, "window_batch_size": 16,
                "MAX_ITEM_LIST_LENGTH": 6, "hidden_size": 16, "inner_size": 32, "hidden_dropout_prob": 0.0,
                "attn_dropout_prob": 0.0}
    _, train, _, _, model = build(Config("MMSASRec", "planted", config_dict=settings))
    checked = 0
    for batch in train:
        targets = batch[TARGETS_FIELD]
        with torch.no_grad():
            table = model.items()
            logits = model.encode_all(batch[model.ITEM_SEQ], table) @ table.T
            expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)
            got = model.calculate_loss(batch)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        checked += bool((targets == 0).any())
    assert checked > 0  # some batches have positions without a target (padding or context)
