"""LGBMStacker on Dask (issue 24): `stacker_backend: dask` fits lightgbm.dask.DaskLGBMRanker on a 2-worker
LocalCluster and ranks a planted problem as the local fit does, query groups are never split across partitions,
early stopping is replayed with LightGBM's own callback, bad settings are refused in one line, the default stays
local, and the cluster is closed after the fit, also on error."""
from types import SimpleNamespace

import numpy as np
import pytest

from mmrecbole.ensemble import dask_backend, pipeline
from mmrecbole.ensemble.settings import resolve, stacker_defaults
from mmrecbole.ensemble.stacker import LGBMStacker
from mmrecbole.errors import ConfigError
from tests.planted import FAST
from tests.test_stacker import QUICK_LGBM, complementary_frames, mean_ndcg_at_10

NAMES = ["score_a", "score_b"]


def _frames(seed):
    """(training frames, held-out frames, fresh users to score): the planted problem of tests/test_stacker.py, where
    model A knows the even users' targets and model B the odd users'."""
    return (complementary_frames(400, seed=seed), complementary_frames(150, seed=seed + 100),
            complementary_frames(400, seed=seed + 200))


def _groups(scores, sizes):
    return np.split(scores, np.cumsum(sizes)[:-1])


def _agreement(first, second, x, relevance, sizes):
    """(share of users with the same top candidate, |difference of their NDCG@10|) of two stackers."""
    a, b = first.predict(x), second.predict(x)
    same_top = np.mean([np.argmax(p) == np.argmax(q) for p, q in zip(_groups(a, sizes), _groups(b, sizes))])
    return same_top, abs(mean_ndcg_at_10(a, relevance, sizes) - mean_ndcg_at_10(b, relevance, sizes))


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster for the tests that pass a scheduler address (the default path starts its own)."""
    from distributed import LocalCluster

    try:
        started = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                               scheduler_kwargs={"dashboard": False})
    except OSError as exc:  # no local sockets here: Dask genuinely cannot start
        pytest.skip(f"a Dask LocalCluster cannot start: {exc}")
    with started:
        yield started


class _Recorded:
    """Spies on the LocalClusters dask_backend starts and the DaskLGBMRanker.fit calls it makes."""

    def __init__(self, monkeypatch, fail=False):
        import distributed
        from lightgbm.dask import DaskLGBMRanker

        self.clusters, self.cluster_kwargs, self.fits = [], [], []
        record, real_fit = self, DaskLGBMRanker.fit

        class Cluster(distributed.LocalCluster):
            def __init__(self, *args, **kwargs):
                record.cluster_kwargs.append(kwargs)
                super().__init__(*args, **kwargs)
                record.clusters.append(self)

        def fit(ranker, X, y, group=None, **kwargs):
            record.fits.append({"row_chunks": X.chunks[0], "group_chunks": group.chunks[0],
                                "groups": group.compute(), "eval_rows": kwargs["eval_X"][0].chunks[0]})
            if fail:
                raise RuntimeError("planted failure inside the fit")
            return real_fit(ranker, X, y, group=group, **kwargs)

        monkeypatch.setattr(distributed, "LocalCluster", Cluster)
        monkeypatch.setattr(DaskLGBMRanker, "fit", fit)


# -- (a) the dask fit agrees with the local fit -------------------------------------------------------------------
def test_dask_fit_on_a_local_cluster_ranks_the_planted_problem_as_the_local_fit(monkeypatch, tmp_path):
    train, held, (x, relevance, sizes) = _frames(seed=1)
    local = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3).fit(*train, NAMES, eval_set=held)
    spy = _Recorded(monkeypatch)
    dask = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3, backend="dask")
    dask.fit(*train, NAMES, eval_set=held)  # dask_scheduler "": a LocalCluster of dask_workers = 2 for the fit

    # Not bit-identical to the local model: LightGBM's data-parallel learner has each worker find the bin boundaries
    # of a share of the features from its own partition (not from a sample of all rows; with bagging each worker
    # also draws its own rows), so split thresholds, and with them the scores, differ a little; which worker bins
    # which features even changes from fit to fit (lightgbm.dask numbers the workers in no fixed order), so two
    # dask fits differ as well. On a problem with a clear answer the rankings agree: over six seeds and both worker
    # orders, 95-98.8% of the users had the same top candidate and NDCG@10 differed by at most 0.005; the bounds
    # leave room for that.
    single = max(mean_ndcg_at_10(x[:, m], relevance, sizes) for m in (0, 1))
    assert mean_ndcg_at_10(dask.predict(x), relevance, sizes) >= single + 0.2  # it learned the planted answer
    same_top, ndcg_gap = _agreement(local, dask, x, relevance, sizes)
    assert same_top >= 0.9 and ndcg_gap <= 0.02, (same_top, ndcg_gap)

    # The cluster was started as documented and is closed after the fit.
    (cluster,) = spy.clusters
    assert spy.cluster_kwargs[0]["n_workers"] == 2 and spy.cluster_kwargs[0]["threads_per_worker"] == 1
    assert cluster.status.name == "closed"
    # Every worker scored the whole held-out set: one full copy of its 150 users x 20 candidates per partition.
    (fit,) = spy.fits
    assert fit["eval_rows"] == (3000, 3000) and dask.fit_backend["partition_rows"] == [4000, 4000]
    # All rounds ran (DaskLGBMRanker does not early-stop); the best round comes from LightGBM's recorded curve.
    assert dask.iterations_run == QUICK_LGBM["n_estimators"] and len(dask.history) == dask.iterations_run
    curve = [value for _, value, _ in dask.history]
    assert dask.best_iteration == dask_backend.best_round(curve, 15, "ndcg@10", {})[0]
    assert all(np.isfinite(t) for _, _, t in dask.history)

    # The local booster it keeps saves and loads as a local fit does.
    loaded = LGBMStacker.load(dask.save(str(tmp_path / "dask_stacker")))
    assert np.array_equal(loaded.predict(x), dask.predict(x))
    assert loaded.meta["fit_backend"]["backend"] == "dask" and loaded.best_iteration == dask.best_iteration


def test_a_scheduler_address_fits_on_that_cluster_and_leaves_it_running(cluster):
    train, held, scored = _frames(seed=2)
    local = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3).fit(*train, NAMES, eval_set=held)
    dask = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3, backend="dask",
                       dask_scheduler=cluster.scheduler_address).fit(*train, NAMES, eval_set=held)
    assert dask.fit_backend["scheduler"] == cluster.scheduler_address and dask.fit_backend["workers"] == 2
    same_top, ndcg_gap = _agreement(local, dask, *scored)
    assert same_top >= 0.9 and ndcg_gap <= 0.02, (same_top, ndcg_gap)
    assert cluster.status.name == "running"  # somebody else's cluster: only our client is closed


def test_one_dask_worker_is_the_local_fit_exactly_early_stopping_included():
    # With one worker LightGBM trains serially on all rows: the same trees as the local fit, and early stopping
    # replayed on the recorded curve picks the round the local fit's early stopping chose, and stops where it stopped.
    train, held, (x, _, _) = _frames(seed=2)
    local = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3).fit(*train, NAMES, eval_set=held)
    dask = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3, backend="dask",
                       dask_workers=1).fit(*train, NAMES, eval_set=held)

    def trees(stacker):  # the model text without its parameters (the dask one lists network settings)
        return stacker.booster.model_to_string(num_iteration=stacker.best_iteration).split("end of trees")[0]

    assert dask.fit_backend["workers"] == 1 and trees(dask) == trees(local)
    assert np.array_equal(dask.predict(x), local.predict(x))
    assert dask.best_iteration == local.best_iteration < local.iterations_run < dask.iterations_run
    assert dask.fit_backend["early_stopping_would_stop_at"] == local.iterations_run
    assert [v for _, v, _ in dask.history[:local.iterations_run]] == [v for _, v, _ in local.history]


def test_the_local_cluster_is_closed_when_the_fit_fails(monkeypatch):
    spy = _Recorded(monkeypatch, fail=True)
    train, held, _ = _frames(seed=3)
    stacker = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, seed=3, backend="dask", dask_workers=1)
    with pytest.raises(RuntimeError, match="planted failure"):
        stacker.fit(*train, NAMES, eval_set=held)
    (cluster,) = spy.clusters
    assert cluster.status.name == "closed"


def test_early_stopping_replays_lightgbms_own_rule():
    # Best at round 3 (0.7); 2 rounds without a better value after it stop at round 5. Ties are not improvements.
    assert dask_backend.best_round([0.5, 0.6, 0.7, 0.7, 0.65, 0.9], 2, "ndcg@10", {}) == (3, 5)
    assert dask_backend.best_round([0.5, 0.6, 0.7], 5, "ndcg@10", {}) == (3, 3)  # no stop: best of all rounds
    with pytest.warns(UserWarning, match="not available in dart mode"):  # LightGBM's own rule, as in a local fit
        assert dask_backend.best_round([0.5, 0.6], 5, "ndcg@10", {"boosting": "dart"}) == (2, 2)


# -- (b) partitions hold whole query groups ---------------------------------------------------------------------------
def test_partitions_hold_whole_query_groups_balanced_by_rows():
    sizes = [3, 1, 4, 2, 5, 5]  # 20 rows; group boundaries after 0, 3, 4, 8, 10, 15, 20 rows
    assert dask_backend.partition_groups(sizes, 2) == [(0, 4), (4, 6)]  # 10 + 10 rows
    assert dask_backend.partition_groups(sizes, 3) == [(0, 3), (3, 5), (5, 6)]  # cuts nearest 6.7 and 13.3: 8, 15
    assert dask_backend.partition_groups(sizes, 1) == [(0, 6)]
    assert dask_backend.partition_groups([7, 1], 4) == [(0, 1), (1, 2)]  # never more partitions than groups
    # Both cuts want the boundary before the big group (3 rows of 53); the first moves back so that none is empty.
    assert dask_backend.partition_groups([1, 1, 1, 50], 3) == [(0, 2), (2, 3), (3, 4)]
    rng = np.random.default_rng(0)
    for n_parts in (2, 3, 7):
        sizes = rng.integers(1, 40, size=101)
        parts = dask_backend.partition_groups(sizes, n_parts)
        assert len(parts) == n_parts and parts[0][0] == 0 and parts[-1][1] == len(sizes)
        assert all(end > first for first, end in parts) and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        rows = [int(np.sum(sizes[first:end])) for first, end in parts]
        assert max(rows) - min(rows) <= 2 * sizes.max()  # balanced up to the groups at the cuts


def test_the_fit_hands_lightgbm_row_and_group_chunks_that_match(monkeypatch, cluster):
    # Uneven groups, so a cut through a group would show: each partition's group sizes must sum to its rows.
    rng = np.random.default_rng(4)
    sizes = rng.integers(5, 30, size=120)
    x = rng.normal(size=(int(sizes.sum()), 2)).astype(np.float32)
    y = np.zeros(len(x), dtype=np.int32)
    y[np.cumsum(sizes) - 1] = 1
    spy = _Recorded(monkeypatch, fail=True)
    stacker = LGBMStacker(QUICK_LGBM, seed=3, backend="dask", dask_scheduler=cluster.scheduler_address)
    with pytest.raises(RuntimeError, match="planted failure"):
        stacker.fit(x, y, sizes, NAMES, eval_set=(x[:200], y[:200], [200]))
    (fit,) = spy.fits
    assert len(fit["row_chunks"]) == 2 and sum(fit["row_chunks"]) == len(x)
    group_parts = np.split(fit["groups"], np.cumsum(fit["group_chunks"])[:-1])
    assert [int(g.sum()) for g in group_parts] == list(fit["row_chunks"])
    assert np.array_equal(np.concatenate(group_parts), sizes)  # every group whole, in order


# -- (c) settings ---------------------------------------------------------------------------------------------------
@pytest.fixture
def base(ring_data_path):
    return {"data_path": ring_data_path, **FAST, "candidates_per_model": 10, "base_models": ["Pop"]}


@pytest.mark.parametrize("setting, message", [
    ({"stacker_backend": "spark"}, r"stacker_backend \(config_dict\) must be one of \['local', 'dask'\], got 'spark'"),
    ({"stacker_backend": None}, r"stacker_backend \(config_dict\) must be one of \['local', 'dask'\], got None"),
    ({"dask_workers": 0}, r"dask_workers \(config_dict\) must be an integer >= 1, got 0"),
    ({"dask_workers": "two"}, r"setting 'dask_workers' in config_dict must be an integer, got 'two'"),
    ({"dask_scheduler": "my laptop"}, r"dask_scheduler \(config_dict\) must be \"\" \(start a LocalCluster\) or a Dask "
                                      r"scheduler address such as tcp://host:8786, got 'my laptop'"),
    ({"dask_scheduler": 8786}, r"dask_scheduler \(config_dict\) must be .* got 8786"),
    ({"stacker_backend": "dask", "lgbm_params": {"early_stopping_round": 5}},
     r"lgbm_params.early_stopping_round in config_dict is not supported with stacker_backend dask"),
    ({"stacker_backend": "dask", "lgbm_params": {"tree_learner": "serial"}},
     r"lgbm_params.tree_learner in config_dict must be one of \['data', .*'voting_parallel'\] with stacker_backend "
     r"dask, got 'serial'"),
])
def test_bad_backend_settings_are_refused_in_one_line(base, setting, message):
    with pytest.raises(ConfigError, match=message) as refused:
        resolve("planted", config_dict={**base, **setting})
    assert "\n" not in str(refused.value)


def test_good_backend_settings_resolve(base):
    for setting in ({"stacker_backend": "dask"}, {"stacker_backend": "dask", "dask_scheduler": "tcp://10.0.0.5:8786"},
                    {"stacker_backend": "dask", "dask_scheduler": "scheduler-host:8786", "dask_workers": 8},
                    {"stacker_backend": "dask", "dask_scheduler": None},  # YAML's empty value: a LocalCluster
                    {"stacker_backend": "dask", "lgbm_params": {"tree_learner": "voting"}},
                    {"lgbm_params": {"tree_learner": "serial"}}):  # any tree_learner locally
        resolve("planted", config_dict={**base, **setting})


def test_an_unreachable_scheduler_is_one_line_naming_the_key():
    import socket

    import dask

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    train, held, _ = _frames(seed=5)
    stacker = LGBMStacker(QUICK_LGBM, backend="dask", dask_scheduler=address)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ConfigError, match=f"dask_scheduler '{address}': no Dask scheduler answered") as refused:
        stacker.fit(*train, NAMES, eval_set=held)
    assert "\n" not in str(refused.value)


# -- (d) the default stays local ------------------------------------------------------------------------------------
def test_the_default_backend_is_local_and_never_touches_dask(base, monkeypatch):
    assert {k: stacker_defaults()[k] for k in ("stacker_backend", "dask_scheduler", "dask_workers")} == {
        "stacker_backend": "local", "dask_scheduler": "", "dask_workers": 2}
    settings = resolve("planted", config_dict=base)
    assert settings["stacker_backend"] == "local" and LGBMStacker().backend == "local"

    def no_dask(*args, **kwargs):
        raise AssertionError("the local backend called dask_backend")

    monkeypatch.setattr(dask_backend, "fit_ranker", no_dask)
    train, held, _ = _frames(seed=1)
    stacker = LGBMStacker(QUICK_LGBM, early_stopping_rounds=15, eval_at=10, seed=3).fit(*train, NAMES, eval_set=held)
    assert stacker.fit_backend == {"backend": "local"} and stacker.iterations_run < QUICK_LGBM["n_estimators"]

    # The backend keys change nothing on the local backend, hash included (existing stacker rows keep their hash);
    # the dask backend is another result, so another hash.
    ignored = {"stacker_backend": "local", "dask_scheduler": "tcp://elsewhere:8786", "dask_workers": 5}
    assert resolve("planted", config_dict={**base, **ignored}).config_hash == settings.config_hash
    assert resolve("planted", config_dict={**base, "stacker_backend": "dask"}).config_hash != settings.config_hash


def test_the_pipeline_passes_the_backend_settings_to_the_stacker(base, monkeypatch):
    made = []

    class Stacker:
        def __init__(self, *args, **kwargs):
            made.append(kwargs)

        def fit(self, *args, **kwargs):
            return self

    monkeypatch.setattr(pipeline, "LGBMStacker", Stacker)
    sizes = np.array([2, 2, 2, 2])
    pool = SimpleNamespace(phase=SimpleNamespace(name="valid", users=np.arange(4)), group_sizes=sizes,
                           relevance=lambda: np.array([1, 0] * 4))
    frame = SimpleNamespace(pool=pool, matrix=np.zeros((8, 2), dtype=np.float32), names=NAMES)
    pipeline.fit_on_validation(frame, resolve("planted", config_dict=base))
    chosen = {"stacker_backend": "dask", "dask_scheduler": "tcp://scheduler:8786", "dask_workers": 3}
    pipeline.fit_on_validation(frame, resolve("planted", config_dict={**base, **chosen}))
    assert [{k: m[k] for k in ("backend", "dask_scheduler", "dask_workers")} for m in made] == [
        {"backend": "local", "dask_scheduler": "", "dask_workers": 2},
        {"backend": "dask", "dask_scheduler": "tcp://scheduler:8786", "dask_workers": 3}]
