"""LGBMStacker: a LightGBM LambdaRank model over per-(user, candidate) features. Its own contract, not an nn.Module:

    stacker = LGBMStacker(params, early_stopping_rounds=50, eval_at=10, seed=2020)
    stacker.fit(X, relevance, group_sizes, feature_names, eval_set=(X_held_out, relevance_held_out, sizes_held_out))
    scores = stacker.predict(X)                 # higher = better; rank within each user's group
    stacker.save(folder); LGBMStacker.load(folder)

Groups are users (rows of one user are contiguous; `group_sizes` counts them). Training is deterministic for a
seed: `random_state`, `deterministic=True`, `force_row_wise=True` and a fixed thread count.

`backend="dask"` fits with lightgbm.dask.DaskLGBMRanker instead (mmrecbole.ensemble.dask_backend: the same
parameters, data-parallel, early stopping replayed after the fit) and keeps its `to_local()` booster, so predicting,
saving and loading are the same code as for a local fit.

A saved stacker is a folder: `model.txt` (LightGBM's text format, trees up to the best iteration only), then
`meta.json` (format, feature names, parameters, best iteration, gain importances, sha256 of model.txt, and whatever
the caller adds) and `feature_importance.tsv`. Each file is written atomically and meta.json last, so a folder
without meta.json (an interrupted save) is refused, as is a model.txt that does not match its meta.json.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from mmrecbole.data.fileio import sha256_text, write_text_atomically
from mmrecbole.errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT = "mmrecbole-lgbm-stacker/1"
MODEL_FILE, META_FILE, IMPORTANCE_FILE = "model.txt", "meta.json", "feature_importance.tsv"
_THREAD_KEYS = {"num_threads", "n_jobs", "num_thread", "nthread", "nthreads"}


def _with_positives(matrix, relevance, group_sizes):
    """Drop the groups without a relevant row: LambdaRank gets no gradient from them, and LightGBM's NDCG counts
    them as perfect (1.0), which would only flatten the early-stopping curve."""
    offsets = np.concatenate([[0], np.cumsum(group_sizes)])
    has = np.array([relevance[s:e].any() for s, e in zip(offsets[:-1], offsets[1:])], dtype=bool)
    rows = np.repeat(has, group_sizes)
    return matrix[rows], relevance[rows], np.asarray(group_sizes)[has]


class LGBMStacker:
    def __init__(self, params: dict | None = None, early_stopping_rounds: int = 50, eval_at: int = 10,
                 seed: int = 2020, backend: str = "local", dask_scheduler: str = "", dask_workers: int = 2):
        self.params = dict(params or {})
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.eval_at = int(eval_at)
        self.seed = int(seed)
        if backend not in ("local", "dask"):
            raise ValueError(f"backend must be 'local' or 'dask', got {backend!r}")
        self.backend = backend
        self.dask_scheduler = dask_scheduler or ""
        self.dask_workers = int(dask_workers)
        self.fit_backend: dict = {"backend": backend}  # how the fit ran (saved in meta.json)
        self.booster = None
        self.feature_names: list = []
        self.best_iteration = 0
        self.iterations_run = 0
        self.history: list = []       # [(iteration, held-out ndcg@eval_at, seconds since fit started)]
        self.fit_seconds = 0.0

    def _fixed_params(self) -> dict:
        return {"objective": "lambdarank", "random_state": self.seed, "deterministic": True, "force_row_wise": True}

    def _ranker(self):
        from lightgbm import LGBMRanker

        params = dict(self.params)
        if not _THREAD_KEYS & set(params):
            params["num_threads"] = 1  # LightGBM's default is every core: the model would depend on the machine
        return LGBMRanker(**params, **self._fixed_params())

    def fit(self, matrix, relevance, group_sizes, feature_names, eval_set=None) -> "LGBMStacker":
        """Fit on rows grouped by user. `eval_set` = (matrix, relevance, group_sizes) of held-out users: early
        stopping on LightGBM's NDCG@eval_at there; without it all n_estimators rounds are kept."""
        import lightgbm

        matrix = np.asarray(matrix, dtype=np.float32)
        relevance = np.asarray(relevance, dtype=np.int32)
        if matrix.shape != (len(relevance), len(feature_names)) or int(np.sum(group_sizes)) != len(relevance):
            raise ValueError(f"features {matrix.shape}, {len(relevance)} labels, {len(feature_names)} names and "
                             f"groups summing to {int(np.sum(group_sizes))} must agree")
        x, y, groups = _with_positives(matrix, relevance, group_sizes)
        if not len(groups):
            raise ValueError("no user has a relevant candidate: nothing to learn (is the candidate pool too small?)")
        self.feature_names = list(feature_names)
        if self.backend == "dask":
            return self._fit_on_dask(x, y, groups, eval_set)
        ranker = self._ranker()
        start = time.perf_counter()
        history = []

        def record(env):
            for _, metric, value, _ in env.evaluation_result_list or []:
                if metric == f"ndcg@{self.eval_at}":
                    history.append((env.iteration + 1, float(value), time.perf_counter() - start))

        fit_args = {"group": groups, "feature_name": self.feature_names, "callbacks": [record]}
        if eval_set is not None:
            ex, ey, egroups = _held_out(eval_set)
            if len(egroups):
                fit_args.update(eval_X=(ex,), eval_y=(ey,), eval_group=[egroups], eval_at=[self.eval_at])
                fit_args["callbacks"] = [record, lightgbm.early_stopping(self.early_stopping_rounds,
                                                                         first_metric_only=True, verbose=False)]
        ranker.fit(x, y, **fit_args)
        self.fit_seconds = time.perf_counter() - start
        self.booster = ranker.booster_
        # With early stopping LightGBM keeps only the trees up to the best iteration; the evaluation history says
        # how many rounds actually ran.
        self.iterations_run = max(len(history), self.booster.current_iteration())
        self.best_iteration = int(ranker.best_iteration_ or 0) or self.iterations_run
        self.history = history
        return self

    def _fit_on_dask(self, x, y, groups, eval_set) -> "LGBMStacker":
        """The fit on a Dask cluster (dask_backend.fit_ranker). Threads per worker come from the cluster (Dask
        overrides num_threads), so the thread keys of `params` are left out; early stopping: see dask_backend."""
        from mmrecbole.ensemble import dask_backend

        held = _held_out(eval_set) if eval_set is not None else None
        if held is not None and not len(held[2]):
            held = None  # no held-out user with a relevant candidate: all rounds are kept, as in a local fit
        params = {k: v for k, v in self.params.items() if k not in _THREAD_KEYS}
        fit_args = {"feature_name": self.feature_names}
        if held is not None:
            fit_args["eval_at"] = [self.eval_at]
        start = time.perf_counter()
        ranker, seconds, layout = dask_backend.fit_ranker({**params, **self._fixed_params()}, x, y, groups, held,
                                                          fit_args, self.dask_scheduler, self.dask_workers)
        self.fit_seconds = time.perf_counter() - start
        self.booster = ranker.booster_
        self.iterations_run = self.booster.current_iteration()
        self.best_iteration, self.history = self.iterations_run, []
        self.fit_backend = {"backend": "dask", "scheduler": self.dask_scheduler or "LocalCluster", **layout,
                            "early_stopping": "replayed after all rounds (DaskLGBMRanker does not early-stop)"}
        if held is not None:
            curve = ranker.evals_result_["valid_0"][f"ndcg@{self.eval_at}"]
            seconds = seconds if seconds is not None and len(seconds) == len(curve) else [float("nan")] * len(curve)
            self.history = [(i + 1, float(v), float(t)) for i, (v, t) in enumerate(zip(curve, seconds))]
            self.best_iteration, stopped = dask_backend.best_round(curve, self.early_stopping_rounds,
                                                                   f"ndcg@{self.eval_at}", ranker.get_params(),
                                                                   self.booster)
            self.fit_backend["early_stopping_would_stop_at"] = stopped
        logger.info(f"dask fit: {layout['workers']} workers, partitions of {layout['partition_rows']} rows, "
                    f"{self.iterations_run} rounds, best {self.best_iteration}")
        return self

    def _check_fitted(self):
        if self.booster is None:
            raise RuntimeError("LGBMStacker is not fitted (call fit or LGBMStacker.load)")

    def predict(self, matrix) -> np.ndarray:
        """Scores [n_rows] (float64), higher = ranked earlier within the row's user."""
        self._check_fitted()
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ValueError(f"expected [rows, {len(self.feature_names)}] features ({self.feature_names}), got "
                             f"{matrix.shape}")
        return self.booster.predict(matrix, num_iteration=self.best_iteration)

    def feature_importance(self) -> dict:
        """{feature: total gain of its splits} up to the best iteration, largest first."""
        self._check_fitted()
        gains = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        pairs = sorted(zip(self.feature_names, (float(g) for g in gains)), key=lambda p: -p[1])
        return dict(pairs)

    def n_leaves(self) -> int:
        """Leaves of the trees in use: the model's size in fitted values."""
        self._check_fitted()
        trees = self.booster.dump_model(num_iteration=self.best_iteration)["tree_info"]
        return int(sum(tree["num_leaves"] for tree in trees))

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, folder: str, extra: dict | None = None) -> str:
        """Write the stacker to `folder` (created); `extra` goes into meta.json (e.g. the run's settings)."""
        self._check_fitted()
        os.makedirs(folder, exist_ok=True)
        text = self.booster.model_to_string(num_iteration=self.best_iteration)
        importance = self.feature_importance()
        write_text_atomically(os.path.join(folder, MODEL_FILE), text)
        write_text_atomically(os.path.join(folder, IMPORTANCE_FILE),
                              "feature\tgain\n" + "".join(f"{k}\t{v:.6g}\n" for k, v in importance.items()))
        meta = {"format": FORMAT, "feature_names": self.feature_names, "params": self.params,
                "early_stopping_rounds": self.early_stopping_rounds, "eval_at": self.eval_at, "seed": self.seed,
                "best_iteration": self.best_iteration, "iterations_run": self.iterations_run,
                "fit_seconds": self.fit_seconds, "history": self.history, "feature_importance_gain": importance,
                "model_sha256": sha256_text(text), "lightgbm": _lightgbm_version(), "fit_backend": self.fit_backend,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "extra": extra or {}}
        write_text_atomically(os.path.join(folder, META_FILE), json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str) -> "LGBMStacker":
        import lightgbm

        meta_path, model_path = os.path.join(folder, META_FILE), os.path.join(folder, MODEL_FILE)
        if not os.path.isfile(meta_path) or not os.path.isfile(model_path):
            raise CheckpointError(f"{folder} is not a saved LGBMStacker (needs {META_FILE} and {MODEL_FILE}; an "
                                  "interrupted save leaves no meta.json)")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{meta_path} is not an LGBMStacker file (format {meta.get('format')!r}, expected "
                                  f"{FORMAT})")
        with open(model_path, encoding="utf-8") as f:
            text = f.read()
        if sha256_text(text) != meta["model_sha256"]:
            raise CheckpointError(f"{model_path} does not match {meta_path} (sha256 differs): the folder mixes two "
                                  "saves")
        stacker = cls(meta["params"], meta["early_stopping_rounds"], meta["eval_at"], meta["seed"])
        stacker.booster = lightgbm.Booster(model_str=text)
        stacker.feature_names = list(meta["feature_names"])
        stacker.best_iteration = int(meta["best_iteration"])
        stacker.iterations_run = int(meta["iterations_run"])
        stacker.history = [tuple(h) for h in meta["history"]]
        stacker.fit_seconds = float(meta["fit_seconds"])
        stacker.fit_backend = meta.get("fit_backend", {"backend": "local"})  # saves before the dask backend: local
        stacker.backend = stacker.fit_backend.get("backend", "local")
        stacker.meta = meta
        return stacker


def _held_out(eval_set):
    return _with_positives(np.asarray(eval_set[0], dtype=np.float32), np.asarray(eval_set[1], dtype=np.int32),
                           eval_set[2])


def _lightgbm_version() -> str:
    import lightgbm

    return lightgbm.__version__
