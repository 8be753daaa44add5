"""What the `implicit` wrappers share: settings checks, the user x item matrix of RecBole's training split, and
the one-pass fitting contract the FitOnceTrainer calls.

Id layout: implicit indexes users and items by row/column number; RecBole's internal ids start at 1 (0 = padding).
`dataset.inter_matrix(...)` has shape (n_users, n_items) with an always-empty row 0 and column 0. implicit is fitted
on the real users x items only (`without_padding`: matrix[1:, 1:], so implicit's row n is RecBole's id n + 1): given
the padding it would treat it as one more user and item, drawing random initial factors for them that shift every
other row's draw (ALS, BPR, LMF; LMF's per-thread row blocks shift too) and counting them in the BM25/TF-IDF
statistics (number of rows, mean row length). What is kept is mapped back to RecBole's ids (`with_padding_row`,
`with_padding_item`): row i of a factor buffer or similarity matrix is RecBole's user/item i, row 0 is zeros / empty,
so the padding item scores 0 (RecBole's evaluator masks item 0 with -inf anyway), and checkpoints keep the same
(n_users, ...) / (n_items, ...) shapes as before.
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from mmrecbole.errors import ConfigError
from mmrecbole.contract import ModelContract

#: Where the strength r_ui of a (user, item) pair comes from (`confidence` key).
CONFIDENCE_SOURCES = ("count", "rating")


# -- settings ---------------------------------------------------------------------------------------------------
def int_setting(config, key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"config key '{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def float_setting(config, key: str, minimum: float, *, above: bool = False, maximum: float | None = None) -> float:
    """A number in [minimum, maximum] (or (minimum, maximum] with above=True)."""
    value = config[key]
    bound = f"> {minimum}" if above else f">= {minimum}"
    if maximum is not None:
        bound += f" and <= {maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"config key '{key}' must be a number {bound}, got {value!r}")
    value = float(value)
    if (value <= minimum if above else value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"config key '{key}' must be a number {bound}, got {value!r}")
    return value


def bool_setting(config, key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    return value


def choice_setting(config, key: str, allowed) -> str:
    value = config[key]
    if value not in allowed:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}")
    return value


# -- the training matrix ----------------------------------------------------------------------------------------
def interaction_strength(dataset, source: str, rating_field: str) -> sp.csr_matrix:
    """r_ui for every (user, item) of `dataset` as a float32 user x item CSR matrix (row/column 0 = padding).

    source "count": the number of interactions of the pair (1 unless the data has repeats);
    source "rating": the sum of their ratings (`RATING_FIELD` column; must be >= 0, since implicit reads negative
    values as dislikes).
    """
    if source == "count":
        matrix = dataset.inter_matrix(form="csr")
    else:
        if rating_field is None or rating_field not in dataset.inter_feat:
            raise ConfigError(
                f"confidence: rating needs the rating column '{rating_field}' (RATING_FIELD) in the dataset's "
                "interactions; load it via load_col or use confidence: count"
            )
        matrix = dataset.inter_matrix(form="csr", value_field=rating_field)
        if matrix.nnz and matrix.data.min() < 0:
            raise ConfigError(
                f"confidence: rating needs ratings >= 0 (column '{rating_field}' has {matrix.data.min()}); "
                "use confidence: count"
            )
    matrix = matrix.astype(np.float32)
    matrix.sort_indices()
    return matrix


# -- RecBole ids <-> implicit's rows -----------------------------------------------------------------------------
def without_padding(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The real users x real items of a RecBole user x item CSR matrix (row/column 0 dropped), as implicit fits it.

    Refuses a matrix whose padding row or column holds values: dropping them would silently lose interactions.
    """
    if matrix.indptr[1] > 0 or (matrix.indices == 0).any():
        raise RuntimeError(
            "the user x item matrix has values in row 0 / column 0, RecBole's padding user / item; expected "
            "`dataset.inter_matrix(...)` with RecBole's internal ids (1 = first real id)"
        )
    real = matrix[1:, 1:].tocsr()
    real.sort_indices()
    return real


def with_padding_row(rows: np.ndarray) -> np.ndarray:
    """implicit's factor rows (row n = RecBole id n + 1) as float32 rows indexed by RecBole id, with a zero row 0 for
    the padding id (a padding item then scores 0, which RecBole's evaluator masks)."""
    padded = np.zeros((rows.shape[0] + 1, rows.shape[1]), dtype=np.float32)
    padded[1:] = rows
    return padded


def with_padding_item(similarity) -> sp.csr_matrix:
    """implicit's item x item similarity (row/column n = RecBole item n + 1) as a CSR matrix indexed by RecBole item
    id, with an empty row and column 0: the same entries, shifted, so a user's padded training row can multiply it."""
    csr = similarity.tocsr()
    indptr = np.concatenate(([0], csr.indptr)).astype(csr.indptr.dtype)
    rows, columns = csr.shape
    return sp.csr_matrix((csr.data, csr.indices + 1, indptr), shape=(rows + 1, columns + 1))


def as_host_array(factors) -> np.ndarray:
    """implicit's GPU models hold factors as implicit.gpu.Matrix; CPU models as numpy arrays."""
    return factors.to_numpy() if hasattr(factors, "to_numpy") else np.asarray(factors)


def wants_gpu(config) -> bool:
    """Fit on the GPU when the run's device is CUDA and implicit was built with CUDA (and RMM) support."""
    import implicit.gpu

    return torch.device(config["device"]).type == "cuda" and bool(implicit.gpu.HAS_CUDA)


# -- the model contract -----------------------------------------------------------------------------------------
class ImplicitRecommender(GeneralRecommender, ModelContract):
    """A RecBole general recommender whose state is fitted by `implicit` in one pass.

    `FitOnceTrainer` calls `fit_from(train_dataset, show_progress)` once instead of running epochs, then RecBole's
    evaluator scores `full_sort_predict` with its usual history masking (no second evaluation path).
    """

    input_type = InputType.POINTWISE
    trainer_name = "FitOnceTrainer"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.seed = int(config["seed"])
        self.on_gpu = wants_gpu(config)

    def fit_from(self, dataset, show_progress: bool = False) -> None:
        """Fit on `dataset` (RecBole's training split) and keep the result in buffers / other_parameter."""
        raise NotImplementedError

    def fitted_value_count(self) -> int:
        """How many values the fit learned (no nn.Parameter holds them, so RecBole's parameter count would say 0)."""
        raise NotImplementedError

    def calculate_loss(self, interaction):
        raise NotImplementedError(
            f"{type(self).__name__} is fitted by implicit in one pass (FitOnceTrainer); it has no training loss"
        )
