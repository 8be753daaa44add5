"""Tuning studies (issue 18): validation only, pruned, resumable; the CLI's --tune writes a usable property file."""
import os

import pytest

from mmrecbole import cli
from mmrecbole.tuning import study as study_module
from mmrecbole.tuning import tune
from tests.planted import FAST

SETTINGS = {**FAST, "epochs": 6, "embedding_size": 16, "eval_step": 1}
# Known answer: on the ring data BPR learns nothing at learning rate 1e-7 in 6 epochs, something at 1e-3 (the
# default, which a space must contain) and most at 5e-2.
LEARNING_RATES = "learning_rate: {choices: [1.0e-7, 1.0e-3, 5.0e-2]}\n"


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "BPR.yaml"
    path.write_text(LEARNING_RATES)
    return str(path)


def _tune(ring_data_path, tmp_path, space_file, trials, **kwargs):
    return tune("BPR", "planted", trials, cmd_dict={**SETTINGS, "data_path": ring_data_path},
                storage=f"sqlite:///{tmp_path / 'study.db'}", space_file=space_file, seed=0, **kwargs)


def test_a_study_finds_the_known_best_setting_and_never_reads_test(ring_data_path, tmp_path, space_file,
                                                                   monkeypatch):
    from mmrecbole import quick_start

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError("a tuning trial touched the test split")

        def __iter__(self):
            raise AssertionError("a tuning trial iterated the test split")

    real_build = quick_start.build

    def build_without_test(config):
        dataset, train, valid, _, model = real_build(config)
        return dataset, train, valid, Untouchable(), model

    monkeypatch.setattr(quick_start, "build", build_without_test)
    events = []
    result = _tune(ring_data_path, tmp_path, space_file, 8, on_trial=events.append)
    assert result.best_params == {"learning_rate": 5.0e-2}
    assert result.trials_complete + result.trials_pruned == 8 == len(events)
    assert result.valid_metric == "ndcg@5" and 0.0 < result.best_value <= 1.0
    assert events[-1]["best"] == pytest.approx(result.best_value) and events[-1]["done"] == 8


def test_hopeless_trials_are_pruned_on_their_validation_curve(ring_data_path, tmp_path, space_file, monkeypatch):
    monkeypatch.setattr(study_module, "PRUNER_STARTUP_TRIALS", 1)
    monkeypatch.setattr(study_module, "PRUNER_WARMUP_STEPS", 0)
    events = []
    result = _tune(ring_data_path, tmp_path, space_file, 8, on_trial=events.append)
    pruned = [e for e in events if e["state"] == "pruned"]
    assert result.trials_pruned == len(pruned) >= 1
    assert all(e["params"]["learning_rate"] < 5.0e-2 for e in pruned)  # the best setting is never pruned


def test_a_study_resumes_to_its_trial_count(ring_data_path, tmp_path, space_file):
    first = _tune(ring_data_path, tmp_path, space_file, 2)
    events = []
    second = _tune(ring_data_path, tmp_path, space_file, 3, on_trial=events.append)
    assert second.study_name == first.study_name
    assert second.trials_complete + second.trials_pruned == 3 and len(events) == 1
    again = []
    _tune(ring_data_path, tmp_path, space_file, 3, on_trial=again.append)
    assert again == []  # nothing left to run


def test_cli_tune_writes_settings_a_run_can_use(ring_data_path, capsys):
    flags = ["--model=BPR", "--dataset=planted", f"--data_path={ring_data_path}", "--epochs=3",
             "--show_progress=false", "--topk=[5]", "--metrics=[NDCG]", "--valid_metric=NDCG@5",
             "--train_batch_size=256", "--eval_batch_size=256"]
    assert cli.main([*flags, "--tune", "--trials=2"]) == 0
    out = capsys.readouterr().out
    assert "[trial 1/2]" in out and "[trial 2/2]" in out and "best validation ndcg@5" in out
    path = out.split("written: ")[1].split()[0]
    assert path == os.path.join("saved", "tuning", "planted-BPR.yaml")
    text = open(path, encoding="utf-8").read()
    assert all(f"\n{key}: " in text for key in ("embedding_size", "learning_rate", "weight_decay"))
    assert cli.main([*flags, f"--config_files={path}", "--no_save"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--tune", "--trials=0"], "--trials must be an integer >= 1, got 0"),
    (["--tune"], "--tune needs --trials=N"),
    (["--trials=3"], "--trials and --storage go with --tune"),
    (["--tune", "--trials=2", "--learning_rate=0.01"], "--learning_rate: searched by"),
])
def test_cli_tune_refuses_bad_requests(ring_data_path, capsys, extra, message):
    assert cli.main(["--model=BPR", "--dataset=planted", f"--data_path={ring_data_path}", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from mmrecbole.tuning import tune
settings = json.loads(sys.argv[2])
ran = []
tune("BPR", "planted", 6, cmd_dict=settings, storage=sys.argv[3], space_file=sys.argv[4], seed=int(sys.argv[5]),
     on_trial=lambda event: ran.append(event["number"]))
print("RAN " + json.dumps(ran))
"""


def test_two_worker_processes_share_one_sqlite_study(ring_data_path, tmp_path, space_file):
    import json
    import subprocess
    import sys

    from mmrecbole import PROJECT_ROOT

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = json.dumps({**SETTINGS, "data_path": ring_data_path})
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, PROJECT_ROOT, settings, storage, space_file, str(seed)],
                                cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in (1, 2)]
    ran = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
        ran.append(json.loads(out.split("RAN ")[1]))
    numbers = ran[0] + ran[1]
    assert all(ran), ran  # both workers ran trials
    assert len(numbers) == len(set(numbers))  # no trial run twice
    assert 6 <= len(numbers) <= 7  # the study stops at 6 finished trials (one more may finish while the other stops)
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == len(numbers)  # none lost


def test_an_id_only_row_does_not_search_content_settings(ring_data_path, tmp_path):
    events = []
    settings = {k: v for k, v in SETTINGS.items() if k != "embedding_size"}  # a BPR setting, not MMSASRec's
    tune("MMSASRec", "planted", 1, cmd_dict={**settings, "epochs": 1, "data_path": ring_data_path, "modalities": [],
                                             "window_context": 5},
         storage=f"sqlite:///{tmp_path / 'id.db'}", on_trial=events.append)
    (event,) = events
    assert set(event["params"]) == {"learning_rate", "n_layers", "hidden_dropout_prob", "attn_dropout_prob"}


def test_the_first_trial_is_the_untuned_setting(ring_data_path, tmp_path):
    """Trial 0 trains the row's defaults (BPR's learning_rate 1e-3), so the chosen setting is never below them on
    validation; a random draw from this continuous range would equal 1e-3 with probability 0."""
    path = tmp_path / "BPR.yaml"
    path.write_text("learning_rate: {low: 1.0e-5, high: 1.0e-1, log: true}\nembedding_size: {choices: [8, 16, 64]}\n")
    events = []
    settings = {k: v for k, v in SETTINGS.items() if k != "embedding_size"}
    result = tune("BPR", "planted", 3, cmd_dict={**settings, "data_path": ring_data_path},
                  storage=f"sqlite:///{tmp_path / 'd.db'}", space_file=str(path), on_trial=events.append)
    assert events[0]["number"] == 0 and events[0]["params"] == {"learning_rate": 1.0e-3, "embedding_size": 64}
    assert result.best_value >= events[0]["value"]
    assert all(e["params"]["learning_rate"] != 1.0e-3 for e in events[1:])
