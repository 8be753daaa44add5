"""SIGKILL in the middle of a save (a checkpoint, a feature table) leaves the previous file loadable, and the orphan
temp file it leaves is removed by the next save into that folder (issue 23).

The child process is killed while its new version is complete in the temp file but not yet renamed into place: it
blocks in `os.fsync`, the last step before the rename, so the kill lands at a known point every time.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mmrecbole import PROJECT_ROOT, checkpoint
from mmrecbole.data.fileio import remove_stale_temp_files
from mmrecbole.features import FeatureTable

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

CHILD = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
kind, path, flag = sys.argv[2:5]
real_fsync = os.fsync
def blocking_fsync(fd):
    real_fsync(fd)
    open(flag, "w").close()
    time.sleep(300)
os.fsync = blocking_fsync
import torch, numpy as np
if kind == "checkpoint":
    from tests.test_crash_safety import checkpoint_payload
    from mmrecbole import checkpoint
    checkpoint.atomic_torch_save(checkpoint_payload(2), path)
else:
    from tests.test_crash_safety import feature_table
    feature_table(2, path).save(path)
"""


def checkpoint_payload(version: int) -> dict:
    import json

    return {"format": checkpoint.FORMAT, "meta_json": json.dumps({"model": "BPR", "dataset": "d"}),
            "config_json": "{}", "training_json": json.dumps({"epoch": version}),
            "state_dict": {"w": torch.full((64, 64), float(version))}, "other_parameter": {}, "optimizer": None}


def feature_table(version: int, path: str) -> FeatureTable:
    matrix = np.full((50, 16), float(version), dtype=np.float32)
    return FeatureTable([str(i) for i in range(50)], matrix, np.ones(50, bool), {"version": version, "dim": 16},
                        source=path)


def _kill_mid_save(kind: str, path: str, tmp_path) -> int:
    flag = str(tmp_path / "blocked")
    child = subprocess.Popen([sys.executable, "-c", CHILD, PROJECT_ROOT, kind, path, flag])
    deadline = time.time() + 120
    while not os.path.exists(flag):
        assert child.poll() is None, "the child exited before blocking in its save"
        assert time.time() < deadline, "the child never reached its save"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return child.pid


def _temp_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_sigkill_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "saved" / "BPR.pth")
    checkpoint.atomic_torch_save(checkpoint_payload(1), path)
    pid = _kill_mid_save("checkpoint", path, tmp_path)
    assert checkpoint.read(path).training == {"epoch": 1}  # the old one, whole
    (orphan,) = _temp_files(tmp_path / "saved")
    assert orphan.startswith(f".BPR.pth.{pid}-")
    checkpoint.atomic_torch_save(checkpoint_payload(3), str(tmp_path / "saved" / "BPR-next.pth"))  # the next run
    assert _temp_files(tmp_path / "saved") == []
    assert checkpoint.read(path).training == {"epoch": 1}


def test_sigkill_during_a_feature_table_save_keeps_the_previous_table(tmp_path):
    path = str(tmp_path / "features" / "text.npz")
    feature_table(1, path).save(path)
    _kill_mid_save("features", path, tmp_path)
    table = FeatureTable.load(path)
    assert table.provenance["version"] == 1 and float(table.matrix[0, 0]) == 1.0
    assert len(_temp_files(tmp_path / "features")) == 1
    feature_table(3, path).save(path)  # the rebuild
    assert _temp_files(tmp_path / "features") == [] and FeatureTable.load(path).provenance["version"] == 3


def test_temp_files_of_live_writers_are_left_alone(tmp_path):
    live = tmp_path / f".table.npz.{os.getpid()}-abc123.tmp"
    live.write_bytes(b"being written")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    dead = tmp_path / f".table.npz.{dead_pid}-def456.tmp"
    dead.write_bytes(b"orphan")
    other = tmp_path / "notes.tmp"  # not one of ours
    other.write_bytes(b"")
    assert remove_stale_temp_files(str(tmp_path)) == [str(dead)]
    assert live.exists() and other.exists() and not dead.exists()


@pytest.mark.parametrize("model", ["BPR", "Pop"])
def test_a_trainer_finds_its_checkpoint_folder_made_before_recbole_checks(model, tmp_path, ring_data_path,
                                                                         monkeypatch):
    """RecBole's ensure_dir (exists? then os.makedirs) races between two runs starting at once: the loser died of
    FileExistsError on a parallel board. Our trainer makes the folder race-free first, so by the time RecBole looks
    it is always there (the spy fails if RecBole would have to create it)."""
    import recbole.trainer.trainer as recbole_trainer

    from mmrecbole.config import Config
    from mmrecbole.quick_start import build
    from mmrecbole.trainer import make_trainer
    from tests.planted import FAST

    asked = []

    def spy(path):
        asked.append(path)
        assert os.path.isdir(path), f"RecBole would create {path} itself: the race is back"

    monkeypatch.setattr(recbole_trainer, "ensure_dir", spy)
    folder = tmp_path / "fresh" / "checkpoints"
    config = Config(model, "planted", config_dict={**FAST, "data_path": ring_data_path,
                                                   "checkpoint_dir": str(folder)})
    _, _, _, _, built = build(config)
    make_trainer(config, built)
    assert folder.is_dir() and str(folder) in asked
