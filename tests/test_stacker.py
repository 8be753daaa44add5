"""LGBMStacker (issue 8): the stacker class on synthetic frames, the end-to-end pipeline on planted data, leakage,
persistence, the base-model cache, settings and dispatch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmrecbole import PROJECT_ROOT, registry
from mmrecbole.config import Config
from mmrecbole.ensemble import base_models, candidates, evaluation, phases, pipeline
from mmrecbole.ensemble.settings import resolve
from mmrecbole.ensemble.stacker import LGBMStacker
from mmrecbole.errors import CheckpointError, ConfigError
from mmrecbole.quick_start import run
from tests.planted import FAST
from tests.planted_mm import write_planted_mm

QUICK_LGBM = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 5, "num_threads": 1,
              "verbosity": -1}


# -- the stacker on synthetic frames ------------------------------------------------------------------------------
def complementary_frames(n_users, seed, n_candidates=20, shuffle_labels=False):
    """Two base "models" that each know half the users' answers: model A puts the target far ahead for even users
    and scores at random for odd ones, model B the reverse. Returns (features [rows, 2], relevance, group sizes)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_candidates, 2))
    targets = rng.integers(n_candidates, size=n_users)
    users = np.arange(n_users)
    scores[users, targets, users % 2] += 4.0
    relevance = np.zeros((n_users, n_candidates), dtype=np.int32)
    relevance[users, targets] = 1
    if shuffle_labels:  # labels unrelated to the features
        relevance = np.zeros_like(relevance)
        relevance[users, rng.integers(n_candidates, size=n_users)] = 1
    return scores.reshape(-1, 2).astype(np.float32), relevance.reshape(-1), np.full(n_users, n_candidates)


def mean_ndcg_at_10(scores, relevance, group_sizes):
    """Single-target NDCG@10 (1 / log2(rank + 1) within the top 10), averaged over groups."""
    values, start = [], 0
    for size in group_sizes:
        s, r = scores[start:start + size], relevance[start:start + size]
        rank = int(np.sum(s > s[np.argmax(r)])) + 1
        values.append(1.0 / np.log2(rank + 1) if rank <= 10 else 0.0)
        start += size
    return float(np.mean(values))


def fit_synthetic(shuffle_labels=False, seed=3):
    train = complementary_frames(400, seed=1, shuffle_labels=shuffle_labels)
    held = complementary_frames(150, seed=2, shuffle_labels=shuffle_labels)
    stacker = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=seed)
    return stacker.fit(*train, ["score_a", "score_b"], eval_set=held)


def test_stacker_beats_both_models_on_held_out_users_and_shuffled_labels_do_not():
    x, relevance, sizes = complementary_frames(400, seed=9)
    single = [mean_ndcg_at_10(x[:, m], relevance, sizes) for m in (0, 1)]
    stacked = mean_ndcg_at_10(fit_synthetic().predict(x), relevance, sizes)
    control = mean_ndcg_at_10(fit_synthetic(shuffle_labels=True).predict(x), relevance, sizes)
    assert max(single) < 0.75, single  # each model alone is right for half the users only
    assert stacked >= max(single) + 0.2, (single, stacked)
    assert control <= max(single) + 0.02, (single, control)


def test_same_seed_same_model_and_save_load_round_trip(tmp_path):
    stacker = fit_synthetic()
    x, _, sizes = complementary_frames(100, seed=11)
    assert np.array_equal(stacker.predict(x), fit_synthetic().predict(x))
    folder = stacker.save(str(tmp_path / "stacker"), extra={"note": "test"})
    assert sorted(os.listdir(folder)) == ["feature_importance.tsv", "meta.json", "model.txt"]
    loaded = LGBMStacker.load(folder)
    assert np.array_equal(loaded.predict(x), stacker.predict(x))
    order = lambda s: [list(np.argsort(-g, kind="stable")) for g in np.split(s, np.cumsum(sizes)[:-1])]  # noqa: E731
    assert order(loaded.predict(x)) == order(stacker.predict(x))
    assert loaded.feature_importance() == pytest.approx(stacker.feature_importance())
    assert loaded.meta["extra"] == {"note": "test"} and loaded.best_iteration == stacker.best_iteration
    gains = stacker.feature_importance()
    assert set(gains) == {"score_a", "score_b"} and all(g > 0 for g in gains.values())


def test_load_refuses_an_interrupted_or_mixed_save(tmp_path):
    folder = fit_synthetic().save(str(tmp_path / "s"))
    with open(os.path.join(folder, "model.txt"), "a") as f:
        f.write("\n")
    with pytest.raises(CheckpointError, match="does not match"):
        LGBMStacker.load(folder)
    os.remove(os.path.join(folder, "meta.json"))
    with pytest.raises(CheckpointError, match="not a saved LGBMStacker"):
        LGBMStacker.load(folder)


# -- candidates and ranked lists on hand-made scores ------------------------------------------------------------------
class FixedScorer:
    """A base model stand-in that streams given score rows (users in two batches)."""

    def __init__(self, label, users, scores):
        self.label, self.users, self.scores = label, np.asarray(users), np.asarray(scores, dtype=np.float32)

    def batches(self, phase_name):
        import torch

        for rows in (slice(0, 1), slice(1, None)):
            yield self.users[rows], torch.from_numpy(self.scores[rows])


def test_pool_is_the_union_of_top_n_with_scores_ranks_and_sentinels():
    ninf = -np.inf
    phase = phases.Phase("valid", np.array([3, 7]), [np.array([2]), np.array([9])], [np.array([1]), np.array([])],
                         None)
    a = FixedScorer("A", [3, 7], [[ninf, ninf, 5, 4, 1, 0], [ninf, 3, 2, 1, 0, ninf]])
    b = FixedScorer("B", [7, 3], [[ninf, 0, 0, 1, 2, 3], [ninf, ninf, 0, 1, 2, 3]])  # another user order
    proposals = {s.label: candidates.top_n(s, phase, 2) for s in (a, b)}
    assert proposals["A"].tolist() == [[2, 3], [1, 2]] and proposals["B"].tolist() == [[5, 4], [5, 4]]
    pool = candidates.pool_candidates(phase, proposals)
    assert pool.group_sizes.tolist() == [4, 4]
    assert pool.items.tolist() == [2, 5, 3, 4, 1, 5, 2, 4]  # by best position any model gave, then item id
    assert pool.proposed[:, 0].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert pool.proposed[:, 1].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    scores, ranks, masked = candidates.scores_at_candidates(b, pool, n_items=6)
    assert scores.tolist() == [0, 3, 1, 2, 0, 3, 0, 2] and not masked.any()
    assert ranks.tolist() == [4, 1, 3, 2, 4, 1, 4, 2]  # 1 + items scored strictly higher: ties share a rank
    scores, ranks, masked = candidates.scores_at_candidates(a, pool, n_items=6)
    # User 7 has seen item 5 by A's masking: score NaN, rank = n_items (the sentinels), and the row is dropped.
    assert np.isnan(scores[5]) and ranks.tolist() == [1, 4, 2, 3, 1, 6, 2, 4]
    assert masked.tolist() == [False] * 5 + [True, False, False]
    kept = pool.keep(~masked)
    assert kept.group_sizes.tolist() == [4, 3] and kept.items.tolist() == [2, 5, 3, 4, 1, 2, 4]
    assert pool.recall() == 0.5 and pool.relevance().tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    ranked = evaluation.ranked_lists(kept, np.array([0, 9, 1, 1, 5, 5, 7]), k=5)
    assert ranked.tolist() == [[5, 3, 4, 2, 0], [4, 1, 2, 0, 0]]  # ties keep pool order; short lists padded


def test_top_n_breaks_ties_by_item_id_whatever_the_batch():
    import torch

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 300)).astype(np.float32)  # Pop-like integer scores: ties everywhere
    scores[:, 0] = -np.inf
    values, items = candidates.top_n_items(torch.from_numpy(scores), 20)
    expected = np.lexsort((np.broadcast_to(np.arange(300), scores.shape), -scores.astype(np.float64)))[:, :20]
    assert (items == expected).all() and (values == np.take_along_axis(scores, expected, axis=1)).all()
    halves = [candidates.top_n_items(torch.from_numpy(scores[rows]), 20)[1] for rows in (slice(0, 7), slice(7, None))]
    assert (np.concatenate(halves) == items).all()


# -- the pipeline on planted data ---------------------------------------------------------------------------------
def stacker_settings(data_path, files, work):
    return {**FAST, "topk": [5, 10], "metrics": ["Recall", "NDCG", "Hit", "ItemCoverage", "AveragePopularity"],
            "valid_metric": "NDCG@10", "data_path": data_path, "mm_feature_files": files,
            "checkpoint_dir": str(work / "saved"), "epochs": 2, "candidates_per_model": 10,
            "base_models": [{"name": "ImplicitALS", "settings": {"factors": 8, "iterations": 5}},
                            {"name": "MMSASRec", "label": "SASRec (ID only)",
                             "settings": {"modalities": [], "train_mode": "all_positions", "hidden_size": 16,
                                          "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 5,
                                          "window_context": 2}}],
            "lgbm_params": QUICK_LGBM, "early_stopping_rounds": 10}


def _settings_of(result):
    """The settings the fixture's run used (its stacker folder records them)."""
    meta = LGBMStacker.load(result["checkpoint"]).meta["extra"]
    return {**meta["shared_settings"], **meta["settings"]}


class TrainingSpy:
    """Counts base-model trainings and keeps what the stacker is fitted on."""

    def __init__(self, monkeypatch):
        self.trained, self.fitted_frames, self.frames = [], [], []
        real_train, real_fit, real_frame = (base_models.train_base_model, pipeline.fit_on_validation,
                                            pipeline.phase_frame)

        def train(spec, *args, **kwargs):
            self.trained.append(spec.label)
            return real_train(spec, *args, **kwargs)

        def fit(frame, settings):
            self.fitted_frames.append(frame)
            return real_fit(frame, settings)

        def frame(phase, *args, **kwargs):
            built = real_frame(phase, *args, **kwargs)
            self.frames.append(built)
            return built

        monkeypatch.setattr(base_models, "train_base_model", train)
        monkeypatch.setattr(pipeline, "fit_on_validation", fit)
        monkeypatch.setattr(pipeline, "phase_frame", frame)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    work = tmp_path_factory.mktemp("stacker")
    data_path, files, _ = write_planted_mm(work / "data", n_users=120)
    return data_path, files, work


@pytest.fixture(scope="module")
def first_run(planted):
    data_path, files, work = planted
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = TrainingSpy(monkeypatch)
        result = run("LGBMStacker", "plantedmm", config_dict=stacker_settings(data_path, files, work),
                     log_dir=str(work / "log"), console_log=False)
    return result, spy


def test_pipeline_returns_a_leaderboard_row_with_finite_metrics(planted, first_run):
    data_path, files, work = planted
    result, spy = first_run
    assert spy.trained == ["ImplicitALS", "SASRec (ID only)"]
    pop = run("Pop", "plantedmm", config_dict={**FAST, "topk": [5, 10], "valid_metric": "NDCG@10",
                                               "metrics": ["Recall", "NDCG", "Hit", "ItemCoverage",
                                                           "AveragePopularity"], "data_path": data_path,
                                               "checkpoint_dir": str(work / "pop")}, console_log=False)
    assert set(pop) <= set(result)  # every key a model's row has
    assert set(result["test"]) == set(pop["test"]) and set(result["valid"]) == set(pop["valid"])
    assert all(np.isfinite(v) for v in [*result["test"].values(), *result["valid"].values()])
    assert result["model"] == "LGBMStacker" and result["valid_metric"] == "ndcg@10"
    assert result["best_valid_score"] == result["valid"]["ndcg@10"]
    assert 0.0 < result["candidate_recall"]["test"] <= 1.0 and 0.0 < result["candidate_recall"]["valid"] <= 1.0
    assert result["test"]["hit@10"] <= result["candidate_recall"]["test"] + 1e-4  # the pool caps the stacker
    assert len(result["test_per_user"]["user_id"]) == len(result["test_per_user"]["ndcg@10"]) == 120
    assert np.mean(result["test_per_user"]["ndcg@10"]) == pytest.approx(result["test"]["ndcg@10"], abs=1e-4)
    assert {"text_similarity", "image_similarity", "ImplicitALS_rank", "SASRec_ID_only_score",
            "item_popularity"} <= set(result["feature_importance"])
    assert result["n_parameters"] > 0 and result["best_epoch"] >= 1
    json.dumps(result)  # a leaderboard stores it as JSON
    saved = LGBMStacker.load(result["checkpoint"])
    assert saved.feature_names == list(spy.fitted_frames[0].names)
    assert [b["label"] for b in saved.meta["extra"]["base_models"]] == ["ImplicitALS", "SASRec (ID only)"]


def test_ranking_by_one_base_models_scores_reproduces_its_own_recbole_metrics(first_run):
    # Same metric path as every other row: ranking the pool by ALS's own score must give ALS's own test metrics
    # (its top-10 is in the pool, and k <= candidates_per_model), as RecBole's trainer computed them.
    result, spy = first_run
    test_frame = spy.frames[-1]
    assert test_frame.pool.phase.name == "test"
    reference = phases.load_reference(resolve("plantedmm", config_dict=_settings_of(result)).protocol)
    protocol = resolve("plantedmm", config_dict=_settings_of(result)).protocol
    pool = test_frame.pool
    scores = np.asarray(test_frame.column("ImplicitALS_score"), dtype=np.float64)
    # Planted items with identical factors tie on ALS's score; RecBole's torch.topk orders tied items its own way
    # (it differs between CPUs), so the known answer is a range: ties broken against the user's targets (each
    # target after the items it ties with) up to ties broken for them.
    target = np.array([item in pool.phase.positives[user] for user, item in zip(pool.row_user, pool.items)])
    gaps = np.diff(np.unique(scores[np.isfinite(scores)]))
    nudge = target * (gaps.min() / 4 if len(gaps) else 1e-9)
    worst, _ = evaluation.evaluate_rankings(protocol, pool, scores - nudge, reference)
    best, _ = evaluation.evaluate_rankings(protocol, pool, scores + nudge, reference)
    als = next(b for b in result["base_models"] if b["label"] == "ImplicitALS")
    for name in ("recall@10", "ndcg@5", "ndcg@10", "hit@5", "hit@10"):
        assert worst[name] - 1e-4 <= als["test"][name] <= best[name] + 1e-4, name
    assert best["ndcg@10"] - worst["ndcg@10"] < 0.05  # the ties leave little room: the metric paths agree


def test_second_run_reuses_the_base_models(planted, first_run, monkeypatch):
    data_path, files, work = planted
    spy = TrainingSpy(monkeypatch)
    again = run("LGBMStacker", "plantedmm", config_dict=stacker_settings(data_path, files, work),
                log_dir=str(work / "log"), console_log=False)
    assert spy.trained == []
    assert all(b["reused"] for b in again["base_models"])
    assert again["test"] == first_run[0]["test"]  # same seed, same base models: the same stacker
    other = stacker_settings(data_path, files, work)
    other["base_models"][0]["settings"]["factors"] = 4  # one base model changes: only it retrains
    run("LGBMStacker", "plantedmm", config_dict=other, log_dir=str(work / "log"), console_log=False)
    assert spy.trained == ["ImplicitALS"]


def test_test_targets_and_scores_never_reach_the_training_data(planted, first_run, monkeypatch):
    data_path, files, work = planted
    marker_item, marker_score = 1, 12345.0
    clean_spy = TrainingSpy(monkeypatch)
    clean = run("LGBMStacker", "plantedmm", config_dict=stacker_settings(data_path, files, work),
                log_dir=str(work / "log"), console_log=False)

    real_reference, real_batches = phases.load_reference, candidates.BaseScorer.batches

    def planted_reference(config):  # every test target becomes one marker item
        reference = real_reference(config)
        test = reference.phases["test"]
        test.positives = [np.array([marker_item]) for _ in test.users]
        return reference

    def planted_batches(self, phase_name):  # test-phase scores get a marker offset
        for users, scores in real_batches(self, phase_name):
            yield users, scores + marker_score if phase_name == "test" else scores

    monkeypatch.setattr(phases, "load_reference", planted_reference)
    monkeypatch.setattr(candidates.BaseScorer, "batches", planted_batches)
    marked_spy = TrainingSpy(monkeypatch)
    marked = run("LGBMStacker", "plantedmm", config_dict=stacker_settings(data_path, files, work),
                 log_dir=str(work / "log"), console_log=False)

    fitted_clean, fitted_marked = clean_spy.fitted_frames[0], marked_spy.fitted_frames[0]
    assert fitted_marked.pool.phase.name == "valid"
    assert np.array_equal(fitted_clean.matrix, fitted_marked.matrix, equal_nan=True)
    assert np.array_equal(fitted_clean.pool.relevance(), fitted_marked.pool.relevance())
    assert np.nanmax(fitted_marked.matrix) < marker_score
    # The markers did reach the test phase, so this test would see a leak.
    test_frame = marked_spy.frames[-1]
    assert test_frame.pool.phase.name == "test" and np.nanmax(test_frame.matrix) >= marker_score
    assert marked["test"] != clean["test"] and marked["valid"] == clean["valid"]
    # Positive labels are the validation items, never the (different) test items.
    pool, relevance = fitted_clean.pool, fitted_clean.pool.relevance()
    reference = real_reference(resolve("plantedmm", config_dict=stacker_settings(data_path, files, work)).protocol)
    valid_phase, test_phase = reference.phases["valid"], reference.phases["test"]
    assert np.array_equal(valid_phase.users, test_phase.users)
    for u in range(len(valid_phase.users)):
        rows = slice(pool.offsets[u], pool.offsets[u + 1])
        labelled = set(pool.items[rows][relevance[rows] == 1].tolist())
        assert labelled <= set(valid_phase.positives[u].tolist())
        assert not labelled & (set(test_phase.positives[u].tolist()) - set(valid_phase.positives[u].tolist()))


# -- settings, dispatch, CLI ----------------------------------------------------------------------------------------
def test_settings_are_strict_and_the_hash_follows_base_models(ring_data_path):
    base = {"data_path": ring_data_path, **FAST, "candidates_per_model": 10,
            "base_models": ["Pop", {"name": "BPR", "settings": {"embedding_size": 8}}]}
    with pytest.raises(ConfigError, match="unknown config key 'candidates_per_modl'.*did you mean 'candidates_per_model'"):
        resolve("planted", config_dict={**base, "candidates_per_modl": 3})
    with pytest.raises(ConfigError, match="lgbm_params.num_leafs"):
        resolve("planted", config_dict={**base, "lgbm_params": {"num_leafs": 3}})
    with pytest.raises(ConfigError, match="lgbm_params.objective"):
        resolve("planted", config_dict={**base, "lgbm_params": {"objective": "binary"}})
    with pytest.raises(ConfigError, match=r"candidates_per_model .* must be >= max\(topk\) = 5, got 3"):
        resolve("planted", config_dict={**base, "candidates_per_model": 3})
    with pytest.raises(ConfigError, match="base model BPR: unknown config key 'embeding_size'"):
        resolve("planted", config_dict={**base, "base_models": [{"name": "BPR", "settings": {"embeding_size": 8}}]})
    with pytest.raises(ConfigError, match="sets \\['topk'\\]"):
        resolve("planted", config_dict={**base, "base_models": [{"name": "BPR", "settings": {"topk": [3]}}]})
    with pytest.raises(ConfigError, match="labels must be unique"):
        resolve("planted", config_dict={**base, "base_models": ["BPR", "BPR"]})
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
        resolve("planted", config_dict={**base, "valid_user_fraction": 1.0})
    with pytest.raises(ConfigError, match="unknown config key 'candidates_per_model'"):
        Config("BPR", "planted", config_dict={"data_path": ring_data_path, "candidates_per_model": 10})
    # a shared model key goes to the base models that have it, and is refused when none has it
    with pytest.raises(ConfigError, match=r"'n_layers' \(config_dict\) is a setting of .*, not of any of "
                                          "LGBMStacker's base models \(Pop, BPR\)"):
        resolve("planted", config_dict={**base, "n_layers": 2})
    shared = resolve("planted", config_dict={**base, "embedding_size": 16,
                                             "base_models": ["Pop", "BPR", {"name": "MMGRU4Rec", "settings": {
                                                 "modalities": []}}]})
    by_label = {b.label: b.config for b in shared.base_models}
    assert by_label["BPR"]["embedding_size"] == 16 and by_label["MMGRU4Rec"]["embedding_size"] == 16
    assert "embedding_size" not in by_label["Pop"].external_config_dict

    planned = pipeline.plan("planted", base)
    assert planned == pipeline.plan("planted", {**base, "seed": 99, "show_progress": True})
    changed = {**base, "base_models": ["Pop", {"name": "BPR", "settings": {"embedding_size": 16}}]}
    assert pipeline.plan("planted", changed).config_hash != planned.config_hash
    assert pipeline.plan("planted", {**base, "candidates_per_model": 12}).config_hash != planned.config_hash
    assert not planned.uses_content  # the ring data has no feature tables


def test_registry_lists_the_pipeline_and_the_leaderboard_plans_it(ring_data_path, tmp_path):
    from mmrecbole.leaderboard import LeaderboardSpec, ModelEntry
    from mmrecbole.leaderboard.runner import plan

    assert "LGBMStacker" in registry.available_models()["mmrecbole"]
    assert registry.get_pipeline("LGBMStacker") is pipeline and registry.get_pipeline("BPR") is None
    with pytest.raises(ConfigError, match="did you mean LGBMStacker"):
        registry.get_model("LGBMStaker")
    spec = LeaderboardSpec(dataset="planted", seeds=[1], output_dir=str(tmp_path),
                           settings={"data_path": ring_data_path, "topk": [5], "valid_metric": "NDCG@5"},
                           models=[ModelEntry("LGBMStacker", "stack", {"candidates_per_model": 10,
                                                                       "base_models": ["Pop", "BPR"]})])
    (planned,) = plan(spec)
    assert planned.hash == pipeline.plan("planted", planned.settings).config_hash
    bad = LeaderboardSpec(dataset="planted", seeds=[1], output_dir=str(tmp_path),
                          settings={"data_path": ring_data_path},
                          models=[ModelEntry("LGBMStacker", "stack", {"candidates_per_modl": 10})])
    with pytest.raises(ConfigError, match="candidates_per_modl"):
        plan(bad)


def test_a_stacker_row_reuses_the_leaderboards_model_rows(ring_data_path, tmp_path):
    from mmrecbole.leaderboard import LeaderboardSpec, ModelEntry, run_leaderboard

    als = {"factors": 8, "iterations": 5}
    spec = LeaderboardSpec(
        dataset="planted", seeds=[1], output_dir=str(tmp_path / "board"), cache_dir=str(tmp_path / "cache"),
        settings={"data_path": ring_data_path, "topk": [5], "valid_metric": "NDCG@5"},
        models=[ModelEntry("ImplicitALS", "ALS", als), ModelEntry("Pop", "Pop"),
                ModelEntry("LGBMStacker", "stacker", {
                    "candidates_per_model": 10, "content_modalities": [], "lgbm_params": QUICK_LGBM,
                    "base_models": [{"name": "ImplicitALS", "settings": als}, "Pop"]})])
    outcome = run_leaderboard(spec, echo=lambda *_: None)
    assert not outcome["failures"]
    rows = {r["label"]: r for r in outcome["runs"]}
    stacked = rows["stacker"]["base_models"]
    assert [b["reused"] for b in stacked] == [True, True]  # the rows' own checkpoints, not retrained
    assert [b["checkpoint"] for b in stacked] == [rows["ALS"]["checkpoint"], rows["Pop"]["checkpoint"]]
    assert rows["stacker"]["uses_content"] is False and "| stacker" in outcome["report"]["markdown"]


def test_cli_bad_stacker_key_exits_2_with_one_line(ring_data_path):
    proc = subprocess.run([sys.executable, os.path.join(PROJECT_ROOT, "run_recbole_mm.py"), "--model=LGBMStacker",
                           "--dataset=planted", f"--data_path={ring_data_path}", "--early_stoping_rounds=5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'early_stoping_rounds' in command-line flag" in lines[0]
    assert "did you mean 'early_stopping_rounds'" in lines[0] and "Traceback" not in proc.stderr
