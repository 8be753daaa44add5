"""implicit's ALS, BPR, LMF and item-kNN as RecBole general recommenders.

Each is fitted once (FitOnceTrainer) by `implicit` on the real users x items of RecBole's training split (RecBole's
padding row and column left out: "Id layout" in implicit_common) and scored through RecBole's evaluator like every
other model. Fitted state lives in what our safe checkpoints store without pickle, indexed by RecBole id (padding
included): factor models keep `user_factors` / `item_factors` buffers (float32, row 0 = the padding id, zeros);
item-kNN keeps scipy sparse matrices listed in `other_parameter_name` (item 0 without neighbours).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mmrecbole.model.external.implicit_common import (
    CONFIDENCE_SOURCES,
    ImplicitRecommender,
    as_host_array,
    bool_setting,
    choice_setting,
    float_setting,
    int_setting,
    interaction_strength,
    with_padding_item,
    with_padding_row,
    without_padding,
)

logger = logging.getLogger(__name__)


def _quiet_fit(estimator, matrix, show_progress: bool) -> None:
    """estimator.fit with one BLAS thread: implicit parallelises over users itself, and a BLAS thread pool on top
    oversubscribes the cores (implicit warns; ALS fits about twice as fast without it)."""
    from implicit.utils import ParameterWarning

    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit's kNN weighting passes itself a COO matrix and then warns about it; nothing we can change.
        warnings.simplefilter("ignore", ParameterWarning)
        estimator.fit(matrix, show_progress=show_progress)


class ImplicitFactorModel(ImplicitRecommender):
    """Matrix factorisation fitted by implicit: score(u, i) = user_factors[u] . item_factors[i]."""

    #: Columns implicit appends to `factors` (BPR: item bias with a constant 1 on the user side; LMF: user and item
    #: biases, each paired with a constant 1). The buffers have this width so checkpoints load into a fresh model.
    BIAS_COLUMNS = 0

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.factors = int_setting(config, "factors", 1)
        self.regularization = float_setting(config, "regularization", 0.0)
        self.iterations = int_setting(config, "iterations", 1)
        width = self.factors + self.BIAS_COLUMNS
        self.register_buffer("user_factors", torch.zeros(self.n_users, width))
        self.register_buffer("item_factors", torch.zeros(self.n_items, width))

    def fitted_value_count(self) -> int:
        # The buffers as stored, padding rows included (as RecBole counts an nn.Embedding's padding row).
        return self.user_factors.numel() + self.item_factors.numel()

    # subclasses: the confidence matrix (RecBole ids, padding included), and the implicit estimator
    def training_matrix(self, dataset):
        raise NotImplementedError

    def make_estimator(self):
        raise NotImplementedError

    def prepare_refit(self) -> None:
        """A refit starts implicit's fit from the carried-over factors (new users and items: zero rows), which
        implicit keeps when they are set before `fit`; on the GPU (implicit.gpu matrices) it fits from scratch."""
        self.warm_start = not self.on_gpu

    def fit_from(self, dataset, show_progress: bool = False) -> None:
        matrix = without_padding(self.training_matrix(dataset))
        with threadpool_limits(1, "blas"):  # implicit checks the BLAS pool when the estimator is built
            estimator = self.make_estimator()
        if getattr(self, "warm_start", False):
            estimator.user_factors = self.user_factors[1:].cpu().numpy().copy()
            estimator.item_factors = self.item_factors[1:].cpu().numpy().copy()
        _quiet_fit(estimator, matrix, show_progress)
        self._keep_factors(as_host_array(estimator.user_factors), as_host_array(estimator.item_factors))

    def _keep_factors(self, users: np.ndarray, items: np.ndarray) -> None:
        """Store implicit's factors of the real users / items (row n = RecBole id n + 1) under RecBole's ids."""
        width = self.user_factors.shape[1]
        expected = (self.n_users - 1, width), (self.n_items - 1, width)
        if (users.shape, items.shape) != expected:
            import implicit

            raise RuntimeError(
                f"implicit {implicit.__version__} returned factors of shape {users.shape} / {items.shape}; "
                f"{type(self).__name__} expects {expected[0]} / {expected[1]} (the real users / items, RecBole's "
                f"padding id left out; {self.factors} factors + {self.BIAS_COLUMNS} bias columns)"
            )
        device = self.user_factors.device
        self.user_factors = torch.from_numpy(with_padding_row(users)).to(device)
        self.item_factors = torch.from_numpy(with_padding_row(items)).to(device)

    def predict(self, interaction):
        users = self.user_factors[interaction[self.USER_ID]]
        items = self.item_factors[interaction[self.ITEM_ID]]
        return (users * items).sum(dim=-1)

    def full_sort_predict(self, interaction):
        users = self.user_factors[interaction[self.USER_ID]]
        return (users @ self.item_factors.T).view(-1)


class ImplicitALS(ImplicitFactorModel):
    """implicit's AlternatingLeastSquares (Hu, Koren & Volinsky 2008) with confidence c_ui = 1 + alpha * r_ui."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha = float_setting(config, "alpha", 0.0)
        self.confidence = choice_setting(config, "confidence", CONFIDENCE_SOURCES)
        self.rating_field = config["RATING_FIELD"]

    def training_matrix(self, dataset):
        confidence = interaction_strength(dataset, self.confidence, self.rating_field)
        confidence.data = 1.0 + self.alpha * confidence.data
        return confidence

    def history_scores(self, rows):
        """A user unknown to the fit, from their history: implicit's `recalculate_user` solves the user's
        least-squares step against the fitted item factors (confidence 1 + alpha per history item, as a count-1
        training row gets), then scores every item."""
        import implicit.cpu.als

        with threadpool_limits(1, "blas"):
            estimator = implicit.cpu.als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0, iterations=self.iterations,
                random_state=self.seed)
        estimator.item_factors = self.item_factors[1:].cpu().numpy()
        confidence = rows.astype(np.float32).tocsr()[:, 1:].tocsr()  # implicit's item n = RecBole's n + 1
        confidence.data = 1.0 + self.alpha * confidence.data
        with threadpool_limits(1, "blas"):
            users = estimator.recalculate_user(np.arange(confidence.shape[0]), confidence)
        users = torch.from_numpy(np.asarray(users, dtype=np.float32).reshape(confidence.shape[0], -1))
        return users.to(self.item_factors.device) @ self.item_factors.T

    def make_estimator(self):
        if self.on_gpu:
            import implicit.gpu.als

            return implicit.gpu.als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0, iterations=self.iterations,
                random_state=self.seed,
            )
        import implicit.cpu.als

        # alpha=1.0: the matrix already holds 1 + alpha * r (implicit would multiply it by its own alpha).
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=1.0, iterations=self.iterations,
            random_state=self.seed,
        )


class ImplicitBPR(ImplicitFactorModel):
    """implicit's BayesianPersonalizedRanking: SGD on the pairwise BPR loss; only which items a user has matters."""

    BIAS_COLUMNS = 1

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.learning_rate = float_setting(config, "learning_rate", 0.0, above=True)
        self.verify_negative_samples = bool_setting(config, "verify_negative_samples")
        # implicit's CPU BPR updates shared item factors from several threads without locks (Hogwild): the result
        # depends on thread scheduling. One thread makes the same seed give the same factors.
        self.num_threads = 1 if config["reproducibility"] else 0

    def training_matrix(self, dataset):
        return interaction_strength(dataset, "count", None)

    def make_estimator(self):
        if self.on_gpu:
            import implicit.gpu.bpr

            return implicit.gpu.bpr.BayesianPersonalizedRanking(
                factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
                iterations=self.iterations, verify_negative_samples=self.verify_negative_samples,
                random_state=self.seed,
            )
        import implicit.cpu.bpr

        return implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
            iterations=self.iterations, verify_negative_samples=self.verify_negative_samples,
            num_threads=self.num_threads, random_state=self.seed,
        )


class ImplicitLMF(ImplicitFactorModel):
    """implicit's LogisticMatrixFactorization (Johnson 2014) with confidence c_ui = alpha * r_ui; CPU only (implicit
    has no GPU version)."""

    BIAS_COLUMNS = 2

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.learning_rate = float_setting(config, "learning_rate", 0.0, above=True)
        self.alpha = float_setting(config, "alpha", 0.0, above=True)
        self.neg_prop = int_setting(config, "neg_prop", 1)
        self.confidence = choice_setting(config, "confidence", CONFIDENCE_SOURCES)
        self.rating_field = config["RATING_FIELD"]
        if self.on_gpu:
            logger.info("ImplicitLMF: implicit has no GPU LMF; fitting on the CPU, scoring on %s", config["device"])
            self.on_gpu = False

    def training_matrix(self, dataset):
        confidence = interaction_strength(dataset, self.confidence, self.rating_field)
        confidence.data = self.alpha * confidence.data
        return confidence

    def make_estimator(self):
        import implicit.cpu.lmf

        return implicit.cpu.lmf.LogisticMatrixFactorization(
            factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
            iterations=self.iterations, neg_prop=self.neg_prop, random_state=self.seed,
        )


class ImplicitItemKNN(ImplicitRecommender):
    """implicit's item-item nearest neighbours (cosine, BM25 or TF-IDF weighting): score = the user's row of the
    training matrix x the item-item similarity, as implicit's `recommend` computes it."""

    SIMILARITIES = ("cosine", "bm25", "tfidf")
    seed_independent = True  # similarities of the training matrix: no random state anywhere

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.similarity_kind = choice_setting(config, "knn_similarity", self.SIMILARITIES)
        self.k = int_setting(config, "k", 1)
        self.bm25_k1 = float_setting(config, "bm25_K1", 0.0)
        self.bm25_b = float_setting(config, "bm25_B", 0.0, maximum=1.0)
        self.confidence = choice_setting(config, "confidence", CONFIDENCE_SOURCES)
        self.rating_field = config["RATING_FIELD"]
        # scipy CSR matrices indexed by RecBole id (row/column 0 = padding, empty), set by fit_from; compat encodes
        # them into checkpoints as plain tensors.
        self.similarity = None  # item x item, top-k neighbours per row
        self.history = None  # user x item strengths of the training split: the rows that get multiplied
        self.other_parameter_name = ["similarity", "history"]

    def make_estimator(self):
        from implicit import nearest_neighbours as knn

        if self.similarity_kind == "bm25":
            return knn.BM25Recommender(K=self.k, K1=self.bm25_k1, B=self.bm25_b)
        if self.similarity_kind == "tfidf":
            return knn.TFIDFRecommender(K=self.k)
        return knn.CosineRecommender(K=self.k)

    def fit_from(self, dataset, show_progress: bool = False) -> None:
        history = interaction_strength(dataset, self.confidence, self.rating_field)
        estimator = self.make_estimator()
        _quiet_fit(estimator, without_padding(history), show_progress)
        self.similarity = with_padding_item(estimator.similarity)
        self.history = history

    def fitted_value_count(self) -> int:
        return 0 if self.similarity is None else int(self.similarity.nnz)  # the kept neighbour similarities

    def _check_fitted(self):
        if self.similarity is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: train it (FitOnceTrainer) or load a checkpoint")

    def full_sort_predict(self, interaction):
        self._check_fitted()
        users = interaction[self.USER_ID]
        scores = (self.history[users.cpu().numpy()] @ self.similarity).toarray()
        return torch.from_numpy(scores.astype(np.float32)).to(users.device).view(-1)

    def history_scores(self, rows):
        """A history row (strength 1 per item) times the item-item similarity, as for a training user."""
        self._check_fitted()
        scores = (rows.astype(np.float32).tocsr() @ self.similarity).toarray()
        return torch.from_numpy(scores.astype(np.float32))

    def predict(self, interaction):
        self._check_fitted()
        users = interaction[self.USER_ID]
        items = interaction[self.ITEM_ID].cpu().numpy()
        rows = self.history[users.cpu().numpy()]
        columns = self.similarity.T.tocsr()[items]  # row n = similarity column of the n-th item
        scores = np.asarray(rows.multiply(columns).sum(axis=1)).ravel()
        return torch.from_numpy(scores.astype(np.float32)).to(users.device)
