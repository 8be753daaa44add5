"""Refit (issue 21): a trained model continues on a grown dataset; rows follow raw ids, never internal positions."""
import os

import numpy as np
import pytest
import torch

from mmrecbole import checkpoint, quick_start
from mmrecbole.cli import main
from mmrecbole.errors import CheckpointError, ConfigError
from mmrecbole.id_transfer import IdMap, transfer_optimizer_state, transfer_state
from mmrecbole.serving import Recommender
from tests.planted import FAST, ring_walks, write_histories

SEQ = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005}


def _periods(root):
    """(data_path) with 'ringv1': users 1-60, their first 7 steps; 'ringv2': everything later too, users in reverse
    file order (so RecBole numbers every id differently), 20 new users 61-80 and 20 new users 81-100 walking a third
    ring whose items (41-60) v1 never had."""
    walks = dict(ring_walks(n_users=80, n_rings=2, ring_size=20, walk_length=10, seed=0))
    rng = np.random.default_rng(1)
    for user in range(81, 101):
        start = int(rng.integers(20))
        walks[user] = [41 + (start + step) % 20 for step in range(10)]
    write_histories(root, {str(u): [str(i) for i in walks[u][:7]] for u in range(1, 61)}, "ringv1")
    write_histories(root, {str(u): [str(i) for i in walks[u]] for u in sorted(walks, reverse=True)}, "ringv2")
    return str(root)


@pytest.fixture(scope="module")
def periods(tmp_path_factory):
    return _periods(tmp_path_factory.mktemp("periods"))


def _settings(data_path, folder, **extra):
    return {**FAST, "data_path": data_path, "checkpoint_dir": os.path.join(str(folder), "saved"), **extra}


def _train(model, dataset, data_path, folder, **extra):
    return quick_start.run(model, dataset, config_dict=_settings(data_path, folder, **extra),
                           log_dir=os.path.join(str(folder), "log"), console_log=False)


def _refit(parent, dataset, data_path, folder, **extra):
    return quick_start.refit(parent, dataset, config_dict=_settings(data_path, folder, **extra),
                             log_dir=os.path.join(str(folder), "log"), console_log=False)


def test_rows_move_with_their_raw_ids():
    users = IdMap.between(["[PAD]", "a", "b", "c"], ["[PAD]", "c", "x", "a"])
    items = IdMap.between(["[PAD]", "i1", "i2"], ["[PAD]", "i2", "i1", "i3"])
    assert users.dropped == ["b"] and users.added == ["x"] and items.added == ["i3"]
    old = {"user_embedding.weight": torch.tensor([[0.0], [1.0], [2.0], [3.0]]),
           "item_embedding.weight": torch.tensor([[0.0], [10.0], [20.0], [99.0]]),  # + a trailing mask-token row
           "position_embedding.weight": torch.ones(4, 1), "items.features_text": torch.zeros(3, 2)}
    fresh = {"user_embedding.weight": torch.full((4, 1), 7.0), "item_embedding.weight": torch.full((5, 1), 7.0),
             "position_embedding.weight": torch.full((4, 1), 5.0), "items.features_text": torch.full((4, 2), 3.0)}
    moved = transfer_state(old, fresh, users, items)
    assert moved["user_embedding.weight"].flatten().tolist() == [0.0, 3.0, 0.0, 1.0]  # c, x (new: 0), a
    assert moved["item_embedding.weight"].flatten().tolist() == [0.0, 20.0, 10.0, 0.0, 99.0]
    assert torch.equal(moved["position_embedding.weight"], torch.ones(4, 1))  # not an id-indexed tensor: copied
    assert torch.equal(moved["items.features_text"], fresh["items.features_text"])  # the new data's content
    adam = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.tensor([[0.0], [1.0], [2.0], [3.0]])}},
            "param_groups": [{"params": [0], "lr": 0.1}]}
    new_adam = {"state": {}, "param_groups": [{"params": [0], "lr": 1e-4}]}
    moved_adam = transfer_optimizer_state(adam, new_adam, ["user_embedding.weight"], old, fresh, users, items)
    assert moved_adam["state"][0]["exp_avg"].flatten().tolist() == [0.0, 3.0, 0.0, 1.0]
    assert float(moved_adam["state"][0]["step"]) == 3.0
    assert moved_adam["param_groups"][0]["lr"] == 1e-4  # the refit's own learning rate


def test_new_rows_start_at_the_mean_of_the_kept_rows_when_asked():
    users = IdMap.between(["[PAD]", "a", "b", "c"], ["[PAD]", "c", "x", "a"])  # b dropped, x new
    items = IdMap.between(["[PAD]", "i1", "i2"], ["[PAD]", "i2", "i1", "i3"])  # i3 new
    old = {"user_embedding.weight": torch.tensor([[0.0, 0.0], [1.0, 4.0], [2.0, 5.0], [3.0, 9.0]]),
           "item_embedding.weight": torch.tensor([[0.0], [10.0], [20.0], [99.0]])}  # + a trailing mask-token row
    fresh = {"user_embedding.weight": torch.full((4, 2), 7.0), "item_embedding.weight": torch.full((5, 1), 7.0)}
    moved = transfer_state(old, fresh, users, items, new_rows="mean")
    # x gets the mean of the kept users a and c (b was dropped; the padding row stays out of it and stays 0)
    assert moved["user_embedding.weight"].tolist() == [[0.0, 0.0], [3.0, 9.0], [2.0, 6.5], [1.0, 4.0]]
    assert moved["item_embedding.weight"].flatten().tolist() == [0.0, 20.0, 10.0, 15.0, 99.0]  # mask row kept
    with pytest.raises(ConfigError, match=r"refit_new_rows must be one of \['zero', 'mean'\], got 'random'"):
        transfer_state(old, fresh, users, items, new_rows="random")


def test_refit_carries_every_known_ids_parameters_and_names_its_parent(periods, tmp_path):
    old = _train("BPR", "ringv1", periods, tmp_path / "old", epochs=5, embedding_size=16)
    # A learning rate of ~0: what comes out is what was carried over.
    new = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "new", epochs=1, learning_rate=1e-12)
    assert new["refit"] == {"users": {"kept": 60, "added": 40, "dropped": 0},
                            "items": {"kept": 40, "added": 20, "dropped": 0}}
    before, after = Recommender.load(old["bundle"]), Recommender.load(new["bundle"])
    renumbered = 0
    for entity, table in (("user", "user_embedding.weight"), ("item", "item_embedding.weight")):
        old_ids = before.bundle.user_ids if entity == "user" else before.bundle.item_ids
        new_index = {t: i for i, t in enumerate(after.bundle.user_ids if entity == "user" else after.bundle.item_ids)}
        old_rows, new_rows = before.model.state_dict()[table], after.model.state_dict()[table]
        for i, token in enumerate(old_ids[1:], start=1):
            torch.testing.assert_close(new_rows[new_index[token]], old_rows[i], rtol=0, atol=1e-6)
            renumbered += new_index[token] != i
    assert renumbered > 50  # RecBole numbered the new version differently: the rows really moved
    for token in ("41", "60"):  # new items start at zero (one step at a learning rate of 1e-12 since)
        assert after.model.state_dict()["item_embedding.weight"][after.item_index[token]].abs().max() < 1e-9
    assert checkpoint.read(new["checkpoint"]).meta["parent"] == os.path.abspath(old["checkpoint"])
    assert after.bundle.meta["checkpoint"]["parent"] == os.path.abspath(old["checkpoint"])


def test_a_refit_sequential_model_beats_the_stale_one_on_the_new_period(periods, tmp_path):
    old = _train("SASRec", "ringv1", periods, tmp_path / "old", epochs=20, **SEQ)
    stale = _refit(old["bundle"], "ringv2", periods, tmp_path / "stale", epochs=1, learning_rate=1e-12)
    refit = _refit(old["bundle"], "ringv2", periods, tmp_path / "refit", epochs=15)
    # The third ring's items are new: the stale model has zero vectors for them, the refit one learned them.
    assert refit["test"]["hit@5"] >= stale["test"]["hit@5"] + 0.15, (refit["test"], stale["test"])
    assert refit["test"]["hit@5"] >= 0.7, refit["test"]


def test_als_refit_is_implicits_own_fit_started_from_the_carried_factors(periods, tmp_path):
    import implicit.cpu.als

    from mmrecbole.id_transfer import transfer_state
    from mmrecbole.model.external.implicit_common import interaction_strength, without_padding

    old = _train("ImplicitALS", "ringv1", periods, tmp_path / "old")
    new = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "new")
    refit = Recommender.load(new["bundle"]).model
    loaded = quick_start.load_run(new["checkpoint"])
    parent = Recommender.load(old["bundle"])
    users = IdMap.between(parent.bundle.user_ids, loaded.dataset.field2id_token["user_id"])
    items = IdMap.between(parent.bundle.item_ids, loaded.dataset.field2id_token["item_id"])
    carried = transfer_state(parent.model.state_dict(), refit.state_dict(), users, items)
    theirs = implicit.cpu.als.AlternatingLeastSquares(factors=refit.factors, regularization=refit.regularization,
                                                      alpha=1.0, iterations=refit.iterations, random_state=refit.seed)
    theirs.user_factors = carried["user_factors"][1:].numpy().copy()
    theirs.item_factors = carried["item_factors"][1:].numpy().copy()
    from mmrecbole import compat

    matrix = interaction_strength(compat.dataset_of(loaded.train), "count", None)
    matrix.data = 1.0 + refit.alpha * matrix.data
    theirs.fit(without_padding(matrix), show_progress=False)
    np.testing.assert_allclose(refit.user_factors[1:].numpy(), theirs.user_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(refit.item_factors[1:].numpy(), theirs.item_factors, rtol=1e-4, atol=1e-5)


def test_refit_on_an_unrelated_dataset_is_refused_with_the_overlap(periods, tmp_path):
    old = _train("BPR", "ringv1", periods, tmp_path / "old", epochs=1)
    write_histories(periods, {f"9{u}": [f"x{(u + i) % 20}" for i in range(6)] for u in range(1, 30)}, "other")
    with pytest.raises(CheckpointError, match="holds only 0% of the 60 users BPR was trained on"):
        _refit(old["checkpoint"], "other", periods, tmp_path / "new", epochs=1)


def test_refit_needs_the_bundle_with_the_old_ids(periods, tmp_path):
    old = _train("BPR", "ringv1", periods, tmp_path / "old", epochs=1, save_bundle=False)
    with pytest.raises(CheckpointError, match="a refit needs the raw-id maps"):
        _refit(old["checkpoint"], "ringv2", periods, tmp_path / "new", epochs=1)


def test_cli_refit(periods, tmp_path, capsys, monkeypatch):
    old = _train("BPR", "ringv1", periods, tmp_path / "old", epochs=2)
    monkeypatch.chdir(tmp_path)
    assert main(["--refit", f"--checkpoint={old['checkpoint']}", "--dataset=ringv2", f"--data_path={periods}",
                 "--epochs=2", "--show_progress=false", "--state=WARNING", "--topk=[5]", "--valid_metric=NDCG@5",
                 "--metrics=[Hit,NDCG]"]) == 0
    out = capsys.readouterr().out
    assert "== BPR on ringv2" in out and "'added': 40" in out
    assert main(["--refit", f"--checkpoint={old['checkpoint']}"]) == 2


def test_refit_on_the_same_data_gives_a_content_model_its_own_scores_back(tmp_path):
    from tests.planted_mm import write_planted_mm

    data_path, files, _ = write_planted_mm(tmp_path / "data")
    settings = {**SEQ, "window_context": 4, "mm_feature_files": files, "topk": [10], "valid_metric": "NDCG@10"}
    old = _train("MMSASRec", "plantedmm", data_path, tmp_path / "old", epochs=2, **settings)
    new = _refit(old["bundle"], "plantedmm", data_path, tmp_path / "new", epochs=1,
                 **{**settings, "learning_rate": 1e-12})
    assert new["refit"]["items"] == {"kept": 108, "added": 0, "dropped": 0}
    before, after = Recommender.load(old["bundle"]), Recommender.load(new["bundle"])
    users = before.known_users()[:20]
    for a, b in zip(before.recommend(users, k=10), after.recommend(users, k=10)):
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], rtol=1e-4, atol=1e-5)


def test_users_and_items_the_new_version_deleted_are_dropped_and_reported(periods, tmp_path, caplog):
    walks = dict(ring_walks(n_users=80, n_rings=2, ring_size=20, walk_length=10, seed=0))
    kept = {str(u): [str(i) for i in walks[u][:7] if i != 5] for u in range(2, 61)}  # user 1 and item 5 gone
    write_histories(periods, kept, "ringv1cut")
    old = _train("BPR", "ringv1", periods, tmp_path / "old", epochs=1)
    new = _refit(old["checkpoint"], "ringv1cut", periods, tmp_path / "new", epochs=1)
    assert new["refit"]["users"]["dropped"] == 1 and new["refit"]["items"]["dropped"] == 1
    assert "1 users of the old model are not in ringv1cut (e.g. ['1'])" in caplog.text
    assert "1 items of the old model are not in ringv1cut (e.g. ['5'])" in caplog.text


def test_shrink_perturb_mixes_carried_and_fresh_weights_and_leaves_buffers_alone():
    from mmrecbole.id_transfer import restarts, shrink_perturb

    moved = {"w": torch.tensor([2.0, 4.0]), "items.features_text": torch.tensor([1.0, 1.0]),
             "steps": torch.tensor([3])}
    fresh = {"w": torch.tensor([10.0, -10.0]), "items.features_text": torch.tensor([5.0, 5.0]),
             "steps": torch.tensor([0])}
    mixed = shrink_perturb(moved, fresh, ["w", "steps"], 0.5, 0.1)
    assert mixed["w"].tolist() == pytest.approx([2.0, 1.0])  # 0.5 * carried + 0.1 * fresh init
    assert torch.equal(mixed["items.features_text"], moved["items.features_text"])  # a buffer: as carried
    assert torch.equal(mixed["steps"], moved["steps"])  # integer tensors are counters, not weights
    assert shrink_perturb(moved, fresh, ["w"], 1.0, 0.0) is moved and not restarts(1, 0.0) and restarts(1, 0.01)
    for name, args in (("refit_shrink", (1.5, 0.0)), ("refit_perturb", (1.0, -0.1)), ("refit_shrink", (True, 0))):
        with pytest.raises(ConfigError, match=rf"{name} must be a number in \[0, 1\], got "):
            restarts(*args)


def test_refit_shrunk_to_nothing_and_perturbed_by_a_whole_init_is_training_from_scratch(periods, tmp_path):
    """shrink 0, perturb 1 keeps nothing of the old weights and starts a fresh optimizer: the refit must be the
    scratch run of the same settings and seed, metric for metric; plain refit is not."""
    settings = {"epochs": 6, "embedding_size": 16, "seed": 3}
    old = _train("BPR", "ringv1", periods, tmp_path / "old", **settings)
    scratch = _train("BPR", "ringv2", periods, tmp_path / "scratch", **settings)
    restarted = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "restart", refit_shrink=0.0,
                       refit_perturb=1.0, **settings)
    warm = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "warm", **settings)
    assert restarted["best_valid_score"] == scratch["best_valid_score"]
    assert restarted["test"] == scratch["test"]
    assert warm["test"] != scratch["test"]


def test_shrink_perturb_is_refused_for_models_that_refit_by_a_warm_fit(periods, tmp_path):
    old = _train("ImplicitALS", "ringv1", periods, tmp_path / "old")
    with pytest.raises(ConfigError, match="refit_shrink / refit_perturb apply to gradient-trained models; "
                                          "ImplicitALS refits by a warm-started fit"):
        _refit(old["checkpoint"], "ringv2", periods, tmp_path / "new", refit_shrink=0.5)
