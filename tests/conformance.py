"""Conformance tests every recommender reuses (in the spirit of implicit's recommender_base_test.py).

A test class mixes in `RecommenderConformance` and sets:
  MODEL            model name as the registry knows it
  SETTINGS         config overrides that make the model small and quick on the planted ring data
  GRADIENT_TRAINED False for models fitted in one pass (Pop, ItemKNN, implicit's): skips loss/seed checks
  DATASET          dataset name under the `data_path` fixture (default "planted", tests/planted.py); override the
                   fixture to use another dataset

The checks: score shapes; `predict` equals the matching entries of `full_sort_predict`; finite training loss that
decreases; same seed -> same scores; checkpoint round trip -> identical scores; the padding item and seen items never
reach a top-k; and, on CUDA machines, training runs there and a CPU-trained model scores the same on the GPU.
"""
from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction

from mmrecbole import checkpoint
from mmrecbole.config import Config
from mmrecbole.quick_start import build, load_run
from mmrecbole.trainer import make_trainer
from tests.planted import FAST


class RecommenderConformance:
    MODEL: str = ""
    SETTINGS: dict = {}
    GRADIENT_TRAINED = True
    EPOCHS = 2
    DATASET = "planted"

    @pytest.fixture
    def data_path(self, ring_data_path):
        return ring_data_path

    # -- helpers ------------------------------------------------------------------------------------------------
    def make_config(self, data_path, **extra) -> Config:
        settings = {**FAST, "data_path": data_path, "epochs": self.EPOCHS, **self.SETTINGS, **extra}
        return Config(self.MODEL, self.DATASET, config_dict=settings)

    def fitted(self, data_path, saved=False, **extra):
        """(config, trainer, valid, test) after training with the model's trainer."""
        config = self.make_config(data_path, **extra)
        _, train, valid, test, model = build(config)
        trainer = make_trainer(config, model)
        trainer.fit(train, valid, saved=saved, show_progress=False)
        trainer.model.eval()
        return config, trainer, valid, test

    @staticmethod
    def first_batch(loader):
        return next(iter(loader))

    @staticmethod
    @torch.no_grad()
    def full_scores(model, interaction, device=None, on_device=False):
        """Scores of every item, as the evaluator gets them (predict over all items when a model has no
        full_sort_predict, e.g. NeuMF), for the interaction moved to `device` (default: where the model's tensors
        are); as float32 on the CPU unless `on_device`."""
        device = device if device is not None else next_device(model)
        interaction = interaction.to(device)
        try:
            scores = model.full_sort_predict(interaction)
        except NotImplementedError:
            n_items = model.n_items
            paired = interaction.repeat_interleave(n_items)
            paired.update(Interaction({model.ITEM_ID: torch.arange(n_items).repeat(len(interaction))}))
            scores = model.predict(paired.to(device))
        scores = scores.reshape(len(interaction), -1)
        return scores if on_device else scores.float().cpu()

    # -- the contract -------------------------------------------------------------------------------------------
    def test_scores_have_the_right_shape_and_predict_agrees_with_full_sort(self, data_path):
        config, trainer, _, test = self.fitted(data_path)
        model = trainer.model
        interaction = self.first_batch(test)[0]
        n_items = test._dataset.item_num
        full = self.full_scores(model, interaction)
        assert full.shape == (len(interaction), n_items)
        assert torch.isfinite(full[:, 1:]).all()

        items = torch.tensor([1, 2, n_items // 2, n_items - 1])
        paired = interaction.repeat_interleave(len(items))
        paired.update(Interaction({config["ITEM_ID_FIELD"]: items.repeat(len(interaction))}))
        with torch.no_grad():
            single = model.predict(paired.to(next_device(model))).reshape(len(interaction), len(items)).float().cpu()
        torch.testing.assert_close(single, full[:, items], rtol=1e-5, atol=1e-5)

    def test_training_loss_is_finite_and_decreases(self, data_path):
        if not self.GRADIENT_TRAINED:
            pytest.skip("fitted in one pass, no loss curve")
        _, trainer, _, _ = self.fitted(data_path, epochs=6, stopping_step=100)
        losses = [float(sum(v) if isinstance(v, tuple) else v) for v in trainer.train_loss_dict.values()]
        assert all(torch.isfinite(torch.tensor(losses)))
        assert losses[-1] < losses[0], losses

    def test_same_seed_gives_same_scores(self, data_path):
        first = self.fitted(data_path, seed=7)
        second = self.fitted(data_path, seed=7)
        batch = self.first_batch(first[3])[0]
        assert torch.equal(self.full_scores(first[1].model, batch), self.full_scores(second[1].model, batch))
        if self.GRADIENT_TRAINED:
            other = self.fitted(data_path, seed=8)
            assert not torch.equal(self.full_scores(first[1].model, batch), self.full_scores(other[1].model, batch))

    def test_checkpoint_round_trip_gives_identical_scores(self, data_path):
        # One epoch: the saved (best) model is the model in memory.
        config, trainer, _, test = self.fitted(data_path, saved=True, epochs=1)
        loaded = load_run(trainer.saved_model_file)
        batch = self.first_batch(test)[0]
        assert torch.equal(self.full_scores(trainer.model, batch), self.full_scores(loaded.model, batch))

    def test_padding_and_seen_items_never_reach_the_top_k(self, data_path):
        config, trainer, _, test = self.fitted(data_path)
        trainer.tot_item_num = test._dataset.item_num
        batch = self.first_batch(test)
        with torch.no_grad():
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
        top = scores.topk(10, dim=1).indices.cpu()
        assert (top != 0).all()
        seen = _seen_items(config, test, interaction, batch)
        for row, items in enumerate(seen):
            assert not set(top[row].tolist()) & items

    def test_its_bundle_serves_the_checkpoint_scores_without_the_dataset(self, data_path, monkeypatch):
        # The bundle rebuilds the model without RecBole's dataset build: every (user or sequence, item) score a
        # Recommender returns equals the trained model's, and a sequential model's input is the evaluation's.
        from mmrecbole import quick_start
        from mmrecbole.data import build as data_build
        from mmrecbole.serving import Recommender

        config, trainer, _, test = self.fitted(data_path, saved=True, epochs=1)
        bundle = quick_start.write_bundle(trainer.saved_model_file)

        def no_dataset(*args, **kwargs):
            raise AssertionError("serving built a RecBole dataset")

        monkeypatch.setattr(data_build, "create_dataset", no_dataset)
        monkeypatch.setattr(quick_start, "create_dataset", no_dataset)
        recommender = Recommender.load(bundle)
        interaction = self.first_batch(test)[0]
        expected = self.full_scores(trainer.model, interaction)
        dataset = test._dataset
        items = dataset.field2id_token[dataset.iid_field]
        users = [str(dataset.field2id_token[dataset.uid_field][u]) for u in interaction[dataset.uid_field].tolist()]
        everything = len(items) - 1
        if recommender.sequential:
            seq_field, length_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]
            sequences = [[str(items[i]) for i in row[:n].tolist()]
                         for row, n in zip(interaction[seq_field], interaction[length_field].tolist())]
            for user, sequence in zip(users, sequences):  # the test input = the known history but its last item
                assert recommender.history_of(user)[:-1][-len(sequence):] == sequence
                assert len(sequence) == min(len(recommender.history_of(user)) - 1, config["MAX_ITEM_LIST_LENGTH"])
            answers = recommender.recommend_histories(sequences, k=everything, exclude_seen=False)
        else:
            answers = recommender.recommend(users, k=everything, exclude_seen=False)
        index = {str(token): i for i, token in enumerate(items)}
        for row, answer in enumerate(answers):
            served = torch.zeros(len(items))
            for item in answer.items:
                served[index[item.item_id]] = item.score
            assert len(answer.items) == everything
            torch.testing.assert_close(served[1:], expected[row, 1:], rtol=1e-5, atol=1e-5)

    @pytest.mark.gpu
    def test_a_cpu_trained_model_scores_the_same_on_cuda(self, data_path):
        # The same weights on both devices: two separate fits cannot be compared (CUDA draws other random numbers for
        # dropout and negatives, so the trained weights differ), but a checkpoint moved across devices must rank alike.
        _, trainer, _, test = self.fitted(data_path, saved=True, epochs=1, gpu_id="")
        config = self.make_config(data_path, epochs=1)
        _, _, _, _, cuda_model = build(config)
        device = torch.device(config["device"])
        assert device.type == "cuda"
        checkpoint.read(trainer.saved_model_file).restore_into(cuda_model, device=device)
        cuda_model.eval()
        batch = self.first_batch(test)[0]
        on_cuda = self.assert_scores_on(cuda_model, batch, device)
        torch.testing.assert_close(on_cuda.float().cpu(), self.full_scores(trainer.model, batch),
                                   rtol=1e-4, atol=1e-4)

    @pytest.mark.gpu
    def test_trains_on_cuda(self, data_path):
        config, trainer, _, test = self.fitted(data_path, epochs=2, stopping_step=100)
        device = torch.device(config["device"])
        assert device.type == "cuda"
        scores = self.assert_scores_on(trainer.model, self.first_batch(test)[0], device)
        assert torch.isfinite(scores[:, 1:]).all()
        if self.GRADIENT_TRAINED:
            losses = [float(sum(v) if isinstance(v, tuple) else v) for v in trainer.train_loss_dict.values()]
            assert all(torch.isfinite(torch.tensor(losses)))

    def assert_scores_on(self, model, interaction, device):
        """Full scores for an interaction on `device`, checked to come back there (the evaluator ranks them there)
        and computed there by every model that has tensors (implicit's item-kNN keeps scipy matrices: host work)."""
        if any(True for _ in model.parameters()) or any(True for _ in model.buffers()):
            assert next_device(model).type == device.type
        scores = self.full_scores(model, interaction, device=device, on_device=True)
        assert scores.device.type == device.type
        return scores


def next_device(model):
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _seen_items(config, loader, interaction, batch):
    """Per row of the batch: the items the user interacted with before the evaluated one."""
    seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if seq_field in interaction:
        return [set(row[row > 0].tolist()) for row in interaction[seq_field]]
    history_u, history_i = batch[1]
    seen = [set() for _ in range(len(interaction))]
    for u, i in zip(history_u.tolist(), history_i.tolist()):
        seen[u].add(i)
    return seen
