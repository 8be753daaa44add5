"""FitOnceTrainer: for models fitted in one pass (our Pop, implicit's ALS/BPR/LMF/item-kNN), not by gradient epochs.

RecBole's Trainer would run `epochs` (300 by default) epochs of `calculate_loss` over the training dataloader and
evaluate after each. A one-pass model has no loss and gains nothing from repeating: this trainer calls the model's
`fit_from(train_dataset)` once, evaluates validation once, and saves once. `epochs`, `eval_step`, `stopping_step` and
the optimizer settings are ignored. Evaluation is RecBole's, unchanged.
"""
from __future__ import annotations

from time import perf_counter

from recbole.trainer import Trainer

from mmrecbole.compat import dataset_of
from mmrecbole.trainer.base import TrainingMixin


class FitOnceTrainer(TrainingMixin, Trainer):
    """The model must implement `fit_from(dataset, show_progress=False)` (mmrecbole.contract), fitting on
    RecBole's training split."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.fit_seconds = None  # wall time of the model's one fit, set by fit()

    def _build_optimizer(self, **kwargs):
        # Nothing is optimised by gradient (RecBole's Adam would also refuse a model without parameters).
        return None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Fit once on the training split, score validation once; returns (best_valid_score, best_valid_result).

        The single fit is reported as epoch 0 (the best epoch) to `callback_fn` and in the checkpoint.
        """
        fit_from = getattr(type(self.model), "fit_from", None)
        if not callable(fit_from):
            raise TypeError(
                f"{type(self.model).__name__} has no fit_from(dataset, show_progress); FitOnceTrainer only fits "
                "models that are fitted in one pass"
            )
        self._begin_fit(train_data)
        self.eval_collector.data_collect(train_data)  # item popularity etc. for metrics that need it

        start = perf_counter()
        self.model.fit_from(dataset_of(train_data), show_progress=show_progress)
        self.fit_seconds = perf_counter() - start
        if verbose:
            self.logger.info(f"{type(self.model).__name__} fitted in one pass in {self.fit_seconds:.2f}s")

        if valid_data:
            start = perf_counter()
            self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.cur_step = 0
            self._record_validation(0, self.best_valid_score)
            if verbose:
                self.logger.info(
                    f"validation [time: {perf_counter() - start:.2f}s, {self.valid_metric}: "
                    f"{self.best_valid_score:f}]"
                )
            if callback_fn:
                callback_fn(0, self.best_valid_score)
        if saved:
            self._save_checkpoint(0, verbose=verbose)
        return self.best_valid_score, self.best_valid_result
