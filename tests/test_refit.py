"""Refit (issue 21): a trained model continues on a grown dataset; rows follow raw ids, never internal positions."""
import os

import numpy as np
import pytest
import torch

from mmrecbole import checkpoint, compat, quick_start
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
    assert new["refit"] == {"users": {"kept": 60, "added": 40, "dropped": 0, "updated": 100, "trained": 100},
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


# -- whom a refit trains and validates on (refit_replay, refit_valid_users) ----------------------------------------
def test_updated_users_are_the_new_and_the_grown_and_replay_adds_a_share_of_the_others():
    from mmrecbole.refit_users import replay_users, updated_users

    # old internal ids 1..3 (counts 5, 4, 6) are new ids 3, 1, 2; new id 4 is a new user; row 0 is padding
    updated = updated_users(old_rows=[0, 1, 2, 3], new_rows=[0, 3, 1, 2], old_counts=[0, 5, 4, 6],
                            new_counts=[0, 4, 6, 5, 2])
    assert updated.tolist() == [False, False, False, False, True]  # grown: none; id 4 new
    updated = updated_users([0, 1, 2, 3], [0, 3, 1, 2], [0, 5, 4, 6], [0, 7, 6, 5, 2])
    assert updated.tolist() == [False, True, False, False, True]  # new id 1 (old 2) went from 4 to 7
    many = np.zeros(101, dtype=bool)
    many[1:11] = True  # 10 updated users, 90 others
    assert replay_users(many, 0.0, seed=0).sum() == 10 and replay_users(many, 1.0, seed=0).sum() == 100
    half = replay_users(many, 0.5, seed=7)
    assert half.sum() == 55 and half[1:11].all() and not half[0]
    assert np.array_equal(half, replay_users(many, 0.5, seed=7))  # seeded
    assert not np.array_equal(half, replay_users(many, 0.5, seed=8))


def test_refit_replay_and_valid_users_are_checked():
    from mmrecbole.refit_users import check_settings

    for value in (1.5, -0.1, True, "half"):
        with pytest.raises(ConfigError, match=r"refit_replay must be a number in \[0, 1\]"):
            check_settings(value, "all")
    with pytest.raises(ConfigError, match=r"refit_valid_users must be one of \['all', 'updated'\], got 'new'"):
        check_settings(1.0, "new")


def test_replaying_no_one_when_every_user_grew_is_the_full_refit(periods, tmp_path):
    """In ringv2 every old user has three more steps and 40 users are new: no user is left out of the training or
    of the validation, so the restricted loaders must reproduce the full refit metric for metric."""
    settings = {"epochs": 4, "embedding_size": 16, "seed": 3}
    old = _train("BPR", "ringv1", periods, tmp_path / "old", **settings)
    full = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "full", **settings)
    focused = _refit(old["checkpoint"], "ringv2", periods, tmp_path / "focused", refit_replay=0.0,
                     refit_valid_users="updated", **settings)
    assert focused["refit"]["users"] == {"kept": 60, "added": 40, "dropped": 0, "updated": 100, "trained": 100}
    assert focused["best_valid_score"] == full["best_valid_score"] and focused["test"] == full["test"]


@pytest.fixture(scope="module")
def half_grown(periods):
    """'ringhalf': users 1-30 walk on (10 steps), users 31-60 stop where ringv1 did (7 steps), 20 new users 61-80."""
    walks = dict(ring_walks(n_users=80, n_rings=2, ring_size=20, walk_length=10, seed=0))
    histories = {str(u): [str(i) for i in walks[u][:10 if u <= 30 or u > 60 else 7]] for u in range(1, 81)}
    write_histories(periods, histories, "ringhalf")
    return {str(u) for u in list(range(1, 31)) + list(range(61, 81))}


def _loader_users(loader):
    """The internal user ids of a loader's batches (training or full-sort evaluation); our window loader's batches
    carry no user ids: the users of the rows it cut its windows from, one sequence each."""
    from mmrecbole.data.windows import SequenceWindowLoader

    if isinstance(loader, SequenceWindowLoader):
        users = set(compat.dataset_of(loader).inter_feat[compat.dataset_of(loader).uid_field].tolist())
        assert len(loader._sequences) == len(users)
        return users
    users = set()
    for batch in loader:
        interaction = batch[0] if isinstance(batch, tuple) else batch
        users.update(interaction[compat.dataset_of(loader).uid_field].tolist())
    return users


@pytest.mark.parametrize("model, extra", [("BPR", {"embedding_size": 16}),
                                          ("SASRec", {**SEQ, "epochs": 2}),
                                          ("MMSASRec", {**SEQ, "modalities": [], "window_context": 4})])
def test_a_refit_trains_and_validates_on_the_updated_users_and_the_replayed_share(periods, half_grown, tmp_path,
                                                                                    monkeypatch, model, extra):
    from mmrecbole.data import build as data_build

    settings = {"epochs": 2, **extra}
    old = _train(model, "ringv1", periods, tmp_path / "old", **settings)
    seen = {}
    for name in ("restrict_training", "restrict_evaluation"):
        original = getattr(data_build, name)

        def spy(*args, _original=original, _name=name):
            seen[_name] = (_original(*args), args[-2])
            return seen[_name][0]
        monkeypatch.setattr(quick_start, name, spy)
    new = _refit(old["bundle"], "ringhalf", periods, tmp_path / "new", refit_replay=0.5, refit_valid_users="updated",
                 **settings)
    assert new["refit"]["users"] == {"kept": 60, "added": 20, "dropped": 0, "updated": 50, "trained": 65}
    tokens = Recommender.load(new["bundle"]).bundle.user_ids
    trained_loader, full_train = seen["restrict_training"]
    trained = {tokens[u] for u in _loader_users(trained_loader)}
    assert half_grown <= trained and len(trained) == 65  # every updated user and 15 of the 30 others
    assert len(_loader_users(full_train)) == 80
    valid_loader, full_valid = seen["restrict_evaluation"]
    assert {tokens[u] for u in _loader_users(valid_loader)} == half_grown
    # the restricted validation masks what the full one masks, user by user
    def masked(loader):
        out = {}
        for interaction, history, _, _ in loader:
            rows = interaction[compat.dataset_of(loader).uid_field].tolist()
            for u in rows:
                out.setdefault(u, set())
            if history is not None:
                for r, i in zip(history[0].tolist(), history[1].tolist()):
                    out[rows[r]].add(i)
        return out
    restricted, full = masked(valid_loader), masked(full_valid)
    assert restricted and all(restricted[u] == full[u] for u in restricted)
    assert sum(map(len, restricted.values())) > 0


def test_refit_replay_is_refused_for_one_pass_models_and_without_updated_users(periods, tmp_path):
    als = _train("ImplicitALS", "ringv1", periods, tmp_path / "als")
    with pytest.raises(ConfigError, match="refit_replay applies to gradient-trained models; ImplicitALS refits in "
                                          "one pass"):
        _refit(als["checkpoint"], "ringv2", periods, tmp_path / "new", refit_replay=0.5)
    bpr = _train("BPR", "ringv1", periods, tmp_path / "bpr", epochs=1)
    with pytest.raises(ConfigError, match="ringv1 holds no interaction that BPR .ringv1. has not seen"):
        _refit(bpr["checkpoint"], "ringv1", periods, tmp_path / "same", epochs=1, refit_valid_users="updated")
