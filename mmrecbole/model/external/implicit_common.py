"""What the `implicit` wrappers share: settings checks, the user x item matrix of RecBole's training split, and
the one-pass fitting contract the FitOnceTrainer calls.

Id layout: implicit indexes users and items by row/column number; RecBole's internal ids are exactly those numbers
(0 = padding). Every matrix handed to implicit is therefore `dataset.inter_matrix(...)` as it is, shape
(n_users, n_items) with an empty row 0 and column 0, and row i of a fitted factor matrix is RecBole's user/item i.
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from mmrecbole.errors import ConfigError

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


def as_host_array(factors) -> np.ndarray:
    """implicit's GPU models hold factors as implicit.gpu.Matrix; CPU models as numpy arrays."""
    return factors.to_numpy() if hasattr(factors, "to_numpy") else np.asarray(factors)


def wants_gpu(config) -> bool:
    """Fit on the GPU when the run's device is CUDA and implicit was built with CUDA (and RMM) support."""
    import implicit.gpu

    return torch.device(config["device"]).type == "cuda" and bool(implicit.gpu.HAS_CUDA)


# -- the model contract -----------------------------------------------------------------------------------------
class ImplicitRecommender(GeneralRecommender):
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
