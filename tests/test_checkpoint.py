"""Safe checkpoints: identical predictions after reload, refusal of foreign/corrupt/pickled files, atomic writes."""
import os

import pytest
import torch

from mmrecbole import checkpoint
from mmrecbole.errors import CheckpointError
from mmrecbole.quick_start import evaluate_checkpoint, load, load_run, run
from tests.planted import FAST, write_ring_dataset

QUICK = {"epochs": 3, "embedding_size": 16, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "k": 5}
RELEVANT = {"BPR": ["embedding_size"], "ItemKNN": ["k"], "Pop": [],
            "SASRec": ["hidden_size", "inner_size", "n_layers"]}


def _train(model, data_path, **extra):
    settings = {**FAST, "data_path": data_path, "epochs": 3, **{k: QUICK[k] for k in RELEVANT[model]}, **extra}
    return run(model, "planted", config_dict=settings, console_log=False)


def _scores(loaded):
    """Full-ranking scores for the first test batch, as the evaluator computes them."""
    batch = next(iter(loaded.test))
    with torch.no_grad():
        return loaded.model.full_sort_predict(batch[0]).reshape(len(batch[0]), -1)


@pytest.mark.parametrize("model", ["BPR", "ItemKNN", "Pop", "SASRec"])
def test_round_trip_gives_identical_predictions_and_metrics(model, ring_data_path):
    result = _train(model, ring_data_path)
    first, second = load_run(result["checkpoint"]), load_run(result["checkpoint"])
    assert torch.equal(_scores(first), _scores(second))
    # Same weights as the run's own best-model evaluation: same test metrics.
    assert evaluate_checkpoint(result["checkpoint"])["test"] == result["test"]
    config, dataset, loaded_model = load(result["checkpoint"])
    assert config["model"] == model and dataset.item_num == 41 and not loaded_model.training


def test_other_model_or_dataset_is_refused(ring_data_path, tmp_path):
    result = _train("BPR", ring_data_path)
    with pytest.raises(CheckpointError, match="holds a BPR model, not SASRec"):
        evaluate_checkpoint(result["checkpoint"], expect_model="SASRec")
    with pytest.raises(CheckpointError, match="trained on dataset 'planted', not 'ml-100k'"):
        evaluate_checkpoint(result["checkpoint"], expect_dataset="ml-100k")


def test_changed_dataset_is_refused(tmp_path):
    data_path = write_ring_dataset(tmp_path / "data")
    result = _train("BPR", data_path)
    write_ring_dataset(tmp_path / "data", n_users=70)  # same name, other users/items
    with pytest.raises(CheckpointError, match="its files or filtering changed"):
        load(result["checkpoint"])


def test_truncated_file_gives_clean_error(ring_data_path, tmp_path):
    result = _train("BPR", ring_data_path)
    cut = tmp_path / "cut.pth"
    data = open(result["checkpoint"], "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.read(cut)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read(tmp_path / "missing.pth")


class _Exploit:
    """Unpickling this would create a file: proof that reading never unpickles objects."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_loading_never_unpickles_objects(tmp_path):
    marker = tmp_path / "unpickled"
    bad = tmp_path / "bad.pth"
    torch.save({"format": checkpoint.FORMAT, "payload": _Exploit(str(marker))}, bad)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        checkpoint.read(bad)
    assert not marker.exists()


def test_recbole_style_checkpoint_is_refused(ring_data_path, tmp_path):
    # RecBole pickles its Config object into checkpoints.
    from mmrecbole.config import Config

    config = Config("BPR", "planted", config_dict={"data_path": ring_data_path})
    path = tmp_path / "recbole.pth"
    torch.save({"config": config, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        checkpoint.read(path)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt" / "model.pth"

    def boom(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.atomic_torch_save({"x": 1}, str(target))
    assert os.listdir(target.parent) == []


def test_sparse_and_array_state_round_trip():
    import numpy as np
    import scipy.sparse as sp

    class Model:
        def __init__(self):
            self.w = sp.random(5, 4, density=0.5, format="lil", random_state=0)
            self.counts = np.arange(4.0)
            self.cache = None

        def other_parameter(self):
            return {"w": self.w, "counts": self.counts, "cache": self.cache}

    encoded = checkpoint.encode_other_parameters(Model())
    decoded = checkpoint.decode_other_parameters(encoded, "cpu")
    assert decoded["w"].getformat() == "lil" and (decoded["w"] != Model().w).nnz == 0
    assert np.array_equal(decoded["counts"], np.arange(4.0)) and decoded["cache"] is None


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = tmp_path / "x.pth"
    checkpoint.atomic_torch_save({"x": 1}, str(path))
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
