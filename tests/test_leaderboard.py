"""Leaderboards: files and numbers that match the per-run JSON, resume, invalidation, validation-only selection."""
import csv
import json
import os

import numpy as np
import pytest

from mmrecbole.config import Config
from mmrecbole.errors import ConfigError
from mmrecbole.leaderboard import LeaderboardSpec, ModelEntry, load_spec, run_leaderboard
from mmrecbole.leaderboard import runner as runner_module
from mmrecbole.leaderboard.stats import choose_baseline
from mmrecbole.quick_start import build, run
from mmrecbole import registry
from tests.planted import FAST
from tests.planted_mm import write_planted_mm


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
    return spec, run_leaderboard(spec, echo=lambda *_: None), (data_path, files, tmp_path)


def test_files_rows_and_columns(board):
    spec, outcome, _ = board
    paths = outcome["report"]["paths"]
    assert all(os.path.isfile(p) for p in paths.values())
    text = open(paths["md"]).read()
    for label in ("Pop", "BPR", "VBPR (text+image)"):
        assert f"| {label}" in text or f"| **{label}" in text
    assert "NDCG@10" in text and "Coverage@10" in text and "Gini@10" in text and "p users" in text
    assert "Seeds: 1, 2" in text and "Report written at commit " in text and "machine:" in text
    # every run records the code it was trained with; the report says which commits its cached runs come from
    commits = {r["commit"] for r in outcome["runs"]}
    assert len(commits) == 1 and "unknown" not in commits
    assert f"runs trained at: {commits.pop()} (6 runs)" in text
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

    def spy(run, spec_, timeout):
        calls.append(run.entry.label)
        return real(run, spec_, timeout)

    monkeypatch.setattr(runner_module, "_run_child", spy)
    run_leaderboard(spec, echo=lambda *_: None)
    assert calls == []  # resumed: nothing retrained
    changed = _spec(tmp_path, data_path, files, bpr_settings={"embedding_size": 8})
    outcome = run_leaderboard(changed, echo=lambda *_: None)
    assert calls == ["BPR", "BPR"]
    assert len(outcome["runs"]) == 6


def test_baseline_is_chosen_by_validation_not_test():
    def summary(valid, test, content=False):
        return {"uses_content": content, "best_valid_score": (valid, 0.0), "test": {"ndcg@10": (test, 0.0)}}

    summaries = {"A": summary(0.30, 0.10), "B": summary(0.20, 0.50), "MM": summary(0.90, 0.90, content=True)}
    assert choose_baseline(summaries) == "A"


def test_reported_test_is_at_the_best_validation_epoch_not_the_best_test_epoch(tmp_path):
    data_path, files, _ = write_planted_mm(tmp_path, n_users=60)
    settings = {**FAST, "topk": [10], "valid_metric": "NDCG@10", "data_path": data_path, "epochs": 30,
                "stopping_step": 100, "embedding_size": 16, "learning_rate": 0.05, "seed": 5}
    # Instrumented twin: the test score after every epoch (never used for selection, only by this test).
    config = Config("BPR", "plantedmm", config_dict=settings)
    _, train, valid, test, model = build(config)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
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


def test_report_only_runs_nothing_and_lists_missing_runs(board, monkeypatch, tmp_path):
    spec, _, (data_path, files, _) = board
    monkeypatch.setattr(runner_module, "_run_child", lambda *a: pytest.fail("report_only must not run anything"))
    wider = _spec(tmp_path, data_path, files)
    wider.cache_dir, wider.seeds = spec.cache_dir, [1, 2, 3]  # another board over the same cache
    outcome = run_leaderboard(wider, echo=lambda *_: None, report_only=True)
    assert len(outcome["runs"]) == 6 and len(outcome["failures"]) == 3
    assert "VBPR (text+image) seed 3: not run yet" in outcome["report"]["markdown"]
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


def test_keys_added_later_stay_out_of_the_run_key_at_their_neutral_default(ring_data_path):
    """window_bucketing / torch_compile / window_context / window_batch_targets / window_shift arrived after runs were
    cached: at their defaults a config hashes as it did
    before the keys existed (the cache stays valid); another value is a different run."""
    from types import SimpleNamespace

    settings = {**FAST, "data_path": ring_data_path, "modalities": [], "train_mode": "all_positions"}
    config = Config("MMSASRec", "planted", config_dict=settings)
    before_keys = SimpleNamespace(resolved={k: v for k, v in config.resolved.items()
                                            if k not in ("window_bucketing", "torch_compile", "window_context",
                                                         "window_batch_targets", "window_shift")})
    assert runner_module.config_hash(config) == runner_module.config_hash(before_keys)
    for changed in ({"window_bucketing": False}, {"torch_compile": True}, {"window_context": 10},
                    {"window_batch_targets": 4096}, {"window_shift": True}):
        other = Config("MMSASRec", "planted", config_dict={**settings, **changed})
        assert runner_module.config_hash(other) != runner_module.config_hash(config)
