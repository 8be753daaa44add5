"""load_or_build_features: provenance decides reuse vs rebuild; the CLI on a toy dataset."""
import os

import numpy as np
import pytest
import yaml

from mmrecbole import PROPERTIES_DIR
from mmrecbole.errors import ConfigError, FeatureError
from mmrecbole.features import FEATURE_DEFAULTS, feature_path, load_or_build_features
from mmrecbole.features.__main__ import main as features_cli
from mmrecbole.features.image import FeatureWarning, ImageEncoder
from mmrecbole.features.text import TextEncoder
from tests.feature_fixtures import TOY_ITEMS, StubDataset, make_tiny_bert, toy_settings, write_toy_dataset


@pytest.fixture
def toy(tmp_path, tiny_bert_dir, tiny_image_weights):
    paths = write_toy_dataset(str(tmp_path / "data"))
    paths["settings"] = toy_settings(paths["data_path"], tiny_bert_dir, tiny_image_weights)
    return paths


@pytest.fixture
def encode_calls(monkeypatch):
    """Counts encoder runs of either modality."""
    calls = {"text": 0, "image": 0}
    text_encode, image_encode = TextEncoder.encode, ImageEncoder.encode

    def counted_text(self, texts):
        calls["text"] += 1
        return text_encode(self, texts)

    def counted_image(self, paths, labels=None):
        calls["image"] += 1
        return image_encode(self, paths, labels)

    monkeypatch.setattr(TextEncoder, "encode", counted_text)
    monkeypatch.setattr(ImageEncoder, "encode", counted_image)
    return calls


def test_text_table_reuse_and_rebuild_triggers(toy, encode_calls, tmp_path):
    settings = toy["settings"]
    table = load_or_build_features("toy", "text", settings)
    assert os.path.isfile(feature_path("toy", "text", toy["data_path"]))
    assert table.ids.tolist() == list(TOY_ITEMS) and table.mask.tolist() == [True, True, True, False, True]
    assert not table.matrix[3].any() and table.dim == 32
    assert encode_calls["text"] == 1

    again = load_or_build_features("toy", "text", settings)  # nothing changed: reuse, no encoder run
    assert encode_calls["text"] == 1
    np.testing.assert_array_equal(again.matrix, table.matrix)

    load_or_build_features("toy", "text", dict(settings, text_template="{movie_title}"))
    assert encode_calls["text"] == 2
    load_or_build_features("toy", "text", dict(settings, text_pooling="cls"))
    assert encode_calls["text"] == 3

    other_bert = make_tiny_bert(str(tmp_path / "other_bert"), seed=1)
    load_or_build_features("toy", "text", dict(settings, text_encoder_path=other_bert))
    assert encode_calls["text"] == 4

    load_or_build_features("toy", "text", settings)  # back to the original settings: differs from the stored one
    assert encode_calls["text"] == 5
    item_file = os.path.join(toy["folder"], "toy.item")
    with open(item_file, encoding="utf-8") as handle:
        text = handle.read()
    with open(item_file, "w", encoding="utf-8") as handle:
        handle.write(text.replace("Toys come alive.", "Toys come alive at night."))
    load_or_build_features("toy", "text", settings)
    assert encode_calls["text"] == 6
    load_or_build_features("toy", "text", settings)
    assert encode_calls["text"] == 6


def test_image_table_reuse_rebuild_and_alignment(toy, encode_calls):
    settings = toy["settings"]
    with pytest.warns(FeatureWarning, match=r"\['3'\]"):
        table = load_or_build_features("toy", "image", settings)
    assert table.mask.tolist() == [True, True, False, False, True]  # 3 corrupt, 4 has no poster
    assert table.provenance["info"]["unreadable_item_ids"] == ["3"]
    load_or_build_features("toy", "image", settings)
    assert encode_calls["image"] == 1

    from PIL import Image

    Image.new("RGB", (40, 60), (0, 255, 0)).save(os.path.join(toy["image_dir"], "4.jpg"))  # a new poster
    with pytest.warns(FeatureWarning, match=r"\['3'\]"):
        table = load_or_build_features("toy", "image", settings)
    assert encode_calls["image"] == 2 and table.mask.tolist() == [True, True, False, True, True]

    matrix, mask = table.align(StubDataset(["5", "1", "3"]))  # RecBole order after filtering items 2 and 4
    assert mask.tolist() == [False, True, True, False]
    np.testing.assert_array_equal(matrix[1].numpy(), table.vector("5"))


def test_stale_or_damaged_file_is_rebuilt(toy, encode_calls):
    settings = toy["settings"]
    load_or_build_features("toy", "text", settings)
    with open(feature_path("toy", "text", toy["data_path"]), "wb") as handle:
        handle.write(b"truncated")
    table = load_or_build_features("toy", "text", settings)
    assert encode_calls["text"] == 2 and table.dim == 32
    load_or_build_features("toy", "text", settings, force=True)
    assert encode_calls["text"] == 3


def test_bad_settings_and_missing_inputs(toy, tmp_path):
    settings = toy["settings"]
    with pytest.raises(FeatureError, match="modality must be one of"):
        load_or_build_features("toy", "audio", settings)
    with pytest.raises(FeatureError, match=r"\['plot'\]"):
        load_or_build_features("toy", "text", dict(settings, text_template="{plot}"))
    with pytest.raises(FeatureError, match="text_normalize must be true or false"):
        load_or_build_features("toy", "text", dict(settings, text_normalize="yes"))
    with pytest.raises(FeatureError, match="feature_batch_size must be an integer"):
        load_or_build_features("toy", "text", dict(settings, feature_batch_size=0))
    with pytest.raises(FeatureError, match="image folder not found"):
        load_or_build_features("toy", "image", dict(settings, image_dir=str(tmp_path / "none")))
    with pytest.raises(FeatureError, match="text encoder folder not found"):
        load_or_build_features("toy", "text", dict(settings, text_encoder_path=str(tmp_path / "none")))


def test_property_file_documents_every_feature_key_with_its_default():
    path = os.path.join(PROPERTIES_DIR, "dataset", "ml-100k-mm.yaml")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    properties = yaml.safe_load("\n".join(lines))
    for key, default in FEATURE_DEFAULTS.items():
        assert key in properties and properties[key] == default, key
    assert properties["load_col"]["item"] == ["item_id", "movie_title", "release_year", "genre"]
    top_level = [line for line in lines if line and not line.startswith((" ", "#"))]
    assert all("# (" in line for line in top_level), [line for line in top_level if "# (" not in line]


def test_cli_extract_inspect_and_user_errors(toy, capsys):
    # "{movie_title}" must reach the template verbatim (YAML would parse it as a mapping).
    flags = [f"--{key}={value}" for key, value in toy["settings"].items()] + ["--text_template={movie_title}"]
    assert features_cli(["extract", "--dataset=toy", "--modality=text", *flags]) == 0
    assert "text: built (missing): 4/5 items have it" in capsys.readouterr().out
    assert features_cli(["extract", "--dataset=toy", "--modality=text", *flags]) == 0
    assert "text: reused (up to date)" in capsys.readouterr().out

    assert features_cli(["inspect", "--dataset=toy", "--items=1,4", "--k=2", *flags]) == 0
    out = capsys.readouterr().out
    assert "text: up to date; 4 of 5 items have it, 1 lack it; 80.0% of 15 interactions" in out
    assert "image: missing" in out
    assert "nearest neighbours of item 1 Star Wars (1977)" in out and "item has no text feature" in out

    assert features_cli(["extract", "--dataset=toy", "--bogus=1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown feature setting --bogus") and err.count("\n") == 1
    assert features_cli(["extract", "--dataset=toy", "--modality=text", *flags, "--text_encoder_path=/no/such"]) == 2
    assert "text encoder folder not found: /no/such" in capsys.readouterr().err


def test_cli_settings_are_layered_and_parsed_as_every_configuration(tmp_path):
    from mmrecbole.features.__main__ import load_settings

    path = tmp_path / "features.yaml"
    path.write_text("feature_batch_size: 8\nlearning_rate: 1e-3\ntext_pooling: cls\n")
    settings = load_settings("toy", [str(path)], ["--feature_batch_size=16", "--text_template={movie_title}"])
    assert settings["learning_rate"] == 0.001 and isinstance(settings["learning_rate"], float)  # not "1e-3"
    assert settings["feature_batch_size"] == 16 and settings["text_pooling"] == "cls"  # flags win over files
    assert settings["text_template"] == "{movie_title}"
    with pytest.raises(ConfigError, match="feature setting 'feature_batch_size' in command-line flag "
                                          "--feature_batch_size must be an integer"):
        load_settings("toy", [], ["--feature_batch_size=lots"])
    with pytest.raises(ConfigError, match="unknown feature setting --epochs"):
        load_settings("toy", [], ["--epochs=3"])


def test_only_a_dataset_that_declares_an_image_folder_gets_the_default_posters(tmp_path):
    from mmrecbole.errors import FeatureError
    from mmrecbole.features.store import resolve_image_dir

    raw = str(tmp_path / "raw")
    # ml-100k-mm's property file declares `image_dir: ~`: the posters beside its raw data
    assert resolve_image_dir("/d/ml-100k-mm", {"image_dir": None, "mm_raw_dir": raw}) == os.path.join(raw, "posters")
    assert resolve_image_dir("/d/shop", {"image_dir": "pictures"}) == "/d/shop/pictures"
    with pytest.raises(FeatureError, match="declares no image folder"):  # would have read ml-100k-mm's posters
        resolve_image_dir("/d/shop", {"mm_raw_dir": raw})
