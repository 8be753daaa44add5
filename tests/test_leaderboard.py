"""Leaderboards: files and numbers that match the per-run JSON, resume, invalidation, validation-only selection."""
import csv
import json
import os
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from mmrecbole.config import Config
from mmrecbole.errors import ConfigError
from mmrecbole.leaderboard import LeaderboardSpec, ModelEntry, load_spec, run_leaderboard
from mmrecbole.leaderboard import runner as runner_module
from mmrecbole.leaderboard.scheduling import start_order
from mmrecbole import provenance, runs
from mmrecbole.leaderboard import report, stats
from mmrecbole.leaderboard.stats import choose_baseline
from mmrecbole.quick_start import build, run
from mmrecbole.trainer import make_trainer
from tests.planted import FAST
from tests.planted_mm import write_planted_mm

#: What the project's pre-stop hook flags in a committed board's text: runs of unrecorded or uncommitted code.
TRAINED_AT_DIRTY = re.compile(r"runs trained at:.*(not recorded|uncommitted)", re.IGNORECASE)


def _spec(tmp_path, data_path, files, bpr_settings=None):
    shared = {"data_path": data_path, "mm_feature_files": files, "topk": [10, 20], "valid_metric": "NDCG@10",
              "epochs": 4, "embedding_size": 16, "learning_rate": 0.01, "train_batch_size": 256,
              "eval_batch_size": 256}
    return LeaderboardSpec(
        dataset="plantedmm", seeds=[1, 2], settings=shared, output_dir=str(tmp_path / "board"),
        cache_dir=str(tmp_path / "cache"),
        models=[ModelEntry("Pop", "Pop"), ModelEntry("BPR", "BPR", dict(bpr_settings or {})),
                ModelEntry("VBPR", "VBPR (text+image)")])


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lb")
    data_path, files, _ = write_planted_mm(tmp_path / "data", n_users=60)
    spec = _spec(tmp_path, data_path, files)
    status = _RecordingStatus()
    outcome = run_leaderboard(spec, echo=lambda *_: None, status=status)
    outcome["status_lines"] = status.lines
    return spec, outcome, (data_path, files, tmp_path)


class _RecordingStatus:
    def __init__(self):
        self.lines = []

    def show(self, text):
        self.lines.append(text)

    def clear(self):
        pass


def test_children_report_epochs_and_write_their_log_as_they_go(board):
    """Every epoch of a gradient-trained child reaches the parent's status line (with the row, seed and an upper
    bound on the time left), and each run's log file holds RecBole's INFO log, not 0 bytes."""
    spec, outcome, _ = board
    lines = outcome["status_lines"]
    for label in ("BPR", "VBPR (text+image)"):
        for seed in spec.seeds:
            epochs = [int(m.group(1)) for line in lines if f"] {label} seed {seed}: " in line
                      for m in [re.search(r" epoch (\d+): valid ndcg@10 ", line)] if m]
            assert epochs == list(range(4)), (label, seed, epochs)  # 4 epochs, no early stop
    assert all(line.endswith(("left", "unless validation improves")) for line in lines)
    pop = [line for line in lines if "] Pop seed" in line]
    assert len(pop) == 1 and " epoch 0: " in pop[0] and "at most 0 s left" in pop[0], pop  # one fit, one seed
    for record in outcome["runs"]:
        with open(record["log_file"], encoding="utf-8") as f:
            text = f.read()
        if record["model"] != "Pop":
            assert "epoch 0 training" in text and "epoch 3 evaluating" in text, record["log_file"]


def test_files_rows_and_columns(board):
    spec, outcome, _ = board
    paths = outcome["report"]["paths"]
    assert all(os.path.isfile(p) for p in paths.values())
    text = open(paths["md"]).read()
    for label in ("Pop", "BPR", "VBPR (text+image)"):
        assert f"| {label}" in text or f"| **{label}" in text
    assert "NDCG@10" in text and "Coverage@10" in text and "Gini@10" in text and "p users" in text
    assert "Seeds: 1, 2" in text and "Report written at commit " in text and "machine:" in text
    # every run records the code it was trained with; the report says whether one clean commit made its rows
    commits = {r["commit"] for r in outcome["runs"]}
    assert len(commits) == 1 and "unknown" not in commits
    commit = commits.pop()
    version = provenance.code_version()
    if provenance.is_clean_commit(commit):  # a clean checkout (CI): a publishable board
        assert f"All 6 runs computed by code version {version} at commit {commit}" in text
        assert outcome["report"]["single_commit"] and not TRAINED_AT_DIRTY.search(text)
    else:  # tests run in a working tree with changes: the board says so
        assert f"runs trained at: {commit} (6 runs); code versions: {version} (6 runs)" in text
        assert not outcome["report"]["publishable"] and TRAINED_AT_DIRTY.search(text)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"Pop", "BPR", "VBPR (text+image)"}
    from PIL import Image

    image = Image.open(paths["png"])
    assert image.size[0] >= 600 and image.size[1] >= 250 and os.path.getsize(paths["png"]) > 10_000
    assert len(set(image.convert("RGB").getdata())) > 20  # bars, text and colours, not a blank canvas


def test_means_and_stds_match_the_run_json(board):
    spec, outcome, _ = board
    runs = [json.load(open(os.path.join(spec.cache_dir, "runs", name)))
            for name in os.listdir(os.path.join(spec.cache_dir, "runs"))]
    summaries = outcome["report"]["summaries"]
    for label, summary in summaries.items():
        values = [r["test"]["ndcg@10"] for r in runs if r["label"] == label]
        assert summary["test"]["ndcg@10"][0] == pytest.approx(np.mean(values))
        assert summary["test"]["ndcg@10"][1] == pytest.approx(np.std(values, ddof=1))
        mean, std = summary["test"]["ndcg@10"]
        assert f"{mean:.4f} ± {std:.4f}" in outcome["report"]["markdown"]
    assert outcome["report"]["baseline"] in ("Pop", "BPR")  # a CF row, never the content model


def test_rerun_uses_the_cache_and_a_changed_row_reruns_alone(board, monkeypatch):
    spec, _, (data_path, files, tmp_path) = board
    calls = []
    real = runner_module._run_child

    def spy(run, spec_, timeout, on_event):
        calls.append(run.entry.label)
        return real(run, spec_, timeout, on_event)

    monkeypatch.setattr(runner_module, "_run_child", spy)
    run_leaderboard(spec, echo=lambda *_: None)
    assert calls == []  # resumed: nothing retrained
    changed = _spec(tmp_path, data_path, files, bpr_settings={"embedding_size": 8})
    outcome = run_leaderboard(changed, echo=lambda *_: None)
    assert calls == ["BPR", "BPR"]
    assert len(outcome["runs"]) == 6


def test_a_model_that_ignores_the_seed_is_trained_once_and_reported_for_every_seed(board):
    """Pop does not use the seed: the board trains seed 1 only and reports that run as seed 2 too, which is exactly
    what training seed 2 gives (known answer: the run itself), and the report says so."""
    spec, outcome, _ = board
    pop = {r["seed"]: r for r in outcome["runs"] if r["label"] == "Pop"}
    assert sorted(pop) == [1, 2] and pop[2]["same_run_as_seed"] == 1 and "same_run_as_seed" not in pop[1]
    trained = run("Pop", spec.dataset, config_dict={**spec.row_settings(spec.models[0], 2), "state": "WARNING"},
                  saved=False)
    assert trained["seed"] == 2 and trained["test"] == pop[2]["test"]
    assert trained["test_per_user"] == pop[2]["test_per_user"]
    text = open(outcome["report"]["paths"]["md"]).read()
    assert "Trained once (the model does not use the seed; that run is reported for every seed): Pop (seed 1)." in text
    assert not any(r.get("same_run_as_seed") for r in outcome["runs"] if r["label"] != "Pop")  # BPR, VBPR: seeded


def test_which_models_a_board_trains_once():
    from mmrecbole import contract

    def once(name):
        return contract.capabilities(Config(name, "ml-100k").model_class).seed_independent

    assert [name for name in ("Pop", "ItemKNN", "ImplicitItemKNN", "BPR", "ImplicitALS", "SASRec", "LightGCN")
            if once(name)] == ["Pop", "ItemKNN", "ImplicitItemKNN"]


def test_a_parallel_board_overlaps_its_children_and_says_its_timings_are_shared(board, tmp_path, monkeypatch):
    """`jobs: 2` runs two children at a time (their run intervals overlap), each with its share of the cores, keeps
    the rows in the board's order, says in the report that the timings come from a shared machine, and reports
    the same metrics as the same rows run one at a time (the `board` fixture: same data, settings and seeds)."""
    import threading
    import time as clock

    data_path, files, _ = write_planted_mm(tmp_path / "data", n_users=60)
    spec = _spec(tmp_path, data_path, files)
    spec.models = spec.models[:2]  # Pop, BPR
    spec.jobs = 2
    intervals, requests = [], []
    real, real_popen = runner_module._run_child, runner_module.subprocess.Popen
    lock = threading.Lock()

    def spy(run, spec_, timeout, on_event):
        start = clock.monotonic()
        result = real(run, spec_, timeout, on_event)
        with lock:
            intervals.append((start, clock.monotonic()))
        return result

    def popen(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        if "mmrecbole.leaderboard.job" in args[0]:  # not git's or any other subprocess
            write = child.stdin.write
            child.stdin.write = lambda text: (requests.append(json.loads(text)), write(text))[1]
        return child

    monkeypatch.setattr(runner_module, "_run_child", spy)
    monkeypatch.setattr(runner_module.subprocess, "Popen", popen)
    outcome = run_leaderboard(spec, echo=lambda *_: None, status=_RecordingStatus())
    assert [(r["label"], r["seed"]) for r in outcome["runs"]] == [("Pop", 1), ("Pop", 2), ("BPR", 1), ("BPR", 2)]
    intervals.sort()
    assert any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:]))  # two at a time
    assert {(q["concurrent_runs"], q["threads"]) for q in requests} == {(2, max(1, (os.cpu_count() or 1) // 2))}
    assert all(r["concurrent_runs"] == 2 for r in outcome["runs"])
    text = open(outcome["report"]["paths"]["md"]).read()
    assert "Timing: 4 of 4 runs ran up to 2 at a time on this machine" in text
    one_at_a_time = {(r["label"], r["seed"]): r for r in board[1]["runs"]}
    for record in outcome["runs"]:
        serial = one_at_a_time[(record["label"], record["seed"])]
        assert record["test"] == serial["test"] and record["best_epoch"] == serial["best_epoch"], record["label"]


def test_a_parallel_board_builds_feature_tables_once_before_its_content_runs(tmp_path, monkeypatch):
    import threading
    import time as clock

    data_path, files, _ = write_planted_mm(tmp_path / "data", n_users=40)
    spec = _spec(tmp_path, data_path, files)
    spec.models, spec.seeds, spec.jobs = [spec.models[0], spec.models[2]], [1], 2  # Pop, VBPR (text+image)
    events, lock = [], threading.Lock()
    real = runner_module._run_child

    def prepare(spec_, modalities, say):
        with lock:
            events.append(("prepare", modalities, clock.monotonic()))
        clock.sleep(2.0)
        with lock:
            events.append(("prepared", modalities, clock.monotonic()))

    def spy(run, spec_, timeout, on_event):
        with lock:
            events.append(("start", run.entry.label, clock.monotonic()))
        return real(run, spec_, timeout, on_event)

    monkeypatch.setattr(runner_module, "feature_tables_to_prepare", lambda spec_, runs: ("text", "image"))
    monkeypatch.setattr(runner_module, "_prepare_features", prepare)
    monkeypatch.setattr(runner_module, "_run_child", spy)
    run_leaderboard(spec, echo=lambda *_: None, status=_RecordingStatus())
    times = {(kind, what): t for kind, what, t in events}
    prepared = times[("prepared", ("text", "image"))]
    assert times[("start", "Pop")] < prepared  # a run without content goes beside the feature building
    assert times[("start", "VBPR (text+image)")] > prepared  # a content run waits for the tables


def test_a_parallel_board_starts_the_expected_longest_runs_first():
    """Sequential models, then models trained by epochs, then models fitted once; the board's order among equals."""
    names = ["Pop", "BPR", "ImplicitALS", "SASRec", "ItemKNN", "MMSASRec", "LightGCN"]
    runs = [SimpleNamespace(name=name, config=Config(name, "ml-100k", config_dict={"modalities": []}
                                                     if name == "MMSASRec" else {})) for name in names]
    order = [run.name for run in start_order(runs)]
    assert order == ["SASRec", "MMSASRec", "BPR", "LightGCN", "Pop", "ImplicitALS", "ItemKNN"]


def test_which_feature_tables_a_parallel_board_prepares(tmp_path):
    runs = [SimpleNamespace(modalities=()), SimpleNamespace(modalities=("image",)),
            SimpleNamespace(modalities=("image", "text"))]
    plain = LeaderboardSpec(dataset="ml-100k-mm", seeds=[1], models=[ModelEntry("MMSASRec", "MM")])
    assert runner_module.feature_tables_to_prepare(plain, runs) == ("text", "image")
    assert runner_module.feature_tables_to_prepare(plain, runs[:2]) == ("image",)
    assert runner_module.feature_tables_to_prepare(plain, runs[:1]) == ()
    own_files = LeaderboardSpec(dataset="ml-100k-mm", seeds=[1], settings={"mm_feature_files": {"text": "t.npz"}},
                                models=[ModelEntry("MMSASRec", "MM")])
    own_template = LeaderboardSpec(dataset="ml-100k-mm", seeds=[1],
                                   models=[ModelEntry("MMSASRec", "MM", {"text_template": "{movie_title}"})])
    # rows that find their tables another way build them themselves, as a one-job board does
    assert runner_module.feature_tables_to_prepare(own_files, runs) == ()
    assert runner_module.feature_tables_to_prepare(own_template, runs) == ()


def test_jobs_must_be_a_positive_integer(tmp_path):
    path = tmp_path / "board.yaml"
    path.write_text("dataset: ml-100k\njobs: 0\nmodels: [BPR]\n")
    with pytest.raises(ConfigError, match=r"jobs must be an integer >= 1 \(runs at a time\) or auto, got 0"):
        load_spec(str(path))


def test_jobs_auto_is_one_per_gpu_else_by_cores(tmp_path, monkeypatch):
    from mmrecbole.leaderboard import spec as spec_module

    path = tmp_path / "board.yaml"
    path.write_text("dataset: ml-100k\nmodels: [BPR]\n")  # no jobs: auto
    for gpus, cores, expected in [(0, 2, 1), (0, 4, 1), (0, 16, 4), (2, 16, 2), (8, 2, 8)]:
        monkeypatch.setattr(spec_module, "cuda_device_count", lambda: gpus)
        monkeypatch.setattr(spec_module.os, "cpu_count", lambda: cores)
        assert load_spec(str(path)).jobs == expected, (gpus, cores)
        path.write_text("dataset: ml-100k\njobs: auto\nmodels: [BPR]\n")
        assert load_spec(str(path)).jobs == expected
        path.write_text("dataset: ml-100k\nmodels: [BPR]\n")


def test_workers_flag_overrides_the_boards_jobs(tmp_path, monkeypatch, capsys):
    from mmrecbole import cli

    path = tmp_path / "board.yaml"
    path.write_text("dataset: ml-100k\njobs: 1\nmodels: [Pop]\n")
    seen = []

    def fake_run(spec, **kwargs):
        seen.append(spec.jobs)
        raise ConfigError("stop here")

    monkeypatch.setattr(runner_module, "run_leaderboard", fake_run)
    monkeypatch.setattr("mmrecbole.leaderboard.run_leaderboard", fake_run)
    assert cli.main([f"--leaderboard={path}", "--workers=3"]) == 2 and seen == [3]
    assert cli.main([f"--leaderboard={path}"]) == 2 and seen == [3, 1]
    assert cli.main([f"--leaderboard={path}", "--workers=0"]) == 2
    assert "--workers must be an integer >= 1 (runs at a time) or auto, got 0" in capsys.readouterr().err
    assert cli.main(["--model=Pop", "--dataset=ml-100k", "--workers=2"]) == 2
    assert "--workers goes with a leaderboard" in capsys.readouterr().err


def test_each_worker_of_a_parallel_board_gets_its_own_gpu(tmp_path, monkeypatch):
    """On a machine with several GPUs, worker n's children run on GPU n (RecBole's gpu_id, a presentation key:
    cache keys unchanged); one at a time, or with one GPU, the row's own settings decide."""
    import threading

    from mmrecbole.errors import UserError
    from mmrecbole.leaderboard import spec as spec_module

    monkeypatch.setattr(spec_module, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(runner_module, "ensure_dataset_files", lambda config: None)
    seen, lock = [], threading.Lock()

    def fake_job(request, what, timeout, on_event):
        import time as clock

        clock.sleep(0.2)  # long enough for both workers to take a run
        with lock:
            seen.append((threading.get_ident(), request["settings"].get("gpu_id")))
        return None, f"{what} not run (test)"

    monkeypatch.setattr(runner_module, "run_job", fake_job)
    spec = LeaderboardSpec(dataset="ml-100k", seeds=[1, 2, 3], models=[ModelEntry("BPR", "BPR")],
                           cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "board"), jobs=2)
    with pytest.raises(UserError, match="no leaderboard run finished"):
        run_leaderboard(spec, echo=lambda *_: None, status=_RecordingStatus())
    gpus_by_thread = {}
    for thread, gpu in seen:
        gpus_by_thread.setdefault(thread, set()).add(gpu)
    assert sorted(g for gpus in gpus_by_thread.values() for g in gpus) == ["0", "1"]  # one GPU per worker
    assert len(seen) == 3
    seen.clear()
    spec.jobs = 1
    with pytest.raises(UserError):
        run_leaderboard(spec, echo=lambda *_: None, status=_RecordingStatus())
    assert {gpu for _, gpu in seen} == {None}


def test_baseline_is_chosen_by_validation_not_test():
    def summary(valid, test, content=False):
        return {"uses_content": content, "best_valid_score": (valid, 0.0), "test": {"ndcg@10": (test, 0.0)}}

    summaries = {"A": summary(0.30, 0.10), "B": summary(0.20, 0.50), "MM": summary(0.90, 0.90, content=True)}
    assert choose_baseline(summaries) == "A"
    # a board file's declared baseline wins, content row or not; a declared row without runs gives none
    assert choose_baseline(summaries, "MM") == "MM" and choose_baseline(summaries, "B") == "B"
    assert choose_baseline({"A": summaries["A"]}, "MM") is None


def test_a_declared_baseline_is_a_row_label_and_the_board_says_it_was_declared(tmp_path):
    path = tmp_path / "lb.yaml"
    path.write_text("dataset: ml-100k\nseeds: 1\nbaseline: bpr\nmodels: [BPR, Pop]\n")
    with pytest.raises(ConfigError, match="baseline 'bpr' is not a row label; labels: \\['BPR', 'Pop'\\]"):
        load_spec(str(path))
    path.write_text("dataset: ml-100k\nseeds: 1\nbaseline: Pop\nmodels: [BPR, Pop]\n")
    spec = load_spec(str(path))
    assert spec.baseline == "Pop"
    summaries = {label: stats.summarize([{"test": {"ndcg@10": value}, "best_valid_score": value}])
                 for label, value in (("BPR", 0.3), ("Pop", 0.1))}
    tests = {"BPR": {"p_users_t": 0.01, "p_users_wilcoxon": 0.02, "p_seeds_t": float("nan")}}
    text = report.markdown(spec, summaries, tests, choose_baseline(summaries, spec.baseline), report.environment(), [])
    assert "Baseline for Δ and p-values: **Pop**, the reference row declared by the board file" in text
    assert "| Pop (baseline) |" in text and "+200.0%" in text  # BPR's ΔNDCG@10 against the declared row
    spec.baseline = ""
    text = report.markdown(spec, summaries, {"Pop": tests["BPR"]}, choose_baseline(summaries), report.environment(), [])
    assert "**BPR**, the collaborative-filtering row (no item content) with the best mean validation score" in text


def test_reported_test_is_at_the_best_validation_epoch_not_the_best_test_epoch(tmp_path):
    data_path, files, _ = write_planted_mm(tmp_path, n_users=60)
    settings = {**FAST, "topk": [10], "valid_metric": "NDCG@10", "data_path": data_path, "epochs": 30,
                "stopping_step": 100, "embedding_size": 16, "learning_rate": 0.05, "seed": 5}
    # Instrumented twin: the test score after every epoch (never used for selection, only by this test).
    config = Config("BPR", "plantedmm", config_dict=settings)
    _, train, valid, test, model = build(config)
    trainer = make_trainer(config, model)
    test_by_epoch = {}
    trainer.fit(train, valid, saved=False, show_progress=False,
                callback_fn=lambda epoch, _: test_by_epoch.__setitem__(
                    epoch, trainer.evaluate(test, load_best_model=False)["ndcg@10"]))
    result = run("BPR", "plantedmm", config_dict=settings, console_log=False)
    best_test_epoch = max(test_by_epoch, key=test_by_epoch.get)
    assert best_test_epoch != result["best_epoch"], "fixture no longer separates the two epochs; change the seed"
    assert result["test"]["ndcg@10"] == pytest.approx(test_by_epoch[result["best_epoch"]], abs=1e-4)
    assert result["test"]["ndcg@10"] < test_by_epoch[best_test_epoch]


def test_spec_file_validation(tmp_path):
    path = tmp_path / "lb.yaml"
    path.write_text("dataset: ml-100k\nseeds: 2\nmodels:\n  - BPR\n  - name: BPR\n    settings: {topk: [5]}\n")
    with pytest.raises(ConfigError, match="row labels must be unique"):
        load_spec(str(path))
    path.write_text("dataset: ml-100k\nmodels:\n  - name: BPR\n    label: B\n    settings: {topk: [5]}\n")
    with pytest.raises(ConfigError, match="changes protocol keys"):
        load_spec(str(path))
    path.write_text("dataset: ml-100k\nmodel: [BPR]\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_spec(str(path))
    path.write_text("dataset: ml-100k\nseeds: 3\nmodels: [BPR, Pop]\n")
    assert load_spec(str(path)).seeds == [2020, 2021, 2022]
    # a board-wide model key reaches only the rows whose model has it; none having it is an error
    path.write_text("dataset: ml-100k\nsettings: {n_layers: 2}\nmodels: [BPR, Pop]\n")
    with pytest.raises(ConfigError, match="settings key 'n_layers' is a setting of .*, not of any row's model"):
        load_spec(str(path))
    path.write_text("dataset: ml-100k\nsettings: {window_context: 5, epochs: 3}\nmodels: [BPR, MMSASRec]\n")
    spec = load_spec(str(path))
    bpr, mm = (spec.row_settings(entry, 2020) for entry in spec.models)
    assert "window_context" not in bpr and bpr["epochs"] == 3 and mm["window_context"] == 5


def test_report_only_runs_nothing_and_lists_missing_runs(board, monkeypatch, tmp_path):
    spec, _, (data_path, files, _) = board
    monkeypatch.setattr(runner_module, "_run_child", lambda *a: pytest.fail("report_only must not run anything"))
    wider = _spec(tmp_path, data_path, files)
    wider.cache_dir, wider.seeds = spec.cache_dir, [1, 2, 3]  # another board over the same cache
    outcome = run_leaderboard(wider, echo=lambda *_: None, report_only=True)
    # Pop does not use the seed: its seed 3 is seed 1's run (copied, not trained); BPR's and VBPR's are missing
    assert len(outcome["runs"]) == 7 and len(outcome["failures"]) == 2
    assert [r["same_run_as_seed"] for r in outcome["runs"] if r["label"] == "Pop" and r["seed"] == 3] == [1]
    assert "VBPR (text+image) seed 3: not run yet" in outcome["report"]["markdown"]
    assert not any("seed3" in name for name in os.listdir(os.path.join(spec.cache_dir, "runs")))  # nothing written
    assert outcome["report"]["paths"]["md"].startswith(str(tmp_path))  # its own report, the shared runs


def test_a_baseline_at_zero_gets_a_difference_instead_of_a_percentage():
    # Cold-start boards: ID-only baselines score 0 on held-out items, where a relative change is undefined.
    from mmrecbole.leaderboard import report, stats

    def fake_run(value):
        return {"test": {"recall@20": value}, "uses_content": value > 0, "best_valid_score": 0.1}

    summaries = {"ID only": stats.summarize([fake_run(0.0), fake_run(0.0)]),
                 "content": stats.summarize([fake_run(0.04), fake_run(0.06)])}
    spec = LeaderboardSpec(dataset="plantedmm", seeds=[1, 2], models=[ModelEntry("Pop", "ID only")],
                           significance_metric="recall@20")
    tests = {"content": {"p_users_t": 0.01, "p_users_wilcoxon": 0.02, "p_seeds_t": 0.03}}
    text = report.markdown(spec, summaries, tests, "ID only", report.environment(), [])
    row = next(line for line in text.splitlines() if line.startswith("| content"))
    assert "+0.0500" in row and "nan" not in row


def test_the_validation_column_names_the_validation_metric_not_the_significance_one():
    from mmrecbole.leaderboard import report, stats

    run = {"test": {"recall@20": 0.05}, "uses_content": False, "best_valid_score": 0.03, "valid_metric": "NDCG@10"}
    spec = LeaderboardSpec(dataset="plantedmm", seeds=[1], models=[ModelEntry("Pop", "A")],
                           significance_metric="recall@20")
    text = report.markdown(spec, {"A": stats.summarize([run])}, {}, "A", report.environment(), [])
    header = next(line for line in text.splitlines() if "best epoch" in line)
    assert "| valid ndcg@10 |" in header and "valid recall@20" not in text


def test_every_setting_but_presentation_and_seed_is_in_the_run_key(ring_data_path):
    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "train_mode": "all_positions"}
    config = Config("MMSASRec", "planted", config_dict=settings)
    for changed in ({"window_bucketing": False}, {"torch_compile": True}, {"window_context": 10},
                    {"window_batch_targets": 4096}, {"window_shift": True}, {"learning_rate": 0.002}):
        other = Config("MMSASRec", "planted", config_dict={**settings, **changed})
        assert runs.config_hash(other) != runs.config_hash(config), changed
    for same in ({"seed": 5}, {"eval_batch_size": 1024}, {"checkpoint_dir": "elsewhere"}, {"show_progress": True},
                 {"run_cache_dir": "elsewhere"}):
        other = Config("MMSASRec", "planted", config_dict={**settings, **same})
        assert runs.config_hash(other) == runs.config_hash(config), same


# -- provenance: which code computed a board's runs ---------------------------------------------------------------
def test_runs_record_their_code_version_and_are_keyed_by_it(board):
    spec, outcome, _ = board
    version = provenance.code_version()
    assert len(version) == 12 and int(version, 16) >= 0
    for record in outcome["runs"]:
        assert record["code_version"] == version and record["commit"]
    for planned in runner_module.plan(spec):
        assert planned.path.endswith(f"-{planned.hash}-{version}.json") and os.path.isfile(planned.path)
        assert json.load(open(planned.path))["code_version"] == version


def test_a_run_cached_by_other_code_is_not_reused(board, monkeypatch):
    spec, _, _ = board
    before = runner_module.plan(spec)
    assert all(run.cached() is not None for run in before)
    monkeypatch.setattr(provenance, "code_version", lambda: "0123456789ab")
    after = runner_module.plan(spec)
    for old, new in zip(before, after):
        assert new.hash == old.hash and new.path != old.path and new.cached() is None
    # even a record copied under the new key is refused: it says which code computed it
    shutil.copy(before[0].path, after[0].path)
    try:
        assert after[0].cached() is None
    finally:
        os.remove(after[0].path)
    monkeypatch.setattr(runner_module, "_run_child", lambda *a: pytest.fail("report_only must not run anything"))
    with pytest.raises(Exception, match="no leaderboard run finished"):
        run_leaderboard(spec, echo=lambda *_: None, report_only=True)


def test_code_version_covers_sources_properties_and_packages(tmp_path):
    files = dict(provenance._source_files())
    assert "mmrecbole/leaderboard/runner.py" in files and "mmrecbole/cli.py" in files
    assert any(p.startswith("properties/") and p.endswith(".yaml") for p in files)
    assert "properties/model/MMSASRec.yaml" in files and "properties/overall.yaml" in files
    assert not any(p.startswith("properties/leaderboard/") for p in files)  # boards compose runs, compute nothing
    assert not any("__pycache__" in p or not p.endswith((".py", ".yaml")) for p in files)
    assert set(provenance.package_versions()) >= {"recbole", "implicit", "torch", "lightgbm", "numpy", "scipy",
                                                   "transformers", "torchvision"}
    assert provenance.code_version() is provenance.code_version()  # once per process
    # the hash of a tree: its paths and bytes, and the package versions (here on a small tree of its own: the
    # project's files may change while the tests run)
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.yaml").write_text("k: 1\n")
    tree = [("pkg/a.py", str(tmp_path / "a.py")), ("properties/b.yaml", str(tmp_path / "b.yaml"))]
    packages = {"torch": "2.0", "numpy": "1.26"}
    version = provenance.version_of(tree, packages)
    assert len(version) == 12 and version == provenance.version_of(tree[::-1], dict(reversed(packages.items())))
    assert provenance.version_of(tree, {**packages, "torch": "2.1"}) != version
    assert provenance.version_of([("pkg/c.py", tree[0][1]), tree[1]], packages) != version  # a renamed file
    (tmp_path / "b.yaml").write_text("k: 2\n")
    assert provenance.version_of(tree, packages) != version


def _records(*pairs):
    """Synthetic run records, one per (code_version, commit); None leaves the field out (older runs)."""
    records = []
    for version, commit in pairs:
        record = {"label": "BPR", "seed": len(records)}
        if version is not None:
            record["code_version"] = version
        if commit is not None:
            record["commit"] = commit
        records.append(record)
    return records


def _board_text(records, current_commit="fffffff+uncommitted changes", current_version="cccccccccccc"):
    summaries = {"BPR": stats.summarize([{"test": {"ndcg@10": 0.1}, "best_valid_score": 0.1},
                                         {"test": {"ndcg@10": 0.2}, "best_valid_score": 0.2}])}
    spec = LeaderboardSpec(dataset="plantedmm", seeds=[1, 2], models=[ModelEntry("BPR", "BPR")])
    origin = provenance.summarize(records, current_commit, current_version)
    env = {**report.environment(), "provenance": origin["line"]}
    return origin, report.markdown(spec, summaries, {}, "BPR", env, [])


def test_the_board_says_which_commit_made_its_rows():
    origin, text = _board_text(_records(("aaaaaaaaaaaa", "abc1234"), ("aaaaaaaaaaaa", "abc1234")))
    assert origin["single_commit"] and origin["publishable"]
    assert "All 2 runs computed by code version aaaaaaaaaaaa at commit abc1234 (clean checkout)." in text
    assert not TRAINED_AT_DIRTY.search(text) and "WARNING" not in text and "MIXED" not in text
    # two clean commits of one code version (e.g. a commit that changed only documentation): identical code
    origin, text = _board_text(_records(("aaaaaaaaaaaa", "abc1234"), ("aaaaaaaaaaaa", "def5678")))
    assert origin["publishable"] and not origin["single_commit"] and not TRAINED_AT_DIRTY.search(text)
    assert "All 2 runs computed by code version aaaaaaaaaaaa" in text and "abc1234 (1 run), def5678 (1 run)" in text


@pytest.mark.parametrize("pairs, named", [
    ((("aaaaaaaaaaaa", "abc1234"), ("bbbbbbbbbbbb", "def5678")), "2 code versions"),
    ((("aaaaaaaaaaaa", "abc1234+uncommitted changes"),) * 2, "uncommitted changes"),
    ((("aaaaaaaaaaaa", "abc1234"), (None, None)), "runs whose code is not recorded"),
    ((("aaaaaaaaaaaa", "abc1234"), (None, "abc1234")), "runs whose code is not recorded"),
    ((("aaaaaaaaaaaa", "abc1234"), ("bbbbbbbbbbbb", "abc1234+uncommitted changes"), (None, None)),
     "2 code versions, runs whose code is not recorded, uncommitted changes"),
    ((("aaaaaaaaaaaa", "unknown"),) * 2, "runs outside git"),
    ((), "no runs"),
])
def test_a_mixed_or_uncommitted_board_says_so(pairs, named):
    origin, text = _board_text(_records(*pairs))
    assert not origin["single_commit"] and not origin["publishable"]
    assert "WARNING: MIXED board" in text and named in text and TRAINED_AT_DIRTY.search(text)
    assert "computed by code version" not in text


def test_runs_trained_before_their_code_was_committed_match_a_clean_checkout():
    dirty = _records(("aaaaaaaaaaaa", "abc1234+uncommitted changes"), ("aaaaaaaaaaaa", "abc1234+uncommitted changes"))
    origin, text = _board_text(dirty, current_commit="9abcdef", current_version="aaaaaaaaaaaa")
    assert origin["publishable"] and not origin["single_commit"] and not TRAINED_AT_DIRTY.search(text)
    assert "All 2 runs computed by code version aaaaaaaaaaaa, the code of commit 9abcdef" in text
    for commit, version in (("9abcdef+uncommitted changes", "aaaaaaaaaaaa"), ("9abcdef", "bbbbbbbbbbbb")):
        origin, text = _board_text(dirty, current_commit=commit, current_version=version)
        assert not origin["publishable"] and TRAINED_AT_DIRTY.search(text)


def test_a_board_without_provenance_is_flagged():
    spec = LeaderboardSpec(dataset="plantedmm", seeds=[1], models=[ModelEntry("BPR", "BPR")])
    summaries = {"BPR": stats.summarize([{"test": {"ndcg@10": 0.1}, "best_valid_score": 0.1}])}
    text = report.markdown(spec, summaries, {}, "BPR", report.environment(), [])
    assert TRAINED_AT_DIRTY.search(text)


def test_cli_refuses_to_put_a_mixed_board_into_the_readme(monkeypatch, capsys):
    import mmrecbole.leaderboard as leaderboard_package
    from mmrecbole import cli

    origin = provenance.summarize(_records(("aaaaaaaaaaaa", "abc1234+uncommitted changes")))
    outcome = {"runs": [], "failures": [], "report": {"markdown": "# Leaderboard: plantedmm\n", "paths": {},
                                                      "provenance": origin, **{k: origin[k] for k in (
                                                          "single_commit", "publishable")}}}
    monkeypatch.setattr(leaderboard_package, "run_leaderboard", lambda *a, **k: outcome)
    monkeypatch.setattr(report, "update_readme", lambda *a: pytest.fail("a mixed board must not reach the README"))
    assert cli.main(["--model=Pop,BPR", "--dataset=plantedmm", "--seeds=1", "--readme"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "README.md not updated" in error[0] and "abc1234+uncommitted changes" in error[0]


def test_the_wilcoxon_variant_is_zsplit_and_the_board_says_so():
    """Leave-one-out: most users have identical per-user metrics under two models. zsplit keeps those zero
    differences (half their ranks each side); scipy's default 'wilcox' drops them and gets a far smaller p."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(0)
    n_users, n_differ = 400, 40
    b = rng.uniform(0, 1, n_users).round(3)
    a = b.copy()
    a[:n_differ] += np.where(np.arange(n_differ) < 30, 0.05, -0.05)  # 30 better, 10 worse, 360 identical
    users = [str(u) for u in range(n_users)]

    def runs(values):
        return [{"seed": 1, "test": {"ndcg@10": float(values.mean())},
                 "test_per_user": {"user_id": users, "ndcg@10": values.tolist()}}]

    p = stats.paired_tests(runs(a), runs(b), "ndcg@10")["p_users_wilcoxon"]
    zsplit = scipy_stats.wilcoxon(a, b, zero_method="zsplit").pvalue
    wilcox = scipy_stats.wilcoxon(a, b, zero_method="wilcox").pvalue
    assert stats.WILCOXON_ZERO_METHOD == "zsplit"
    assert p == pytest.approx(zsplit, rel=1e-12)
    assert wilcox < 0.01 < zsplit  # the variant decides whether this difference counts as significant
    assert p != pytest.approx(wilcox, rel=0.1)
    _, text = _board_text(_records(("aaaaaaaaaaaa", "abc1234")))
    assert 'zero_method="zsplit"' in text and '"wilcox"' in text and '"pratt"' in text


def test_one_run_cache_for_board_rows_and_stacker_base_models_keyed_by_code_version(tmp_path, monkeypatch):
    from mmrecbole.ensemble import base_models

    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"x")
    cache = runs.RunCache(str(tmp_path / "runs"))
    spec = SimpleNamespace(name="BPR", label="BPR (stacked)", config_hash="0a1b2c3d4e5f")
    result = {"model": "BPR", "dataset": "plantedmm", "seed": 1, "test": {"ndcg@10": 0.5},
              "checkpoint": str(checkpoint)}
    monkeypatch.setattr(provenance, "code_version", lambda: "111111111111")
    # a leaderboard row's record (another label) is what the stacker finds for its base model
    path_one = cache.put(runs.make_record(result, label="BPR", config_hash=spec.config_hash, settings={},
                                          uses_content=False, commit="abc1234"))
    found = base_models.cached_base_run(spec, "plantedmm", 1, cache)
    assert found.reused and found.checkpoint == str(checkpoint) and found.result["test"] == {"ndcg@10": 0.5}
    assert base_models.cached_base_run(spec, "plantedmm", 2, cache) is None  # another seed
    monkeypatch.setattr(provenance, "code_version", lambda: "222222222222")
    assert cache.path("BPR", "plantedmm", 1, spec.config_hash) != path_one
    assert base_models.cached_base_run(spec, "plantedmm", 1, cache) is None
    # a record of other code under this key (copied, renamed) is refused as well
    shutil.copy(path_one, cache.path("BPR", "plantedmm", 1, spec.config_hash))
    assert cache.get("BPR", "plantedmm", 1, spec.config_hash) is None
    # a record whose checkpoint is gone is not reused
    monkeypatch.setattr(provenance, "code_version", lambda: "111111111111")
    checkpoint.unlink()
    assert cache.get("BPR", "plantedmm", 1, spec.config_hash) is not None
    assert base_models.cached_base_run(spec, "plantedmm", 1, cache) is None


def test_the_readme_gets_the_accuracy_table_and_a_link_to_the_full_board(board, tmp_path):
    spec, outcome, _ = board
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- leaderboard:plantedmm:start -->\nOLD-SECTION\n<!-- leaderboard:plantedmm:end -->\n\n"
                      "## After\n")
    board_md = tmp_path / "leaderboards" / "plantedmm" / "leaderboard.md"
    assert report.update_readme(str(readme), "plantedmm", outcome["report"]["markdown"], "CMD", str(board_md))
    text = readme.read_text()
    section = text.split("<!-- leaderboard:plantedmm:start -->")[1].split("<!-- leaderboard:plantedmm:end -->")[0]
    assert text.startswith("# Title") and text.endswith("## After\n") and "OLD-SECTION" not in section
    assert "Generated by `CMD`" in section and "#### Accuracy (test)" in section and "| NDCG@10" in section
    assert "Seeds: 1, 2" in section and "Baseline for Δ" in section
    assert "[full board](leaderboards/plantedmm/leaderboard.md)" in section
    assert "Coverage@10" not in section and "zsplit" not in section  # in the full board only
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0] == ("| Model | content | Recall@20 | NDCG@10 | ΔNDCG@10 vs baseline | p users (t / Wilcoxon) | "
                        "p seeds |") and table[1] == "|---|---|---|---|---|---|---|"
    assert len(table) == 2 + 3 and all(line.count(" | ") == 6 for line in table[2:])  # Pop, BPR, VBPR
    assert section.strip().splitlines()[-1].startswith(provenance.SUMMARY_STARTS)
    assert not report.update_readme(str(readme), "other", outcome["report"]["markdown"], "CMD", str(board_md))


def test_every_committed_board_file_is_valid():
    from mmrecbole import PROJECT_ROOT

    folder = os.path.join(PROJECT_ROOT, "properties", "leaderboard")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert "ml-100k-mm-tuned-cf.yaml" in files
    for name in files:
        spec = load_spec(os.path.join(folder, name))
        assert spec.models, name
