"""Packaged text encoders by name: the split-zip install (tiny planted pieces), the choice between text_encoder and
text_encoder_path, one feature file per encoder; the real all-mpnet-base-v2 against sentence-transformers when its
wheels are installed (`make mpnet`)."""
import hashlib
import importlib.util
import io
import os
import zipfile

import numpy as np
import pytest

from mmrecbole.errors import FeatureError
from mmrecbole.features import feature_path, load_or_build_features
from mmrecbole.features import packaged
from mmrecbole.features.packaged import SplitZipModel, assemble_split_zip, packaged_encoder_path
from mmrecbole.features.store import text_encoder_folder
from tests.feature_fixtures import toy_settings, write_toy_dataset

WEIGHTS = bytes(range(256)) * 40  # 10 KiB of "weights"


def _planted_pieces(folder, n_pieces=3, weights=WEIGHTS):
    """A zip of tiny/{config.json, model.safetensors, desktop.ini} split into n_pieces files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("tiny/config.json", '{"hidden_size": 4}')
        archive.writestr("tiny/model.safetensors", weights)
        archive.writestr("tiny/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("elsewhere/other.txt", "not part of the model")
    data = buffer.getvalue()
    cut = [len(data) * k // n_pieces for k in range(n_pieces + 1)]
    pieces = []
    for k in range(n_pieces):
        path = folder / f"tiny.zip.{k + 1:03d}"
        path.write_bytes(data[cut[k]:cut[k + 1]])
        pieces.append(str(path))
    return pieces


def _model(weights=WEIGHTS, packages=("p1", "p2", "p3")):
    return SplitZipModel(packages=packages, piece_suffix="input/tiny.zip.", folder="tiny",
                         weights="model.safetensors", weights_bytes=len(weights),
                         weights_sha256=hashlib.sha256(weights).hexdigest())


def test_pieces_join_into_the_checked_model_folder(tmp_path):
    pieces = _planted_pieces(tmp_path)
    destination = tmp_path / "cache" / "tiny"
    assert assemble_split_zip(_model(), pieces, str(destination), "tiny") == str(destination)
    assert sorted(os.listdir(destination)) == ["config.json", "model.safetensors"]  # Windows desktop.ini dropped
    assert (destination / "model.safetensors").read_bytes() == WEIGHTS
    assert os.listdir(tmp_path / "cache") == ["tiny"]  # the work folder (joined zip, unpacked copy) is gone
    # Reused once in place: the pieces are not read again.
    assert assemble_split_zip(_model(), [str(tmp_path / "gone")], str(destination), "tiny") == str(destination)


def test_weights_that_do_not_match_leave_nothing_behind(tmp_path):
    pieces = _planted_pieces(tmp_path)
    wrong = _model(weights=WEIGHTS[:-1] + b"x")  # same size, other sha256
    with pytest.raises(FeatureError, match=r"tiny: model.safetensors is 10,240 bytes, sha256 [0-9a-f]{8}…, expected "
                                           r"10,240 bytes.*force-reinstall"):
        assemble_split_zip(wrong, pieces, str(tmp_path / "cache" / "tiny"), "tiny")
    assert os.listdir(tmp_path / "cache") == []
    short = _model(weights=WEIGHTS + b"more")
    with pytest.raises(FeatureError, match=r"is 10,240 bytes, expected 10,244 bytes"):
        assemble_split_zip(short, pieces, str(tmp_path / "cache" / "tiny"), "tiny")


def test_pieces_out_of_order_or_missing_do_not_join(tmp_path):
    pieces = _planted_pieces(tmp_path)
    with pytest.raises(FeatureError, match="do not join into a zip"):
        assemble_split_zip(_model(), pieces[::-1], str(tmp_path / "cache" / "tiny"), "tiny")
    with pytest.raises(FeatureError, match="do not join into a zip"):
        assemble_split_zip(_model(), pieces[:2], str(tmp_path / "cache" / "tiny"), "tiny")
    assert os.listdir(tmp_path / "cache") == []


def test_missing_wheels_are_named_with_the_install_command():
    model = _model(packages=("mmrecbole-test-no-such-part-001", "mmrecbole-test-no-such-part-002"))
    with pytest.raises(FeatureError, match=r"needs 2 packages, 2 not installed \(mmrecbole-test-no-such-part-001, "
                                           r"mmrecbole-test-no-such-part-002\); run `make mpnet`"):
        packaged._installed_pieces(model, "tiny")


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MMRECBOLE_CACHE_DIR", str(tmp_path / "mine"))
    assert packaged.cache_dir() == str(tmp_path / "mine" / "encoders")
    monkeypatch.delenv("MMRECBOLE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert packaged.cache_dir() == str(tmp_path / "xdg" / "mmrecbole" / "encoders")


def test_encoder_names_and_folders_are_one_choice(tiny_bert_dir):
    with pytest.raises(FeatureError, match=r"text_encoder must be one of \['all-MiniLM-L6-v2', 'all-mpnet-base-v2'\], "
                                           r"got 'bert-large'"):
        packaged_encoder_path("bert-large")
    with pytest.raises(FeatureError, match="text_encoder .all-mpnet-base-v2. and text_encoder_path .* set one"):
        text_encoder_folder({"text_encoder": "all-mpnet-base-v2", "text_encoder_path": tiny_bert_dir})
    assert text_encoder_folder({"text_encoder_path": tiny_bert_dir}) == tiny_bert_dir  # the default name yields


def test_a_second_packaged_encoder_gets_its_own_feature_file(tmp_path, tiny_bert_dir, tiny_image_weights,
                                                             monkeypatch):
    from tests.feature_fixtures import make_tiny_bert

    other = make_tiny_bert(str(tmp_path / "other_bert"), seed=3)
    monkeypatch.setitem(packaged.PACKAGED_TEXT_ENCODERS, "all-mpnet-base-v2", lambda: other)
    paths = write_toy_dataset(str(tmp_path / "data"))
    settings = toy_settings(paths["data_path"], tiny_bert_dir, tiny_image_weights)
    default = load_or_build_features("toy", "text", settings)
    mpnet_settings = dict(settings, text_encoder="all-mpnet-base-v2", text_encoder_path=None)
    second = load_or_build_features("toy", "text", mpnet_settings)
    default_file = feature_path("toy", "text", paths["data_path"])
    second_file = feature_path("toy", "text", paths["data_path"], "all-mpnet-base-v2")
    assert os.path.basename(second_file) == "text.all-mpnet-base-v2.npz"
    assert os.path.isfile(default_file) and os.path.isfile(second_file)
    assert not np.allclose(default.matrix, second.matrix)
    # Both stay up to date side by side: reading either again encodes nothing.
    from mmrecbole.features.store import plan_features, stored_status

    assert stored_status(plan_features("toy", "text", settings))[1] == "up to date"
    assert stored_status(plan_features("toy", "text", mpnet_settings))[1] == "up to date"
    assert feature_path("toy", "image", paths["data_path"], "all-mpnet-base-v2").endswith("image.npz")


def _installed(package: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return distribution(package) is not None
    except PackageNotFoundError:
        return False


_MPNET_INSTALLED = importlib.util.find_spec("sentence_transformers") is not None and all(
    _installed(package) for package in packaged.MPNET.packages)


@pytest.mark.skipif(not _MPNET_INSTALLED, reason="all-mpnet-base-v2 wheels not installed (make mpnet)")
def test_packaged_mpnet_equals_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from mmrecbole.features.text import TextEncoder

    folder = packaged_encoder_path("all-mpnet-base-v2")
    encoder = TextEncoder(folder, device="cpu")
    assert encoder.dim == 768 and encoder.max_length == 384
    texts = ["Swingline stapler, 20 sheets. Office Products. Swingline", "Post-it notes, 3 x 3 in, yellow",
             "  A much longer description of a ballpoint pen " * 30]
    ours = encoder.encode(texts)
    theirs = SentenceTransformer(folder, device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
