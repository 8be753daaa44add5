"""Config: layering order, strict keys, typed values, no eval()."""
import sys

import pytest

from mmrecbole.config import Config, parse_value
from mmrecbole.errors import ConfigError


def _config(ring_data_path, model="SASRec", files=None, config_dict=None, cmd=None):
    return Config(model, "planted", files, {"data_path": ring_data_path, **(config_dict or {})}, cmd)


def test_layering_order(tmp_path, ring_data_path):
    # RecBole's default valid_metric is MRR@10; properties/overall.yaml says NDCG@10.
    base = _config(ring_data_path)
    assert base["valid_metric"] == "NDCG@10"
    # RecBole's SASRec.yaml says hidden_dropout_prob 0.5; properties/model/SASRec.yaml says 0.2.
    assert base["hidden_dropout_prob"] == 0.2
    # Our overall.yaml sets leave-one-out by time for every model, not only sequential ones.
    assert Config("BPR", "planted", config_dict={"data_path": ring_data_path})["eval_args"]["split"] == {
        "LS": "valid_and_test"}

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("hidden_dropout_prob: 0.3\nlearning_rate: 0.01\nn_layers: 3\n")
    second.write_text("hidden_dropout_prob: 0.4\n")
    layered = _config(ring_data_path, files=[str(first), str(second)], config_dict={"learning_rate": 0.02},
                      cmd={"learning_rate": 0.05})
    assert layered["n_layers"] == 3  # file over properties
    assert layered["hidden_dropout_prob"] == 0.4  # later file over earlier file
    assert layered["learning_rate"] == 0.05  # command line over config_dict over files
    assert layered.source_of("learning_rate") == "command line"
    assert layered.source_of("n_layers") == str(first)


def test_typo_in_file_names_key_file_and_closest(tmp_path, ring_data_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        _config(ring_data_path, files=[str(bad)])
    message = str(err.value)
    assert "learnig_rate" in message and str(bad) in message and "learning_rate" in message


def test_typo_on_command_line_and_nested_key(ring_data_path):
    with pytest.raises(ConfigError, match=r"--stoping_step.*stopping_step"):
        _config(ring_data_path, cmd={"stoping_step": 3})
    with pytest.raises(ConfigError, match=r"'oder' inside 'eval_args'.*'order'"):
        _config(ring_data_path, cmd={"eval_args": {"oder": "TO"}})


def test_values_are_never_evaluated(ring_data_path, tmp_path):
    payload = "__import__('os').system('touch pwned')"
    assert parse_value(payload) == payload
    config = _config(ring_data_path, cmd={"learner": parse_value(payload)})
    assert config["learner"] == payload
    assert not (tmp_path / "work" / "pwned").exists()
    # YAML tags that would construct Python objects are refused.
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("learner: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        _config(ring_data_path, files=[str(tagged)])


def test_command_line_values_parse_as_yaml():
    assert parse_value("1e-3") == 0.001
    assert parse_value("[10,20]") == [10, 20]
    assert parse_value("{LS: valid_and_test}") == {"LS": "valid_and_test"}
    assert parse_value("true") is True
    assert parse_value("NDCG@10") == "NDCG@10"


def test_wrong_type_is_refused(ring_data_path):
    with pytest.raises(ConfigError, match=r"'epochs'.*must be an integer.*'abc'"):
        _config(ring_data_path, cmd={"epochs": "abc"})
    with pytest.raises(ConfigError, match=r"'show_progress'.*true or false"):
        _config(ring_data_path, cmd={"show_progress": "yes please"})


def test_reading_an_unknown_key_raises_but_known_unset_keys_are_none(ring_data_path):
    config = _config(ring_data_path)
    with pytest.raises(KeyError, match="learnig_rate"):
        config["learnig_rate"]
    assert config["kge_interval"] is None  # a real RecBole key (MKR's) that SASRec does not set


def test_sys_argv_is_not_read(ring_data_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--epochs=7", "--learnig_rate=1"])
    assert _config(ring_data_path)["epochs"] == 300


def test_derived_and_pickling_keys_are_refused(ring_data_path):
    with pytest.raises(ConfigError, match="derived"):
        _config(ring_data_path, cmd={"MODEL_TYPE": 1})
    with pytest.raises(ConfigError, match="never pickles"):
        _config(ring_data_path, cmd={"save_dataset": True})


def test_recbole_validation_errors_become_config_errors(ring_data_path):
    with pytest.raises(ConfigError, match="no metric named 'Foo'"):
        _config(ring_data_path, cmd={"metrics": ["Foo", "NDCG"]})


def test_valid_metric_must_be_computed(ring_data_path):
    with pytest.raises(ConfigError, match=r"valid_metric NDCG@5 .* needs @5 in topk \[10, 20\]"):
        _config(ring_data_path, cmd={"valid_metric": "NDCG@5"})
    with pytest.raises(ConfigError, match=r"valid_metric Precision@10 .* not among metrics"):
        _config(ring_data_path, cmd={"valid_metric": "Precision@10"})


def test_string_settings_keep_the_text_as_typed(tmp_path):
    # ml-100k-mm's text_template is a string; "{movie_title}" would otherwise parse as a YAML mapping.
    config = Config("BPR", "ml-100k-mm", config_dict={"data_path": str(tmp_path)},
                    cmd_dict={"text_template": parse_value("{movie_title}")},
                    cmd_text={"text_template": "{movie_title}"})
    assert parse_value("{movie_title}") == {"movie_title": None}
    assert config["text_template"] == "{movie_title}"


def test_a_key_of_another_model_is_refused_with_that_models_name(ring_data_path, tmp_path):
    from mmrecbole.config import accepts, key_owners, settings_for

    with pytest.raises(ConfigError, match=r"'n_layers' in config_dict is a setting of .*MMSASRec.*, not of BPR"):
        Config("BPR", "planted", config_dict={"data_path": ring_data_path, "n_layers": 2})
    path = tmp_path / "mine.yaml"
    path.write_text("window_context: 25\n")
    with pytest.raises(ConfigError, match=rf"'window_context' in config file {path} is a setting of MMGRU4Rec, "
                                          "MMSASRec, not of ImplicitALS"):
        Config("ImplicitALS", "planted", config_file_list=[str(path)], config_dict={"data_path": ring_data_path})
    assert Config("MMSASRec", "planted", config_dict={"data_path": ring_data_path, "window_context": 25,
                                                       "modalities": []})["window_context"] == 25
    assert accepts("BPR", "learning_rate") and accepts("BPR", "mm_feature_files")  # general keys
    assert accepts("SASRec", "n_layers") and not accepts("BPR", "n_layers")  # RecBole's own model files
    assert key_owners("window_context") == ["MMGRU4Rec", "MMSASRec"]
    shared = {"window_context": 25, "epochs": 3}
    assert settings_for("BPR", shared) == {"epochs": 3} and settings_for("MMSASRec", shared) == shared


def test_one_type_rule_for_every_configuration():
    from mmrecbole.config import type_mismatch

    assert type_mismatch(3, 0.5) is None and type_mismatch(True, 0.5) == "a number"
    assert type_mismatch(2.0, 1) == "an integer" and type_mismatch("yes", False) == "true or false"
    assert type_mismatch(3, [1]) == "a list" and type_mismatch([], {}) == "a mapping"
    assert type_mismatch(None, 1) is None and type_mismatch("x", None) is None
