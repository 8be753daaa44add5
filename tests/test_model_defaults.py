"""Defaults of our own models are the best measured setting: the one every committed leaderboard trains them with.

A board row may vary only what it is about (item content: modalities, IDs, ID dropout); how the model is trained
must be its property file's default, so `run_recbole_mm.py --model=MMSASRec` trains what the board measured.
"""
import glob
import os

import pytest

from mmrecbole import PROPERTIES_DIR
from mmrecbole.config import read_yaml_file
from mmrecbole.leaderboard import load_spec

#: Settings a board row sets on purpose: what the row compares (a modality, the ID, an auxiliary loss term), not
#: how the model is trained.
ROW_SUBJECT = {"modalities", "use_id", "id_dropout", "loss_weights", "text_encoder",  # loss_weights: SSL ablation
               "adapter"}  # adapter: the mixture-of-experts ablation (amazon-office-moe.yaml)
OURS = ("MMSASRec", "MMGRU4Rec")
BOARDS = sorted(glob.glob(os.path.join(PROPERTIES_DIR, "leaderboard", "*.yaml")))


def _defaults(model):
    return read_yaml_file(os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"))


@pytest.mark.parametrize("board", BOARDS, ids=os.path.basename)
def test_board_rows_of_our_sequential_models_train_with_the_defaults(board):
    spec = load_spec(board)
    rows = [entry for entry in spec.models if entry.name in OURS]
    for entry in rows:
        defaults = _defaults(entry.name)
        differing = {key: (value, defaults.get(key)) for key, value in entry.settings.items()
                     if key not in ROW_SUBJECT and defaults.get(key) != value}
        assert not differing, f"{os.path.basename(board)} row {entry.label!r}: (row, default) {differing}"
    for key in set(spec.settings) - ROW_SUBJECT:  # board-wide settings that would reach these rows
        for model in {entry.name for entry in rows}:
            assert key not in _defaults(model), f"{board}: board-wide {key} overrides {model}'s default"


def test_the_main_board_measures_both_models():
    spec = load_spec(os.path.join(PROPERTIES_DIR, "leaderboard", "ml-100k-mm.yaml"))
    assert {entry.name for entry in spec.models} >= set(OURS)
