"""What every mmrecbole trainer adds to RecBole's: safe checkpoints, resume, best-epoch tracking, per-user metrics,
per-epoch model hooks and named loss terms.

`TrainingMixin` goes before a RecBole trainer class in the MRO. Our trainers (`MMTrainer`, `FitOnceTrainer`) are
built on it, and `with_training(RecBoleTrainer)` puts it in front of the trainer RecBole picks for one of its own
models (KG, traditional...), so every row of a leaderboard is trained, saved and evaluated by the same code.

Seen-item masking is not done here: the evaluation loaders carry every user's history (mmrecbole.data.eval_loader)
and RecBole's own `_full_sort_batch_eval` masks it, for general and sequential models alike.
"""
from __future__ import annotations

import copy
import os
from functools import lru_cache
from time import perf_counter

import torch
from recbole.trainer import Trainer

from mmrecbole import checkpoint, compat
from mmrecbole.data.fileio import remove_stale_temp_files
from mmrecbole import contract, progress
from mmrecbole.trainer.evaluation import per_user_topk_metrics
from mmrecbole import distributed
from mmrecbole.trainer.tensorboard import use_lazy_tensorboard

use_lazy_tensorboard()


class TrainingMixin:
    """Put before a RecBole trainer class in the MRO.

    - Checkpoints: RecBole 1.2.1 pickles its Config into every checkpoint and reloads with a bare `torch.load`
      (torch >= 2.6 reads weights only, so RecBole's reload of the best model fails; loading a pickle is unsafe
      anyway). We save state_dict + plain JSON + metadata atomically (mmrecbole.checkpoint), load with
      weights_only=True and refuse checkpoints of another model, dataset or id map.
    - Best epoch: `valid_history` [(epoch, valid score, seconds since fit started)] and `best_epoch`, the epoch
      RecBole's early stopping kept (read from its own decision, not re-derived).
    - Per-user metrics: `evaluate` keeps the top-k metrics of every evaluated user in `last_per_user`, for paired
      significance tests.
    - Model hooks (mmrecbole.contract): `pre_epoch(epoch)` before each training epoch; `loss_names` name the
      terms of a tuple loss in the epoch log and TensorBoard (`rec: 5.1, align: 0.3`, not `train_loss1: 5.1`).
    """

    def __init__(self, config, model):
        # RecBole's Trainer makes checkpoint_dir with ensure_dir (check, then os.makedirs): two processes starting at
        # once (a parallel board's jobs) race, and the loser dies of FileExistsError. Made here without the race.
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        with distributed.single_process_view(config):  # under DDP, `distributed.wrap` builds the wrapper instead
            super().__init__(config, model)
        if distributed.is_distributed(config):
            self.distributed_model = distributed.wrap(self.model, config)  # RecBole's _train_epoch drives it
        # RecBole names checkpoints <model>-<local time to the second>.pth: two runs started in one second (a
        # leaderboard's parallel jobs) wrote the same file. The process id and a per-process count make it unique;
        # under DDP rank 0 names it for all ranks (only rank 0 writes it).
        self.saved_model_file = distributed.same_on_all_ranks(checkpoint.unique_path(self.saved_model_file), config)
        if distributed.is_main(config):
            remove_stale_temp_files(self.checkpoint_dir)  # left by a run killed mid-save
        collector = self.eval_collector
        collector.get_data_struct = lambda: compat.collected_struct(collector)
        self.valid_history, self.best_epoch = [], None

    # -- fitting ---------------------------------------------------------------------------------------------------
    def _begin_fit(self, train_data) -> None:
        self.dataset_fingerprint = checkpoint.dataset_fingerprint(compat.dataset_of(train_data))
        self.valid_history, self.best_epoch = [], None
        self._fit_start = perf_counter()

    def _record_validation(self, epoch, score) -> None:
        """Called after each validation with RecBole's early-stopping state already updated: `cur_step` is 0
        exactly when this score became the best (RecBole's `early_stopping` resets it then; ties keep the later
        epoch), which is when RecBole saved the checkpoint the test reads."""
        self.valid_history.append((int(epoch), float(score), perf_counter() - self._fit_start))
        if self.cur_step == 0:
            self.best_epoch = int(epoch)
        progress.report("epoch", model=self.config["model"], epoch=int(epoch), start_epoch=int(self.start_epoch),
                        score=float(score), metric=str(self.valid_metric), best=float(self.best_valid_score),
                        best_epoch=self.best_epoch, seconds=self.valid_history[-1][2],
                        epochs_left=progress.epochs_left(int(epoch), int(self.epochs), int(self.cur_step),
                                                         int(self.stopping_step), int(self.eval_step)))

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._begin_fit(train_data)

        def on_validation(epoch, score):
            self._record_validation(epoch, score)
            if callback_fn:
                callback_fn(epoch, score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, on_validation)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        contract.run_pre_epoch(self.model, epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not distributed.is_main(self.config):
            # The state rank 0 writes (DDP keeps every rank's parameters equal), kept in memory for the test phase:
            # ranks on other machines cannot read rank 0's disk.
            self._kept_state = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.model.other_parameter()))
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        checkpoint.save(
            path,
            model=self.model,
            config=self.config,
            dataset_fingerprint=getattr(self, "dataset_fingerprint", None),
            training={
                "epoch": int(epoch),
                "cur_step": int(self.cur_step),
                "best_valid_score": float(self.best_valid_score),
                "valid_metric": self.valid_metric,
            },
            optimizer_state=self.optimizer.state_dict() if getattr(self, "optimizer", None) else None,
            parent=getattr(self, "parent_checkpoint", None),
        )
        if verbose:
            self.logger.info(f"Saving current: {path}")

    def resume_checkpoint(self, resume_file):
        ckpt = checkpoint.read(resume_file, map_location=self.device)
        ckpt.check_matches(self.config["model"], self.config["dataset"])
        ckpt.restore_into(self.model, device=self.device)
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.saved_model_file = str(resume_file)
        self.start_epoch = ckpt.training["epoch"] + 1
        self.cur_step = ckpt.training["cur_step"]
        self.best_valid_score = ckpt.training["best_valid_score"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    # -- evaluation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation, loading our checkpoints; also keeps per-user top-k metrics in `last_per_user`
        ({"user_id": [raw ids], "ndcg@10": array, ...})."""
        if not eval_data:
            return None
        kept = getattr(self, "_kept_state", None)
        if load_best_model and model_file is None and kept is not None:  # a rank of a DDP run but the first
            self.model.load_state_dict(kept[0])
            self.model.load_other_parameter(kept[1])
        elif load_best_model:
            path = model_file or self.saved_model_file
            ckpt = checkpoint.read(path, map_location=self.device)
            ckpt.check_matches(self.config["model"], self.config["dataset"],
                               checkpoint.dataset_fingerprint(compat.dataset_of(eval_data)))
            ckpt.restore_into(self.model, device=self.device)
            self.logger.info(f"Loading model structure and parameters from {path}")
        self._eval_users, captured = [], {}
        evaluate_struct = self.evaluator.evaluate

        def recording(struct):
            if distributed.is_distributed(self.config):  # every rank scores the whole split, as one process would
                struct, users = distributed.gather_rows(struct, torch.cat(self._eval_users), eval_data,
                                                        compat.PER_ROW_STRUCT_KEYS)
                self._eval_users = [users]
            captured["struct"] = struct
            return evaluate_struct(struct)

        self.evaluator.evaluate = recording
        try:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            del self.evaluator.evaluate  # back to the class's method
        self.last_per_user = None
        if "struct" in captured and self._eval_users:
            dataset = compat.dataset_of(eval_data)
            tokens = dataset.field2id_token[dataset.uid_field]
            users = torch.cat(self._eval_users).numpy()
            self.last_per_user = {"user_id": [str(t) for t in tokens[users]],
                                  **per_user_topk_metrics(self.config, captured["struct"])}
        return result

    def _map_reduce(self, result, num_sample):
        return result  # RecBole's per-rank mean of means; `recording` above already scored the gathered split

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if hasattr(self, "_eval_users"):
            self._eval_users.append(interaction[self.config["USER_ID_FIELD"]].cpu())
        return interaction, scores, positive_u, positive_i

    # -- named loss terms ------------------------------------------------------------------------------------------
    def _loss_names(self, losses):
        names = contract.loss_names(self.model)
        if isinstance(losses, tuple) and names and len(names) == len(losses):
            return list(names)
        return None

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        names = self._loss_names(losses)
        if names is None:
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        places = self.config["loss_decimal_place"] or 4
        terms = ", ".join(f"{name}: {value:.{places}f}" for name, value in zip(names, losses))
        return f"epoch {epoch_idx} training [time: {e_time - s_time:.2f}s, loss: {sum(losses):.{places}f} = {terms}]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        names = self._loss_names(losses)
        if names is None:
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in zip(names, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        self.tensorboard.add_scalar(tag, sum(losses), epoch_idx)


class MMTrainer(TrainingMixin, Trainer):
    """RecBole's gradient Trainer with everything TrainingMixin adds: the trainer of our gradient-trained models
    (and of RecBole's models whose trainer RecBole picks as its plain `Trainer`)."""


@lru_cache(maxsize=None)
def with_training(base: type) -> type:
    """`base` (a RecBole trainer class) with TrainingMixin in front; one class per base."""
    if issubclass(base, TrainingMixin):
        return base
    if base is Trainer:
        return MMTrainer
    return type(base.__name__, (TrainingMixin, base), {"__module__": __name__, "__doc__": base.__doc__})
