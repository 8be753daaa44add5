"""Serving: bundles, the Recommender API, explanations, the CLI and the HTTP service, on planted data with known
answers. (Every model class also checks its bundle's scores against the trained model: tests/conformance.py.)"""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from mmrecbole import quick_start
from mmrecbole.cli import main
from mmrecbole.errors import CheckpointError, ServingError, UnknownIdError
from mmrecbole.serving import Recommender
from mmrecbole.serving.bundle import FORMAT
from tests.planted import FAST, ring_walks, write_ring_dataset
from tests.planted_mm import write_planted_mm

SEQ = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005}
MM = {**SEQ, "window_context": 4}


def _train(root, model, dataset, data_path, **settings):
    """quick_start.run in its own folder (module fixtures run outside the per-test working directory); the result."""
    folder = os.path.join(str(root), model)
    os.makedirs(folder, exist_ok=True)
    config = {**FAST, "data_path": data_path, "checkpoint_dir": os.path.join(folder, "saved"), **settings}
    return quick_start.run(model, dataset, config_dict=config, log_dir=os.path.join(folder, "log"), console_log=False)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-ring")
    return root, write_ring_dataset(root / "data")


@pytest.fixture(scope="module")
def sasrec(ring):
    root, data_path = ring
    return _train(root, "SASRec", "planted", data_path, epochs=30, **SEQ)


@pytest.fixture(scope="module")
def als(ring):
    root, data_path = ring
    return _train(root, "ImplicitALS", "planted", data_path)


@pytest.fixture(scope="module")
def planted_mm(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-mm")
    return (root, *write_planted_mm(root / "data"))


def _mm(planted_mm, model, **settings):
    root, data_path, files, _ = planted_mm
    name = f"{model}-{'-'.join(f'{k}{v}' for k, v in settings.items())}"
    return _train(os.path.join(str(root), name), model, "plantedmm", data_path, mm_feature_files=files, epochs=2,
                  **settings)


@pytest.fixture(scope="module")
def mmsasrec(planted_mm):
    return _mm(planted_mm, "MMSASRec", **MM)


def _walks():
    return {str(user): [str(i) for i in items] for user, items in ring_walks()}


# -- the bundle -------------------------------------------------------------------------------------------------
def test_training_writes_a_bundle_that_holds_every_users_history_by_raw_id(sasrec, als):
    walks = _walks()
    for result in (sasrec, als):  # a sequential dataset (augmented in place) and a general one
        assert result["bundle"] == os.path.splitext(result["checkpoint"])[0] + ".bundle"
        recommender = Recommender.load(result["bundle"])
        assert sorted(recommender.known_users(), key=int) == sorted(walks, key=int)
        for user, items in walks.items():
            assert recommender.history_of(user) == items


def test_the_bundle_loads_without_the_dataset_folder(ring, sasrec, tmp_path):
    root, data_path = ring
    moved = tmp_path / "elsewhere"
    shutil.move(os.path.join(data_path, "planted"), moved)
    try:
        recommender = Recommender.load(sasrec["bundle"])
        assert recommender.load_seconds < 5
        assert len(recommender.recommend(["1"], k=3)[0].items) == 3
    finally:
        shutil.move(str(moved), os.path.join(data_path, "planted"))


def test_a_bundle_with_pickled_objects_or_a_checkpoint_is_refused(sasrec, tmp_path):
    unsafe = tmp_path / "unsafe.bundle"
    torch.save({"format": FORMAT, "payload": object()}, unsafe)
    with pytest.raises(CheckpointError, match="pickled"):
        Recommender.load(unsafe)
    with pytest.raises(CheckpointError, match="a checkpoint: write its bundle"):
        Recommender.load(sasrec["checkpoint"])
    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(open(sasrec["bundle"], "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Recommender.load(truncated)


# -- known answers ----------------------------------------------------------------------------------------------
def test_sequential_model_recommends_the_planted_next_item_first(sasrec):
    # Every user walked 10 consecutive items of a ring: the next one is the answer (their test item is the last walked).
    recommender = Recommender.load(sasrec["bundle"])
    walks = {user: [int(i) for i in items] for user, items in _walks().items()}
    ring_size = 20
    expected = {user: str((items[-1] - 1) // ring_size * ring_size + items[-1] % ring_size + 1)
                for user, items in walks.items()}
    answers = recommender.recommend(list(walks), k=5)
    first = np.mean([a.items[0].item_id == expected[a.user] for a in answers])
    top5 = np.mean([expected[a.user] in [i.item_id for i in a.items] for a in answers])
    assert first >= 0.7 and top5 >= 0.9, (first, top5)
    for answer in answers:  # seen items are never recommended
        assert not {i.item_id for i in answer.items} & set(_walks()[answer.user])


def test_batch_equals_one_by_one_and_a_history_request_equals_the_users_own(sasrec, als):
    for result in (sasrec, als):
        recommender = Recommender.load(result["bundle"])
        users = recommender.known_users()
        batch = recommender.recommend(users, k=7, batch_size=16)
        for answer in batch[:20]:
            single = recommender.recommend([answer.user], k=7)[0]
            np.testing.assert_allclose([i.score for i in single.items], [i.score for i in answer.items], rtol=1e-5)
            for one, batched in zip(single.items, answer.items):  # the same list; tied scores may swap places
                assert one.item_id == batched.item_id or abs(one.score - batched.score) <= 1e-5 * abs(one.score), \
                    (single.items, answer.items)
    recommender = Recommender.load(sasrec["bundle"])
    for user in ["1", "2", "3"]:  # a sequential model reads the same input either way: identical answers
        own = recommender.recommend([user], k=7)[0]
        session = recommender.recommend_history(recommender.history_of(user), k=7)
        assert [(i.item_id, i.score) for i in own.items] == [(i.item_id, i.score) for i in session.items]


def test_als_history_request_is_the_least_squares_fold_in(als):
    # An independent numpy fold-in: x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p, c = 1 + alpha for history items.
    recommender = Recommender.load(als["bundle"])
    model = recommender.model
    factors = model.item_factors.numpy().astype(np.float64)
    history = recommender.history_of("5")[:6]
    rows = [recommender.item_index[i] for i in history]
    confidence = 1.0 + model.alpha
    Y = factors
    A = Y.T @ Y + (confidence - 1.0) * Y[rows].T @ Y[rows] + model.regularization * np.eye(Y.shape[1])
    x = np.linalg.solve(A, confidence * Y[rows].sum(0))
    expected = Y @ x
    answer = recommender.recommend_history(history, k=10)
    order = np.argsort(-np.where(np.isin(np.arange(len(expected)), [0] + rows), -np.inf, expected))[:10]
    assert [i.item_id for i in answer.items] == [recommender.bundle.item_ids[j] for j in order]
    np.testing.assert_allclose([i.score for i in answer.items], expected[order], rtol=2e-3, atol=1e-4)


# -- explanations -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, settings", [("MMSASRec", {**MM, "fusion": "sum"}),
                                             ("MMSASRec", {**MM, "fusion": "gate"}),
                                             ("MMSASRec", {**MM, "fusion": "concat"}),
                                             ("MMGRU4Rec", {"embedding_size": 32, "hidden_size": 32,
                                                            "MAX_ITEM_LIST_LENGTH": 10, "window_context": 4}),
                                             ("VBPR", {"embedding_size": 16})])
def test_source_contributions_sum_to_the_score(planted_mm, model, settings):
    recommender = Recommender.load(_mm(planted_mm, model, **settings)["bundle"])
    for answer in recommender.recommend(recommender.known_users()[:10], k=5, explain=True):
        for item in answer.items:
            assert set(item.contributions) >= {"id", "text", "image"}
            assert sum(item.contributions.values()) == pytest.approx(item.score, rel=1e-4, abs=1e-5)
            assert sum(item.shares.values()) == pytest.approx(1.0)
            for modality, near in item.neighbours.items():
                history = set(recommender.history_of(answer.user))
                assert 1 <= len(near) <= 3 and {n["item_id"] for n in near} <= history
                sims = [n["similarity"] for n in near]
                assert sims == sorted(sims, reverse=True)


def test_attention_weights_cover_the_history_window(mmsasrec):
    recommender = Recommender.load(mmsasrec["bundle"])
    answer = recommender.recommend(["4"], k=3, explain=True)[0]
    history = recommender.history_of("4")[-10:]
    assert answer.attention and all(a["item_id"] in history for a in answer.attention)
    assert all(1 <= a["position"] <= len(history) for a in answer.attention)
    with torch.no_grad():
        weights = recommender.model.history_attention(recommender.sequence_interaction(
            [np.array([recommender.item_index[i] for i in history])]))
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-4)


# -- bad requests -----------------------------------------------------------------------------------------------
def test_bad_requests_name_what_is_wrong(sasrec, planted_mm):
    recommender = Recommender.load(sasrec["bundle"])
    with pytest.raises(UnknownIdError, match="unknown user id nobody"):
        recommender.recommend(["nobody"])
    with pytest.raises(UnknownIdError, match="unknown item id 9999"):
        recommender.recommend_history(["1", "9999"])
    with pytest.raises(ServingError, match="k must be an integer >= 1"):
        recommender.recommend(["1"], k=0)
    with pytest.raises(ServingError, match="non-empty list"):
        recommender.recommend_history([])
    vbpr = Recommender.load(_mm(planted_mm, "VBPR", embedding_size=16)["bundle"])
    with pytest.raises(ServingError, match="VBPR cannot recommend from a history"):
        vbpr.recommend_history(["1", "2"])


# -- command line -----------------------------------------------------------------------------------------------
def test_cli_recommends_as_table_json_and_csv_and_writes_missing_bundles(sasrec, capsys, tmp_path):
    checkpoint = tmp_path / "copy.pth"
    shutil.copy(sasrec["checkpoint"], checkpoint)
    assert main(["--recommend", f"--checkpoint={checkpoint}", "--users=1,2", "--k=3"]) == 0
    out, err = capsys.readouterr()
    assert (tmp_path / "copy.bundle").is_file() and "writing the serving bundle" in err
    assert "SASRec on planted, user 1" in out and out.count("\n   1  ") == 2
    assert main(["--recommend", f"--checkpoint={tmp_path / 'copy.bundle'}", "--history=1,2,3", "--k=4",
                 "--format=json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["user"] is None and len(answer["items"]) == 4 and answer["items"][0]["rank"] == 1
    assert main(["--recommend", f"--checkpoint={sasrec['bundle']}", "--users=1", "--k=2", "--format=csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("user,rank,item_id,title,score") and len(lines) == 3


@pytest.mark.parametrize("argv, message", [
    (["--users=nobody"], "unknown user id nobody"),
    (["--users=1", "--k=0"], "k must be an integer >= 1"),
    (["--users=1", "--history=2"], "exactly one of --users"),
    (["--users=1", "--format=xml"], "invalid choice"),
])
def test_cli_bad_requests_exit_2_with_one_line(sasrec, capsys, argv, message):
    assert main(["--recommend", f"--checkpoint={sasrec['bundle']}", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_writes_a_bundle_from_a_checkpoint(sasrec, tmp_path, capsys):
    target = tmp_path / "out.bundle"
    assert main(["--bundle", f"--checkpoint={sasrec['checkpoint']}", f"--output={target}"]) == 0
    assert Recommender.load(target).history_of("1") == _walks()["1"]


# -- HTTP -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(mmsasrec):
    from fastapi.testclient import TestClient

    from mmrecbole.serving.http import create_app

    return TestClient(create_app(Recommender.load(mmsasrec["bundle"])))


def test_http_recommends_for_a_user_and_a_history(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "MMSASRec" and health["users"] == 200
    by_user = client.get("/recommend", params={"user": "7", "k": 4, "explain": 1}).json()
    assert by_user["user"] == "7" and len(by_user["items"]) == 4 and by_user["items"][0]["contributions"]
    history = client.get("/users/7/history").json()["items"]
    session = client.post("/recommend", json={"history": [i["item_id"] for i in reversed(history)], "k": 4}).json()
    assert [i["item_id"] for i in session["items"]] == [i["item_id"] for i in by_user["items"]]
    assert client.get("/openapi.json").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "MMSASRec on plantedmm" in page.text


@pytest.mark.parametrize("method, url, body, status, message", [
    ("get", "/recommend?user=nobody", None, 404, "unknown user id nobody"),
    ("get", "/recommend?user=1&k=0", None, 400, "k must be an integer >= 1"),
    ("get", "/recommend?user=1&k=abc", None, 422, "k: "),
    ("post", "/recommend", {"history": []}, 400, "non-empty list"),
    ("post", "/recommend", {"history": ["9999"]}, 404, "unknown item id 9999"),
    ("get", "/items/KNOWN/image", None, 404, "no image file"),  # the planted items have features, no image files
])
def test_http_bad_input_is_a_4xx_with_one_line(client, method, url, body, status, message):
    url = url.replace("KNOWN", client.get("/users/1/history").json()["items"][0]["item_id"])
    response = getattr(client, method)(url, **({"json": body} if body is not None else {}))
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail


# -- new items --------------------------------------------------------------------------------------------------
def _duplicate(recommender, item_id):
    """{modality: (its feature row, present)} of an existing item, as a new item would bring them."""
    row = recommender.item_index[item_id]
    return {m: (t["matrix"][row:row + 1].numpy(), t["mask"][row:row + 1].numpy())
            for m, t in recommender.bundle.content.items()}


def test_a_content_duplicate_of_an_item_ranks_next_to_it(planted_mm):
    # ID-free: items are what their features say, so a duplicate scores exactly like the original, for every user.
    recommender = Recommender.load(_mm(planted_mm, "MMSASRec", use_id=False, **MM)["bundle"])
    before = recommender.recommend([str(u) for u in range(1, 9)], k=10)
    original = before[0].items[0].item_id
    assert recommender.add_item_vectors(["new-1"], _duplicate(recommender, original), {"title": ["A copy"]}) == \
        ["new-1"]
    everything = recommender.n_items - 1
    users = [a.user for a in before if original not in recommender.history_of(a.user)]
    assert users and users[0] == "1"
    for answer, old in zip(recommender.recommend(users, k=everything), [a for a in before if a.user in users]):
        ranks = {i.item_id: i for i in answer.items}
        copy, first = ranks["new-1"], ranks[original]
        assert abs(copy.rank - first.rank) == 1 and copy.score == pytest.approx(first.score, abs=1e-5)
        assert [i.item_id for i in answer.items if i.item_id != "new-1"][:10] == [i.item_id for i in old.items]
    assert recommender.item("new-1")["title"] == "A copy"
    assert recommender.recommend_history(["new-1"], k=3).history_length == 1  # a session may hold the new item
    saved = Recommender.load(recommender.save(os.path.join(planted_mm[0], "with-new-item.bundle")))
    assert saved.bundle.meta["rewritten_from"] == os.path.abspath(recommender.bundle.path)
    for a, b in zip(recommender.recommend(users, k=everything), saved.recommend(users, k=everything)):
        assert [(i.item_id, i.title) for i in a.items] == [(i.item_id, i.title) for i in b.items]
        np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], rtol=1e-5, atol=1e-6)


def test_a_new_item_of_an_id_model_is_scored_by_its_content_alone(mmsasrec):
    recommender = Recommender.load(mmsasrec["bundle"])
    original = recommender.recommend(["3"], k=1)[0].items[0].item_id
    recommender.add_item_vectors(["new-2"], _duplicate(recommender, original))
    ranked = {i.item_id: i for i in recommender.recommend(["3"], k=recommender.n_items - 1, explain=True)[0].items}
    copy, first = ranked["new-2"], ranked[original]
    assert copy.contributions["id"] == 0.0
    for modality in ("text", "image"):
        assert copy.contributions[modality] == pytest.approx(first.contributions[modality], abs=1e-5)
    assert copy.score == pytest.approx(first.score - first.contributions["id"], abs=1e-5)


def test_new_items_are_embedded_by_the_bundles_own_encoders(tmp_path, tiny_bert_dir, tiny_image_weights):
    from tests.feature_fixtures import TOY_ITEMS, write_toy_dataset, toy_settings

    toy = write_toy_dataset(str(tmp_path / "data"))
    settings = {**toy_settings(toy["data_path"], tiny_bert_dir, tiny_image_weights), **MM, "topk": [2],
                "metrics": ["Hit", "NDCG"], "valid_metric": "NDCG@2", "epochs": 1}
    settings.pop("data_path")
    result = _train(tmp_path, "MMSASRec", "toy", toy["data_path"], **settings)
    recommender = Recommender.load(result["bundle"])
    assert recommender.item("1")["title"] == "Star Wars" and recommender.item("1")["image"].endswith("1.jpg")
    images = tmp_path / "new-images"
    images.mkdir()
    shutil.copy(os.path.join(toy["image_dir"], "2.jpg"), images / "n2.jpg")
    title, year, genre, description = TOY_ITEMS["2"]
    row = {"item_id": "n2", "movie_title": title, "release_year": year, "genre": genre, "description": description}
    assert recommender.add_items([row, {"item_id": "n9", "movie_title": "Heat"}], image_dir=str(images)) == ["n2", "n9"]
    for modality in ("text", "image"):
        table = recommender.bundle.content[modality]
        copy, original = recommender.item_index["n2"], recommender.item_index["2"]
        torch.testing.assert_close(table["matrix"][copy], table["matrix"][original], rtol=1e-4, atol=1e-5)
    assert not recommender.bundle.content["image"]["mask"][recommender.item_index["n9"]]  # no image: "missing"
    assert recommender.item("n2")["title"] == title and "n9" in recommender.item_index
    with pytest.raises(ServingError, match="already in the catalogue"):
        recommender.add_items([row])
    recommender.bundle.meta["feature_provenance"]["text"]["recipe"]["pooling"] = "cls"
    from mmrecbole.errors import FeatureError

    with pytest.raises(FeatureError, match="recipe.pooling"):
        recommender.add_items([{**row, "item_id": "n3"}])


def test_models_without_content_refuse_new_items(sasrec):
    recommender = Recommender.load(sasrec["bundle"])
    with pytest.raises(ServingError, match="reads no item content"):
        recommender.add_item_vectors(["x"], {})


def test_http_adds_items(mmsasrec, planted_mm):
    from fastapi.testclient import TestClient

    from mmrecbole.serving.http import create_app

    recommender = Recommender.load(mmsasrec["bundle"])
    client = TestClient(create_app(recommender))
    # The planted tables were not built by an encoder (provenance "planted"): the service refuses to guess one.
    response = client.post("/items", json={"items": [{"item_id": "h1"}]})
    assert response.status_code == 400 and "encoder here differs" in response.json()["detail"]
    response = client.post("/items", json={"items": [{"nothing": 1}]})
    assert response.status_code == 400 and "needs its 'item_id'" in response.json()["detail"]
