"""CLI: exit code 2 with one line on stderr for bad input; a full run prints the metric table."""
import os
import subprocess
import sys

import pytest

from mmrecbole import PROJECT_ROOT
from mmrecbole.cli import parse_args

SCRIPT = os.path.join(PROJECT_ROOT, "run_recbole_mm.py")


def _cli(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model=SASRc", "--dataset=ml-100k"], "unknown model 'SASRc'; did you mean SASRec"),
        (["--model=BPR", "--dataset=ml-100k", "--learnig_rate=0.1"], "unknown config key 'learnig_rate'"),
        (["--model=BPR", "--dataset=no-such-data"], "dataset 'no-such-data' not found"),
        (["--model=BPR", "--dataset=ml-100k", "stray"], "unrecognized argument 'stray'"),
        (["--dataset=ml-100k"], "no model given"),
        (["--model=BPR", "--dataset=ml-100k", "--window_context=25"],
         "config key 'window_context' in command-line flag --window_context is a setting of MMGRU4Rec, MMSASRec, "
         "not of BPR"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, expected):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback():
    proc = _cli("--model=SASRc", "--dataset=ml-100k", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_lists_ours_and_recboles_models():
    proc = _cli("--help")
    assert proc.returncode == 0
    assert "models (RecBole):" in proc.stdout and "LightGCN" in proc.stdout and "--config_files" in proc.stdout


def test_full_run_prints_table_checkpoint_and_log(ring_data_path, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("embedding_size: 16\n")
    proc = _cli("--model=BPR", "--dataset=planted", f"--data_path={ring_data_path}", "--epochs=2",
                "--show_progress=false", "--state=WARNING", f"--config_files={extra}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "== BPR on planted" in out and "epoch budget (epochs=2)" in out
    assert "ndcg@10" in out and "checkpoint: saved/BPR-" in out and "log:" in out
    assert "1,952 trainable parameters" in out  # (81 + 41 ids incl. padding) x 16: the config file applied
    checkpoint = out.split("checkpoint: ")[1].split()[0]
    again = _cli(f"--checkpoint={checkpoint}")
    assert again.returncode == 0, again.stderr
    assert "from saved/BPR-" in again.stdout
    test_ndcg = [line for line in out.splitlines() if line.startswith("ndcg@10")]
    assert test_ndcg == [line for line in again.stdout.splitlines() if line.startswith("ndcg@10")]
    refused = _cli(f"--checkpoint={checkpoint}", "--epochs=3")
    assert refused.returncode == 2 and "--epochs" in refused.stderr


def test_parse_args_splits_config_files_and_parses_flags():
    args, overrides, texts = parse_args(["--model=BPR", "--config_files=a.yaml", "b.yaml", "--topk=[5,10]",
                                         "--learning_rate=1e-3", "--valid_metric=NDCG@5"])
    assert args.config_files == ["a.yaml", "b.yaml"]
    assert overrides == {"topk": [5, 10], "learning_rate": 0.001, "valid_metric": "NDCG@5"}
    assert texts["topk"] == "[5,10]"
    args, _, _ = parse_args(["--config_files", "a.yaml,b.yaml"])
    assert args.config_files == ["a.yaml", "b.yaml"]
