"""Tuned leaderboard rows (issue 18): one budget per row, chosen on validation, trained on every seed, cached."""
import json
import os

import pytest

from mmrecbole import cli
from mmrecbole.errors import ConfigError
from mmrecbole.leaderboard import LeaderboardSpec, ModelEntry, load_spec, run_leaderboard
from mmrecbole.leaderboard import runner as runner_module
from mmrecbole.leaderboard.spec import TuneRequest
from tests.planted import FAST

# The known answer of tests/test_tuning.py: on the ring data BPR learns most at learning rate 5e-2 in 6 epochs.
LEARNING_RATES = "learning_rate: {choices: [1.0e-7, 1.0e-3, 5.0e-2]}\n"
SHARED = {**{k: v for k, v in FAST.items() if k not in ("metrics", "show_progress")}, "epochs": 6,
          "embedding_size": 16, "eval_step": 1}


def _board(tmp_path, data_path, space_file, trials, seeds=(1, 2), cache="cache"):
    return LeaderboardSpec(dataset="planted", seeds=list(seeds), settings={**SHARED, "data_path": data_path},
                           significance_metric="ndcg@5",
                           output_dir=str(tmp_path / "board"), cache_dir=str(tmp_path / cache),
                           models=[ModelEntry("Pop", "Pop"),
                                   ModelEntry("BPR", "BPR", tune=TuneRequest(trials, space_file))])


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "BPR.yaml"
    path.write_text(LEARNING_RATES)
    return str(path)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ring_data_path, space_file):
    tmp_path = tmp_path_factory.mktemp("tuned")
    spec = _board(tmp_path, ring_data_path, space_file, 6)
    lines = []
    outcome = run_leaderboard(spec, echo=lines.append, status=None)
    return spec, outcome, lines, tmp_path


def test_a_tuned_row_trains_its_chosen_setting_on_every_seed(tuned):
    spec, outcome, lines, _ = tuned
    (study,) = outcome["report"]["tuning"]["studies"].values()
    assert study["best_params"] == {"learning_rate": 5.0e-2}  # the known best
    assert study["trials"] == 6 == study["trials_complete"] + study["trials_pruned"]
    bpr = sorted((r for r in outcome["runs"] if r["label"] == "BPR"), key=lambda r: r["seed"])
    assert [r["seed"] for r in bpr] == [1, 2]
    assert all(r["settings"]["learning_rate"] == 5.0e-2 for r in bpr)
    # The study trained with the board's first seed: that seed's run is the best trial again, to the last digit.
    assert bpr[0]["best_valid_score"] == pytest.approx(study["best_value"], rel=1e-9, abs=0)
    trial_lines = [line for line in lines if "BPR: trial " in line]
    assert [line.split("trial ")[1].split()[0] for line in trial_lines] == [f"{i}/6" for i in range(1, 7)]
    pop = [r for r in outcome["runs"] if r["label"] == "Pop"]
    assert len(pop) == 2 and all("learning_rate" not in r["settings"] for r in pop)


def test_the_board_reports_trials_pruned_seconds_and_choices_and_marks_untuned_rows(tuned):
    spec, outcome, _, _ = tuned
    text = outcome["report"]["markdown"]
    section = text.split("## Tuning")[1]
    bpr_row = next(line for line in section.splitlines() if line.startswith("| BPR |"))
    study = outcome["report"]["tuning"]["studies"]["BPR"]
    assert f"| 6 ({study['trials_complete']} / {study['trials_pruned']}) |" in bpr_row
    assert "learning_rate=0.05" in bpr_row and f"{study['best_value']:.4f}" in bpr_row
    assert "| Pop | untuned | – | – | defaults (no tune on the board or row) |" in section
    accuracy = text.split("## Accuracy (test)")[1].split("##")[0]
    header = next(line for line in accuracy.splitlines() if line.startswith("| Model"))
    assert "| tuned |" in header
    assert any(line.startswith("| BPR") and "| 6 trials |" in line for line in accuracy.splitlines())
    assert any(line.startswith("| Pop") and "| untuned |" in line for line in accuracy.splitlines())
    with open(os.path.join(spec.output_dir, "leaderboard.md"), encoding="utf-8") as f:
        assert f.read() == text


def test_a_rerun_reuses_the_finished_study_and_runs(tuned, monkeypatch):
    spec, outcome, _, _ = tuned

    def no_child(*args, **kwargs):
        raise AssertionError("a cached study or run started a child")

    monkeypatch.setattr(runner_module, "run_job", no_child)
    lines = []
    again = run_leaderboard(spec, echo=lines.append, status=None)
    assert any("BPR: study cached (6 trials" in line for line in lines)
    assert again["report"]["markdown"] == outcome["report"]["markdown"]


def test_an_interrupted_or_extended_study_resumes_its_trials(ring_data_path, space_file, tmp_path):
    first = []
    run_leaderboard(_board(tmp_path, ring_data_path, space_file, 2, seeds=(1,)), echo=first.append, status=None)
    second = []
    outcome = run_leaderboard(_board(tmp_path, ring_data_path, space_file, 3, seeds=(1,)), echo=second.append,
                              status=None)
    assert sum("BPR: trial " in line for line in first) == 2
    assert [line.split("trial ")[1].split()[0] for line in second if "BPR: trial " in line] == ["3/3"]
    import optuna

    record = outcome["report"]["tuning"]["studies"]["BPR"]
    study = optuna.load_study(study_name=record["study_name"], storage=record["storage"])
    assert len(study.trials) == 3  # the 2 trials of the first board are in the same study, none repeated
    assert record["storage"] == f"sqlite:///{tmp_path / 'cache' / 'tuning' / 'planted.db'}"


def test_a_failed_study_leaves_its_row_out_instead_of_running_defaults(ring_data_path, space_file, tmp_path,
                                                                       monkeypatch):
    real = runner_module.run_job

    def failing_study(request, what, timeout, on_event):
        if request.get("task") == "tune":
            return None, f"{what} failed (exit 1): planted failure"
        return real(request, what, timeout, on_event)

    monkeypatch.setattr(runner_module, "run_job", failing_study)
    outcome = run_leaderboard(_board(tmp_path, ring_data_path, space_file, 2, seeds=(1,)), echo=lambda *_: None,
                              status=None)
    assert {r["label"] for r in outcome["runs"]} == {"Pop"}
    assert any("BPR (study) failed" in f and "its seeds were not run" in f for f in outcome["failures"])
    assert "| BPR | not tuned yet |" in outcome["report"]["markdown"]


def test_report_only_lists_a_row_whose_study_has_not_run(ring_data_path, space_file, tmp_path):
    spec = _board(tmp_path, ring_data_path, space_file, 2, seeds=(1,))
    run_leaderboard(LeaderboardSpec(**{**spec.__dict__, "models": spec.models[:1]}), echo=lambda *_: None,
                    status=None)
    outcome = run_leaderboard(spec, echo=lambda *_: None, status=None, report_only=True)
    assert "BPR: not tuned yet (its study has not finished)" in outcome["failures"]


def _write(tmp_path, text):
    path = tmp_path / "board.yaml"
    path.write_text("dataset: ml-100k\nseeds: 1\n" + text)
    return str(path)


def test_board_tuning_applies_to_rows_with_a_search_space(tmp_path):
    spec = load_spec(_write(tmp_path, "tune: {trials: 5}\nmodels:\n  - Pop\n  - BPR\n  - LightGCN\n"
                                      "  - {name: ItemKNN, tune: false}\n  - LGBMStacker\n"))
    requests = {m.label: spec.tune_request(m) for m in spec.models}
    assert requests == {"Pop": None, "BPR": TuneRequest(5), "LightGCN": TuneRequest(5), "ItemKNN": None,
                        "LGBMStacker": None}
    assert spec.untuned_reason(spec.models[0]).startswith("no search space")
    assert spec.untuned_reason(spec.models[3]) == "tune: false"
    assert "pipeline" in spec.untuned_reason(spec.models[4])


@pytest.mark.parametrize("text, message", [
    ("tune: {trials: 5}\nmodels:\n  - BPR\n  - {name: LightGCN, tune: {trials: 9}}\n",
     "tuned rows must share one budget (the same trials), got 5 trials: BPR; 9 trials: LightGCN"),
    ("models:\n  - {name: Pop, tune: {trials: 3}}\n", "Pop has no search space"),
    ("models:\n  - BPR\n  - {name: LGBMStacker, tune: {trials: 3}}\n", "cannot be tuned itself"),
    ("tune: {trials: 0}\nmodels: [BPR]\n", "tune in"),
    ("tune: {trials: 3, budget: 2}\nmodels: [BPR]\n", "unknown keys ['budget']"),
    ("tune: true\nmodels: [BPR]\n", "must be {trials: N}, got True"),
    ("tune: {trials: 3, search_space: properties/search/BPR.yaml}\nmodels: [BPR]\n", "put it on that row's tune"),
    ("models:\n  - {name: BPR, tune: {trials: 3, search_space: nowhere.yaml}}\n", "nowhere.yaml not found"),
])
def test_bad_tuning_in_a_board_file_is_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as caught:
        load_spec(_write(tmp_path, text))
    assert message in str(caught.value)


def test_a_searched_setting_fixed_by_the_row_or_board_is_refused_before_anything_runs(tmp_path, ring_data_path,
                                                                                       space_file):
    for settings_of_row, board_settings in (({"learning_rate": 0.01}, {}), ({}, {"learning_rate": 0.01})):
        spec = LeaderboardSpec(dataset="planted", seeds=[1], settings={**SHARED, "data_path": ring_data_path,
                                                                       **board_settings},
                               output_dir=str(tmp_path / "board"), cache_dir=str(tmp_path / "cache"),
                               models=[ModelEntry("BPR", "BPR", settings_of_row, TuneRequest(2, space_file))])
        with pytest.raises(ConfigError, match="learning_rate set in .* and searched by"):
            run_leaderboard(spec, echo=lambda *_: None, status=None)
    assert not os.path.exists(tmp_path / "board") and not os.path.exists(tmp_path / "cache" / "runs")


@pytest.mark.parametrize("flags, message", [
    (["--leaderboard=properties/leaderboard/quickstart.yaml", "--tune", "--trials=2"],
     "--leaderboard takes its tuning from the file"),
    (["--model=Pop,BPR", "--dataset=ml-100k", "--trials=2"], "--trials goes with --tune"),
    (["--model=Pop,BPR", "--dataset=ml-100k", "--tune"], "--tune needs --trials=N"),
])
def test_cli_refuses_tuning_flags_that_do_not_fit_a_leaderboard(capsys, flags, message):
    assert cli.main(flags) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_study_record_is_keyed_by_what_the_study_computes(tuned, space_file, ring_data_path):
    spec, outcome, _, tmp_path = tuned
    from mmrecbole.leaderboard.tuning import plan_studies

    (study,) = plan_studies(spec)
    with open(study.path, encoding="utf-8") as f:
        assert json.load(f)["key"] == study.key
    changed = _board(tmp_path, ring_data_path, space_file, 6)
    changed.settings["epochs"] = 5
    (other,) = plan_studies(changed)
    assert other.key != study.key and other.cached() is None


def test_a_parallel_board_tunes_two_rows_at_once_and_chooses_what_one_at_a_time_chooses(ring_data_path, space_file,
                                                                                        tmp_path):
    chosen = {}
    for jobs in (1, 2):
        spec = _board(tmp_path, ring_data_path, space_file, 3, seeds=(1,), cache=f"cache{jobs}")
        spec.models = [ModelEntry("BPR", "BPR", tune=TuneRequest(3, space_file)),
                       ModelEntry("ImplicitALS", "ImplicitALS", tune=TuneRequest(3))]
        spec.jobs = jobs
        outcome = run_leaderboard(spec, echo=lambda *_: None, status=None)
        chosen[jobs] = {label: (r["best_params"], r["best_value"])
                        for label, r in outcome["report"]["tuning"]["studies"].items()}
    assert set(chosen[1]) == {"BPR", "ImplicitALS"} and chosen[2] == chosen[1]  # each study is deterministic
