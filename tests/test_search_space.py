"""Search spaces (issue 18, first part): every tunable row of the committed boards declares one, each is checked
against its model's settings, their allowed ranges and their defaults, and `suggest` draws through Optuna's API."""
import os

import pytest

from mmrecbole import PROPERTIES_DIR
from mmrecbole.config import read_yaml_file
from mmrecbole.errors import ConfigError
from mmrecbole.registry import PIPELINES
from mmrecbole.tuning import load_search_space, models_with_search_space, suggest

PARAMETER_FREE = {"Pop"}  # nothing to tune


def _board_models():
    models = set()
    folder = os.path.join(PROPERTIES_DIR, "leaderboard")
    for name in os.listdir(folder):
        for entry in read_yaml_file(os.path.join(folder, name))["models"]:
            models.add(entry if isinstance(entry, str) else entry["name"])
    return sorted(models - PARAMETER_FREE - set(PIPELINES))


def test_every_tunable_board_row_has_a_valid_search_space():
    assert set(_board_models()) <= set(models_with_search_space())
    for model in models_with_search_space():
        space = load_search_space(model)
        assert space and all(param.name == name for name, param in space.items())
    lightgcn = load_search_space("LightGCN")
    assert lightgcn["learning_rate"].kind == "float" and lightgcn["learning_rate"].log
    assert lightgcn["n_layers"].kind == "int" and (lightgcn["n_layers"].low, lightgcn["n_layers"].high) == (1, 4)
    assert load_search_space("BPR")["embedding_size"].choices == (32, 64, 128)


@pytest.mark.parametrize("text, message", [
    ("window_context: {low: 0, high: 10}\n", "window_context is not a setting of BPR"),
    ("learning_rate: {low: 0.0, high: 0.1}\n", "learning_rate: bound 0.0 must be > 0"),
    ("learning_rate: {low: 1.0e-2, high: 1.0e-1}\n", "learning_rate's default 0.001 lies outside its search space"),
    ("learning_rate: {low: 0.1, high: 0.01}\n", "needs numbers low < high"),
    ("learning_rate: {low: 1.0e-4, high: 1.0e-2, scale: log}\n", "unknown key(s) ['scale']"),
    ("embedding_size: {choices: []}\n", "choices must be a non-empty list"),
    ("embedding_size: {choices: [0, 64]}\n", "choice 0 must be >= 1"),
    ("weight_decay: {low: 0.0, high: 0.1, log: true}\n", "a log scale needs low > 0"),
    ("learning_rate: 0.001\n", "must be a mapping"),
])
def test_a_bad_search_space_is_refused_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "BPR.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_search_space("BPR", str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_dropouts_stay_probabilities(tmp_path):
    path = tmp_path / "MMSASRec.yaml"
    path.write_text("hidden_dropout_prob: {low: 0.0, high: 1.5}\n")
    with pytest.raises(ConfigError, match="bound 1.5 must be < 1"):
        load_search_space("MMSASRec", str(path))


def test_a_model_without_a_space_is_named():
    with pytest.raises(ConfigError, match=r"no search space for Pop: .*\(models with one: BPR, FREEDOM"):
        load_search_space("Pop")


class RecordingTrial:
    """The three methods of optuna.trial.Trial that suggest() calls; returns each range's low end / first choice."""

    def __init__(self):
        self.calls = []

    def suggest_float(self, name, low, high, step=None, log=False):
        self.calls.append(("float", name, low, high, step, log))
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        self.calls.append(("int", name, low, high, step, log))
        return low

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, choices))
        return choices[0]


def test_suggest_draws_each_dimension_with_its_kind_and_scale():
    trial = RecordingTrial()
    chosen = suggest(trial, load_search_space("LightGCN"))
    assert chosen == {"learning_rate": 1.0e-4, "embedding_size": 32, "n_layers": 1, "reg_weight": 1.0e-6}
    assert trial.calls == [("float", "learning_rate", 1.0e-4, 1.0e-2, None, True),
                           ("categorical", "embedding_size", [32, 64, 128]),
                           ("int", "n_layers", 1, 4, 1, False),
                           ("float", "reg_weight", 1.0e-6, 1.0e-2, None, True)]


def test_a_grid_step_reaches_the_trial(tmp_path):
    path = tmp_path / "ItemKNN.yaml"
    path.write_text("shrink: {low: 0.0, high: 100.0, step: 10.0}\nk: {low: 50, high: 200, step: 50}\n")
    trial = RecordingTrial()
    suggest(trial, load_search_space("ItemKNN", str(path)))
    assert trial.calls == [("float", "shrink", 0.0, 100.0, 10.0, False), ("int", "k", 50, 200, 50, False)]
