"""Shared fixtures. Tests run in a temporary working directory so saved/, log/ and log_tensorboard/ never land in
the checkout."""
import warnings

import pytest
import torch

from tests.planted import write_ring_dataset

# One thread per test process keeps tiny-model tests fast and stable on 2-core CI machines.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture(autouse=True)
def _close_run_log_handlers():
    """A run's console handler writes to the stderr it was created with: in pytest, the capture of that test. Close
    it afterwards, so that a later test that logs without starting a run does not write to a closed capture."""
    yield
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_mmrecbole_handler", False)]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture(scope="session")
def ring_data_path(tmp_path_factory):
    """data_path of the planted ring dataset 'planted' (see tests/planted.py)."""
    return write_ring_dataset(tmp_path_factory.mktemp("data"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---- item feature fixtures (issue 3): a tiny random BERT and random MobileNetV2 weights, built once per session ----
@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-wide random BERT + WordPiece tokenizer saved as a local Hugging Face folder."""
    from tests.feature_fixtures import make_tiny_bert

    return make_tiny_bert(str(tmp_path_factory.mktemp("tiny_bert")), seed=0)


@pytest.fixture(scope="session")
def tiny_image_weights(tmp_path_factory):
    """A random-init MobileNetV2 state dict (.pth); use with image_resize/crop 72/64 to keep forwards cheap."""
    from tests.feature_fixtures import make_mobilenet_weights

    return make_mobilenet_weights(str(tmp_path_factory.mktemp("cnn") / "mobilenet_v2_random.pth"), seed=0)
