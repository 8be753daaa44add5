"""implicit's ALS / BPR / LMF / item-kNN under RecBole's protocol (issue 5).

The conformance contract, metric parity with implicit's own `recommend` + numpy metrics, checkerboards with a known
answer (ours and implicit's own fixture), fits equal to implicit's on the real users x items (no padding id), the
item-kNN variants, settings errors, and the fit-once trainer.
"""
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from mmrecbole import registry
from mmrecbole.compat import dataset_of
from mmrecbole.config import Config
from mmrecbole.errors import ConfigError
from mmrecbole.contract import learned_value_count
from mmrecbole.quick_start import build, load, run
from mmrecbole.trainer import FitOnceTrainer, make_trainer, trainer_class
from tests.conformance import RecommenderConformance
from tests.planted import FAST, write_histories

IMPLICIT_MODELS = ["ImplicitALS", "ImplicitBPR", "ImplicitLMF", "ImplicitItemKNN"]


class TestImplicitALS(RecommenderConformance):
    MODEL = "ImplicitALS"
    GRADIENT_TRAINED = False
    SETTINGS = {"factors": 8, "iterations": 5}


class TestImplicitBPR(RecommenderConformance):
    MODEL = "ImplicitBPR"
    GRADIENT_TRAINED = False
    SETTINGS = {"factors": 8, "iterations": 20, "learning_rate": 0.05}


class TestImplicitLMF(RecommenderConformance):
    MODEL = "ImplicitLMF"
    GRADIENT_TRAINED = False
    SETTINGS = {"factors": 8, "iterations": 10}


class TestImplicitItemKNN(RecommenderConformance):
    MODEL = "ImplicitItemKNN"
    GRADIENT_TRAINED = False
    SETTINGS = {"k": 10, "knn_similarity": "bm25"}


def settings(data_path, **extra):
    return {**FAST, "data_path": data_path, **extra}


def test_registry_and_trainer_find_the_implicit_models():
    assert set(IMPLICIT_MODELS) <= set(registry.available_models()["mmrecbole"])
    for name in IMPLICIT_MODELS:
        model_class = registry.get_model(name)
        assert trainer_class(model_class.type, name) is FitOnceTrainer


# ---- metric parity: our path == implicit's recommend + numpy metrics ------------------------------------------
def random_histories(n_users=60, n_items=40, seed=0):
    """{user token: [item tokens in time order]}: 6..14 distinct random items per user. Random histories make two
    items with identical scores (exact ties, which RecBole's and implicit's top-k break differently) unlikely; the
    ring data has them."""
    rng = np.random.default_rng(seed)
    return {str(u): [str(i) for i in rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(6, 15)),
                                                    replace=False)] for u in range(1, n_users + 1)}


def user_item_matrix(dataset, pairs, values):
    users = dataset.token2id(dataset.uid_field, [u for u, _ in pairs])
    items = dataset.token2id(dataset.iid_field, [i for _, i in pairs])
    return sp.csr_matrix((values, (users, items)), shape=(dataset.user_num, dataset.item_num), dtype=np.float32)


def recall_ndcg(recommended, targets):
    """Leave-one-out metrics from top-k lists: recall = share of users whose target is in the list, NDCG = mean of
    1 / log2(rank + 1) over those hits (one relevant item per user, so the ideal DCG is 1)."""
    hits = recommended == targets[:, None]
    ranks = hits.argmax(axis=1) + 1
    found = hits.any(axis=1)
    return found.mean(), np.where(found, 1.0 / np.log2(ranks + 1), 0.0).mean()


def test_als_metrics_equal_implicit_recommend_with_numpy_metrics(tmp_path):
    import implicit.cpu.als

    histories = random_histories()
    data_path = write_histories(tmp_path / "data", histories, "random")
    k, alpha = 5, 5.0
    result = run("ImplicitALS", "random", config_dict=settings(
        data_path, metrics=["Recall", "NDCG"], topk=[k], valid_metric=f"NDCG@{k}", metric_decimal_place=12,
        factors=8, iterations=10, regularization=0.5, alpha=alpha), console_log=False)
    config, dataset, model = load(result["checkpoint"])

    # The split and the confidence matrix, rebuilt from the histories without RecBole's splitting code: the last
    # item is the test item, the one before it the validation item.
    train_pairs = [(u, i) for u, items in histories.items() for i in items[:-2]]
    valid_pairs = [(u, items[-2]) for u, items in histories.items()]
    train = user_item_matrix(dataset, train_pairs, np.full(len(train_pairs), 1.0 + alpha))
    seen_at_test = train + user_item_matrix(dataset, valid_pairs, np.ones(len(valid_pairs)))
    users = dataset.token2id(dataset.uid_field, list(histories))
    valid_items = dataset.token2id(dataset.iid_field, [items[-2] for items in histories.values()])
    test_items = dataset.token2id(dataset.iid_field, [items[-1] for items in histories.values()])

    # implicit fitted on the real users x items (RecBole's padding row/column 0 dropped: implicit's row n is RecBole's
    # id n + 1) with the same seed gives our factors, shifted down by the padding row (zeros).
    with threadpool_limits(1, "blas"):
        als = implicit.cpu.als.AlternatingLeastSquares(factors=8, regularization=0.5, alpha=1.0, iterations=10,
                                                       random_state=config["seed"])
        als.fit(train[1:, 1:], show_progress=False)
    np.testing.assert_array_equal(als.user_factors, model.user_factors[1:].numpy())
    np.testing.assert_array_equal(als.item_factors, model.item_factors[1:].numpy())
    assert not model.user_factors[0].any() and not model.item_factors[0].any()

    # Validation masks training items, test masks training + validation (RecBole never ranks the padding item 0,
    # which implicit does not know).
    for phase, seen, targets in [("valid", train, valid_items), ("test", seen_at_test, test_items)]:
        recommended, _ = als.recommend(users - 1, seen[users][:, 1:], N=k, filter_already_liked_items=True)
        recall, ndcg = recall_ndcg(recommended + 1, targets)
        assert 0 < recall < 1 and ndcg > 0, (phase, recall, ndcg)  # a comparison that can tell rankings apart
        assert result[phase][f"recall@{k}"] == pytest.approx(recall, abs=1e-6), phase
        assert result[phase][f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6), phase


# ---- known answer: checkerboard ---------------------------------------------------------------------------------
def write_checkerboard(root, n=24, name="checker"):
    """User u likes every item of its parity (even users even items, odd odd). Its last interaction is item u (the
    diagonal), the one before it the next item of its parity (cyclically), so leave-one-out by time tests on item u
    and validates on u + 2: every item is held out by exactly one user and trained on by all the others."""
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user in range(1, n + 1):
            valid = (user + 1) % n + 1  # u + 2 within 1..n, same parity (n even)
            items = [i for i in range(1, n + 1) if i % 2 == user % 2 and i not in (user, valid)] + [valid, user]
            for step, item in enumerate(items):
                f.write(f"{user}\t{item}\t5\t{user * 1000 + step}\n")
    return str(root)


def test_als_ranks_the_held_out_diagonal_item_first_on_a_checkerboard(tmp_path):
    data_path = write_checkerboard(tmp_path / "data")
    result = run("ImplicitALS", "checker", config_dict=settings(
        data_path, metrics=["Hit"], topk=[1], valid_metric="Hit@1", factors=2), console_log=False, saved=False)
    # Two factors for two blocks (with spare factors and little regularisation ALS starts to fit the held-out hole).
    # The only unmasked item of the user's parity is the held-out one; the other parity's items are all candidates.
    assert result["test"]["hit@1"] >= 0.95
    # 24 users and 24 items x 2 factors that ALS learned, + RecBole's padding row each (zeros, as an nn.Embedding's
    # padding row counts for the other models); no nn.Parameter holds them
    assert result["n_parameters"] == (25 + 25) * 2


# ---- implicit's own known answer: the checkerboard of its recommender_base_test.py ------------------------------
CHECKERBOARD_SIZE = 50

#: Each model with the settings implicit's own tests fit its checkerboard with (als_test.py, bpr_test.py,
#: lmf_test.py, knn_test.py: factors, regularization 0, seed; implicit's defaults otherwise), in our config keys.
#: alpha 0 (ALS: c = 1 + 0 * r) and 1 (LMF: c = 1 * r) give every liked pair implicit's confidence of 1.
IMPLICIT_CHECKERBOARD_CASES = {
    "ALS": ("ImplicitALS", {"factors": 32, "regularization": 0.0, "alpha": 0.0, "iterations": 15, "seed": 23}),
    "BPR": ("ImplicitBPR", {"factors": 3, "regularization": 0.0, "learning_rate": 0.01, "iterations": 100,
                            "verify_negative_samples": True, "seed": 42}),
    "LMF": ("ImplicitLMF", {"factors": 3, "regularization": 0.0, "learning_rate": 1.0, "iterations": 30,
                            "neg_prop": 30, "alpha": 1.0, "seed": 43}),
    **{f"ItemKNN-{kind}": ("ImplicitItemKNN", {"knn_similarity": kind, "k": 50, "bm25_K1": 1.2, "bm25_B": 0.75})
       for kind in ("cosine", "bm25", "tfidf")},
}

#: Leave-one-out of the last interaction only: the training split is then exactly implicit's fixture.
HOLD_OUT_LAST = {"split": {"LS": "test_only"}, "order": "TO", "group_by": "user", "mode": "full"}


def implicit_checkerboard(n=CHECKERBOARD_SIZE):
    """implicit's fixture, rebuilt: user u likes every item of its parity (even users even items, odd odd) except
    item u, the withheld diagonal; item u is then the one unseen item liked by all of u's look-alikes."""
    likes = np.zeros((n, n), dtype=np.float32)
    for user in range(n):
        likes[user, user % 2::2] = 1.0
    np.fill_diagonal(likes, 0.0)
    return sp.csr_matrix(likes)


def write_implicit_checkerboard(root, n=CHECKERBOARD_SIZE, name="implicit_checker"):
    """The fixture plus the diagonal as RecBole atomic files (users u0.., items i0..). Lines go user by user, items
    ascending; the diagonal item gets the user's last timestamp, so HOLD_OUT_LAST holds out exactly the diagonal.
    RecBole numbers ids by first appearance: users keep their order, items get the even ones first, then the odd."""
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(n):
            for item in range(user % 2, n, 2):
                f.write(f"u{user}\ti{item}\t{user * 1000 + (999 if item == user else item)}\n")
    return str(root)


def fit_on_implicit_checkerboard(root, model, overrides):
    """(trainer, training dataset, test loader) after our FitOnceTrainer fitted `model` on the fixture."""
    config = Config(model, "implicit_checker", config_dict=settings(
        write_implicit_checkerboard(root), eval_args=HOLD_OUT_LAST, metrics=["Hit"], topk=[1], valid_metric="Hit@1",
        **overrides))
    _, train, _, test, recommender = build(config)
    trainer = make_trainer(config, recommender)
    trainer.fit(train, None, saved=False)  # test_only: no validation split
    return trainer, dataset_of(train), test


def implicit_estimator(model, overrides):
    """The estimator implicit's own checkerboard test fits for `model`, built directly from implicit."""
    import implicit.cpu.als
    import implicit.cpu.bpr
    import implicit.cpu.lmf
    from implicit import nearest_neighbours

    o = overrides
    if model == "ImplicitALS":
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=o["factors"], regularization=o["regularization"], iterations=o["iterations"],
            random_state=o["seed"])
    if model == "ImplicitBPR":  # one thread, as ours with reproducibility: True (Hogwild SGD is not deterministic)
        return implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=o["factors"], regularization=o["regularization"], learning_rate=o["learning_rate"],
            iterations=o["iterations"], num_threads=1, random_state=o["seed"])
    if model == "ImplicitLMF":
        return implicit.cpu.lmf.LogisticMatrixFactorization(
            factors=o["factors"], regularization=o["regularization"], learning_rate=o["learning_rate"],
            iterations=o["iterations"], neg_prop=o["neg_prop"], random_state=o["seed"])
    kinds = {"cosine": nearest_neighbours.CosineRecommender, "tfidf": nearest_neighbours.TFIDFRecommender,
             "bm25": lambda K: nearest_neighbours.BM25Recommender(K=K, K1=o["bm25_K1"], B=o["bm25_B"])}
    return kinds[o["knn_similarity"]](K=o["k"])


@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")
@pytest.mark.parametrize("case", list(IMPLICIT_CHECKERBOARD_CASES))
def test_implicit_checkerboard_ranks_each_users_withheld_diagonal_item_first(tmp_path, case):
    """implicit's known answer through our wrapper and RecBole's evaluator: every user's top unseen item is its
    withheld diagonal item. Every model reaches 50/50 here, as implicit itself does when fitted on the fixture (checked
    in the fixture's order and in RecBole's id order), so the known answer is asserted for all of them.

    Fitted with RecBole's padding user and item in the matrix, ALS got 49/50 here (the padding shifts implicit's
    random initialisation), while the others still reached 50/50."""
    model, overrides = IMPLICIT_CHECKERBOARD_CASES[case]
    trainer, train, test = fit_on_implicit_checkerboard(tmp_path / "data", model, overrides)
    assert train.inter_num == implicit_checkerboard().nnz  # the training split is the fixture, diagonal withheld
    hits = trainer.evaluate(test, load_best_model=False)["hit@1"] * CHECKERBOARD_SIZE
    assert round(hits) == CHECKERBOARD_SIZE, f"{case}: diagonal item first for {hits:.0f}/{CHECKERBOARD_SIZE} users"


@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")
@pytest.mark.parametrize("case", list(IMPLICIT_CHECKERBOARD_CASES))
def test_fit_equals_implicit_fitted_on_the_real_users_and_items(tmp_path, case):
    """Our factors / similarities are implicit's, fitted with the same seed on the real users x items (no padding
    row or column), shifted down one row (and column) to RecBole's ids; the padding row is zeros / empty.

    implicit's matrix is rebuilt from the tokens (not from our training matrix), in RecBole's id order: row r =
    RecBole user r + 1."""
    model, overrides = IMPLICIT_CHECKERBOARD_CASES[case]
    trainer, train, _ = fit_on_implicit_checkerboard(tmp_path / "data", model, overrides)
    users = train.token2id(train.uid_field, [f"u{u}" for u in range(CHECKERBOARD_SIZE)])
    items = train.token2id(train.iid_field, [f"i{i}" for i in range(CHECKERBOARD_SIZE)])
    assert sorted(users) == sorted(items) == list(range(1, CHECKERBOARD_SIZE + 1))
    likes = implicit_checkerboard()[np.argsort(users)][:, np.argsort(items)]

    with threadpool_limits(1, "blas"):
        bare = implicit_estimator(model, overrides)
        bare.fit(likes, show_progress=False)
    ours = trainer.model
    if model == "ImplicitItemKNN":
        similarity = ours.similarity.toarray()
        np.testing.assert_array_equal(similarity[1:, 1:], bare.similarity.toarray())
        assert not similarity[0].any() and not similarity[:, 0].any()
        return
    np.testing.assert_array_equal(ours.user_factors[1:].numpy(), bare.user_factors)
    np.testing.assert_array_equal(ours.item_factors[1:].numpy(), bare.item_factors)
    assert not ours.user_factors[0].any() and not ours.item_factors[0].any()


def test_padding_is_dropped_for_implicit_and_restored_after():
    from mmrecbole.model.external.implicit_common import with_padding_item, with_padding_row, without_padding

    padded = sp.csr_matrix(np.array([[0, 0, 0], [0, 1, 2], [0, 0, 3]], dtype=np.float32))
    np.testing.assert_array_equal(without_padding(padded).toarray(), [[1, 2], [0, 3]])
    np.testing.assert_array_equal(with_padding_item(without_padding(padded)).toarray(), padded.toarray())
    np.testing.assert_array_equal(with_padding_row(np.ones((2, 3))), [[0, 0, 0], [1, 1, 1], [1, 1, 1]])
    for row, column in [(0, 1), (1, 0)]:  # a value for the padding user / item would be lost: refused
        bad = padded.tolil()
        bad[row, column] = 1.0
        with pytest.raises(RuntimeError, match="padding"):
            without_padding(bad.tocsr())


def test_item_knn_counts_its_kept_neighbour_similarities_as_its_parameters(ring_data_path):
    config = Config("ImplicitItemKNN", "planted", config_dict=settings(ring_data_path, k=3))
    _, train, valid, _, model = build(config)
    assert learned_value_count(model) == 0  # nothing fitted yet
    make_trainer(config, model).fit(train, valid, saved=False)
    n_items = model.similarity.shape[0]
    assert n_items < learned_value_count(model) <= 3 * n_items  # k = 3: at most 3 kept neighbours per item


# ---- item-kNN variants ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")  # implicit's kNN weighting warns about itself
@pytest.mark.parametrize("similarity", ["cosine", "bm25", "tfidf"])
def test_item_knn_scores_are_implicits_recommend_scores(ring_data_path, similarity):
    from implicit import nearest_neighbours

    config = Config("ImplicitItemKNN", "planted", config_dict=settings(ring_data_path, knn_similarity=similarity, k=10))
    _, train, valid, test, model = build(config)
    trainer = make_trainer(config, model)
    trainer.fit(train, valid, saved=False)
    assert trainer.evaluate(test, load_best_model=False)["hit@5"] >= 0.8  # the next ring item neighbours the walk

    # implicit on the real users x items (RecBole's padding row/column 0 dropped: implicit's item n = RecBole's n + 1).
    history = dataset_of(train).inter_matrix(form="csr").astype(np.float32)[1:, 1:]
    bare = {"cosine": nearest_neighbours.CosineRecommender(K=10), "tfidf": nearest_neighbours.TFIDFRecommender(K=10),
            "bm25": nearest_neighbours.BM25Recommender(K=10, K1=1.2, B=0.75)}[similarity]
    bare.fit(history, show_progress=False)
    users = np.arange(1, 21)
    ids, expected = bare.recommend(users - 1, history[users - 1], N=8, filter_already_liked_items=False)
    interaction = next(iter(test))[0]
    interaction.update(type(interaction)({config["USER_ID_FIELD"]: torch.from_numpy(users)}))
    ours = model.full_sort_predict(interaction).view(len(users), -1).double().numpy()
    np.testing.assert_allclose(np.take_along_axis(ours, ids.astype(np.int64) + 1, axis=1), expected, rtol=1e-5)
    np.testing.assert_allclose(ours.max(axis=1), expected[:, 0], rtol=1e-5)  # nothing outranks implicit's top item


# ---- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, overrides, words", [
    ("ImplicitItemKNN", {"knn_similarity": "jaccard"}, ["knn_similarity", "cosine, bm25, tfidf", "jaccard"]),
    ("ImplicitALS", {"confidence": "clicks"}, ["confidence", "count, rating"]),
    ("ImplicitALS", {"factors": 0}, ["factors", ">= 1"]),
    ("ImplicitBPR", {"learning_rate": 0.0}, ["learning_rate", "> 0"]),  # refused by Config's NUMERIC_RANGES
    ("ImplicitItemKNN", {"bm25_B": 1.5}, ["bm25_B", "<= 1.0"]),
])
def test_bad_settings_name_the_key_and_the_bound(ring_data_path, model, overrides, words):
    with pytest.raises(ConfigError) as err:
        build(Config(model, "planted", config_dict=settings(ring_data_path, **overrides)))
    assert all(word in str(err.value) for word in words), str(err.value)


def test_confidence_from_ratings_is_one_plus_alpha_times_rating(ring_data_path):
    config = Config("ImplicitALS", "planted", config_dict=settings(ring_data_path, confidence="rating", alpha=2.0))
    _, train, _, _, model = build(config)
    dataset = dataset_of(train)
    matrix = model.training_matrix(dataset).tocoo()
    ratings = dataset.inter_matrix(form="csr", value_field="rating")
    expected = 1.0 + 2.0 * np.asarray(ratings[matrix.row, matrix.col]).ravel()
    np.testing.assert_allclose(matrix.data, expected)
    assert len(set(matrix.data.tolist())) > 1  # ratings 1..5, not a constant


# ---- the trainer fits once --------------------------------------------------------------------------------------
def test_fit_once_trainer_fits_once_and_never_iterates_the_training_loader(ring_data_path, monkeypatch):
    config = Config("ImplicitALS", "planted", config_dict=settings(ring_data_path, factors=8, epochs=50))
    _, train, valid, _, model = build(config)
    trainer = make_trainer(config, model)

    fitted_on = []
    fit_from = model.fit_from
    monkeypatch.setattr(model, "fit_from", lambda dataset, show_progress=False: (
        fitted_on.append(dataset), fit_from(dataset, show_progress=show_progress)))

    def no_epochs(*args, **kwargs):
        raise AssertionError("a fit-once model must not run training epochs")

    monkeypatch.setattr(trainer, "_train_epoch", no_epochs)
    assert type(train) is not type(valid)
    monkeypatch.setattr(type(train), "__iter__", no_epochs)

    reported = []
    score, result = trainer.fit(train, valid, saved=True, callback_fn=lambda epoch, s: reported.append((epoch, s)))
    assert len(fitted_on) == 1 and fitted_on[0] is dataset_of(train)
    assert reported == [(0, score)] and result["ndcg@5"] == score > 0
    assert trainer.train_loss_dict == {} and trainer.fit_seconds > 0
    assert trainer.dataset_fingerprint["n_items"] == dataset_of(train).item_num  # SafeCheckpointMixin.fit ran
    assert os.path.isfile(trainer.saved_model_file)
