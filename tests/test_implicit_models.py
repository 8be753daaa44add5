"""implicit's ALS / BPR / LMF / item-kNN under RecBole's protocol (issue 5).

The conformance contract, metric parity with implicit's own `recommend` + numpy metrics, a checkerboard with a known
answer, the item-kNN variants, settings errors, and the fit-once trainer.
"""
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from mmrecbole import compat, registry
from mmrecbole.compat import dataset_of
from mmrecbole.config import Config
from mmrecbole.errors import ConfigError
from mmrecbole.quick_start import build, learned_value_count, load, run
from tests.conformance import RecommenderConformance
from tests.planted import FAST

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
        trainer = registry.get_trainer(model_class.type, name)
        assert trainer.__mro__[1] is compat.SafeCheckpointMixin and trainer.__mro__[2].__name__ == "FitOnceTrainer"


# ---- metric parity: our path == implicit's recommend + numpy metrics ------------------------------------------
def random_histories(n_users=60, n_items=40, seed=0):
    """{user token: [item tokens in time order]}: 6..14 distinct random items per user. Random histories make two
    items with identical scores (exact ties, which RecBole's and implicit's top-k break differently) unlikely; the
    ring data has them."""
    rng = np.random.default_rng(seed)
    return {str(u): [str(i) for i in rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(6, 15)),
                                                    replace=False)] for u in range(1, n_users + 1)}


def write_histories(root, histories, name):
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, items in histories.items():
            for step, item in enumerate(items):
                f.write(f"{user}\t{item}\t{1 + (int(user) + step) % 5}\t{int(user) * 1000 + step}\n")
    return str(root)


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

    # Same matrix shape (row/column 0 = RecBole's padding id) and seed -> implicit's own fit gives our factors.
    with threadpool_limits(1, "blas"):
        als = implicit.cpu.als.AlternatingLeastSquares(factors=8, regularization=0.5, alpha=1.0, iterations=10,
                                                       random_state=config["seed"])
        als.fit(train, show_progress=False)
    np.testing.assert_array_equal(als.user_factors, model.user_factors.numpy())
    np.testing.assert_array_equal(als.item_factors, model.item_factors.numpy())

    # RecBole never ranks the padding item 0; validation masks training items, test masks training + validation.
    for phase, seen, targets in [("valid", train, valid_items), ("test", seen_at_test, test_items)]:
        recommended, _ = als.recommend(users, seen[users], N=k, filter_already_liked_items=True, filter_items=[0])
        recall, ndcg = recall_ndcg(recommended, targets)
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
    # 24 users and 24 items (+ RecBole's padding row each) x 2 factors: what ALS learned, though no nn.Parameter holds it
    assert result["n_parameters"] == (25 + 25) * 2


def test_item_knn_counts_its_kept_neighbour_similarities_as_its_parameters(ring_data_path):
    config = Config("ImplicitItemKNN", "planted", config_dict=settings(ring_data_path, k=3))
    _, train, valid, _, model = build(config)
    assert learned_value_count(model) == 0  # nothing fitted yet
    registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model).fit(train, valid, saved=False)
    n_items = model.similarity.shape[0]
    assert n_items < learned_value_count(model) <= 3 * n_items  # k = 3: at most 3 kept neighbours per item


# ---- item-kNN variants ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")  # implicit's kNN weighting warns about itself
@pytest.mark.parametrize("similarity", ["cosine", "bm25", "tfidf"])
def test_item_knn_scores_are_implicits_recommend_scores(ring_data_path, similarity):
    from implicit import nearest_neighbours

    config = Config("ImplicitItemKNN", "planted", config_dict=settings(ring_data_path, knn_similarity=similarity, k=10))
    _, train, valid, test, model = build(config)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=False)
    assert trainer.evaluate(test, load_best_model=False)["hit@5"] >= 0.8  # the next ring item neighbours the walk

    history = dataset_of(train).inter_matrix(form="csr").astype(np.float32)
    bare = {"cosine": nearest_neighbours.CosineRecommender(K=10), "tfidf": nearest_neighbours.TFIDFRecommender(K=10),
            "bm25": nearest_neighbours.BM25Recommender(K=10, K1=1.2, B=0.75)}[similarity]
    bare.fit(history, show_progress=False)
    users = np.arange(1, 21)
    ids, expected = bare.recommend(users, history[users], N=8, filter_already_liked_items=False)
    interaction = next(iter(test))[0]
    interaction.update(type(interaction)({config["USER_ID_FIELD"]: torch.from_numpy(users)}))
    ours = model.full_sort_predict(interaction).view(len(users), -1).double().numpy()
    np.testing.assert_allclose(np.take_along_axis(ours, ids.astype(np.int64), axis=1), expected, rtol=1e-5)
    np.testing.assert_allclose(ours.max(axis=1), expected[:, 0], rtol=1e-5)  # nothing outranks implicit's top item


# ---- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, overrides, words", [
    ("ImplicitItemKNN", {"knn_similarity": "jaccard"}, ["knn_similarity", "cosine, bm25, tfidf", "jaccard"]),
    ("ImplicitALS", {"confidence": "clicks"}, ["confidence", "count, rating"]),
    ("ImplicitALS", {"factors": 0}, ["factors", ">= 1"]),
    ("ImplicitBPR", {"learning_rate": 0.0}, ["learning_rate", "> 0.0"]),
    ("ImplicitItemKNN", {"bm25_B": 1.5}, ["bm25_B", "<= 1.0"]),
])
def test_bad_settings_name_the_key_and_the_bound(ring_data_path, model, overrides, words):
    config = Config(model, "planted", config_dict=settings(ring_data_path, **overrides))
    with pytest.raises(ConfigError) as err:
        build(config)
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
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

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
