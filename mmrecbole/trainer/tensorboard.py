"""RecBole's TensorBoard writer, created on first use instead of in Trainer.__init__."""
from __future__ import annotations


class LazyTensorBoard:
    """RecBole's SummaryWriter, created on first use. RecBole's Trainer creates it in __init__, so evaluating a saved
    checkpoint, or a run that fails before its first epoch, left an empty log_tensorboard/<run>/ event file."""

    def __init__(self, logger):
        self._logger, self._writer = logger, None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._writer is None:
            from recbole.utils import get_tensorboard

            self._writer = get_tensorboard(self._logger)
        return getattr(self._writer, name)


def use_lazy_tensorboard() -> None:
    """Make RecBole's trainers create their TensorBoard writer on first use (LazyTensorBoard)."""
    import recbole.trainer.trainer as trainer_module

    trainer_module.get_tensorboard = LazyTensorBoard
