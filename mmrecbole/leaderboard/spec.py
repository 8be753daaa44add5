"""What a leaderboard runs: a YAML file (properties/leaderboard/<name>.yaml) or the CLI's quick form.

    dataset: ml-100k-mm
    seeds: [2020, 2021, 2022]          # or a count: 3 -> 2020, 2021, 2022
    settings: {epochs: 100}            # applied to every model (protocol keys belong in properties/overall.yaml)
    models:
      - BPR                            # a bare name, or:
      - name: MMSASRec
        label: MMSASRec (text only)    # row label, unique; default = name
        settings: {modalities: [text]}
    significance_metric: ndcg@10       # per-user test metric of the paired tests
    plot_metrics: [ndcg@10, recall@20]
    output_dir: leaderboards/<name>    # reports; default leaderboards/<dataset>
    cache_dir: leaderboards/<dataset>  # runs/, checkpoints/, logs/: shared by every leaderboard of the dataset, so
                                       # a row with the same label, settings and seed is reused across files
    jobs: 1                            # runs at a time; > 1 shares the cores among them (cores // jobs torch
                                       # threads each) and the board says its timings come from a shared machine

Every row runs under the same protocol: the leaderboard adds its metrics (accuracy + beyond-accuracy) to every
model's settings and refuses per-model changes to the split, candidates or metrics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from mmrecbole import PROJECT_ROOT
from mmrecbole.config import accepts, key_owners, read_yaml_file, settings_for
from mmrecbole.errors import ConfigError
from mmrecbole.registry import PIPELINES
from mmrecbole.runs import PROTOCOL_KEYS

#: Metrics of every leaderboard row: accuracy, then RecBole's beyond-accuracy metrics (exposure, popularity bias).
LEADERBOARD_METRICS = ["Recall", "NDCG", "MRR", "Hit", "ItemCoverage", "GiniIndex", "AveragePopularity",
                       "TailPercentage"]
_TOP_KEYS = {"dataset", "seeds", "settings", "models", "significance_metric", "plot_metrics", "output_dir",
             "cache_dir", "jobs"}


@dataclass
class ModelEntry:
    name: str
    label: str
    settings: dict = field(default_factory=dict)


@dataclass
class LeaderboardSpec:
    dataset: str
    models: list
    seeds: list
    settings: dict = field(default_factory=dict)
    significance_metric: str = "ndcg@10"
    plot_metrics: list = field(default_factory=lambda: ["ndcg@10", "recall@20"])
    output_dir: str = ""
    cache_dir: str = ""
    jobs: int = 1
    source: str = "command line"

    def __post_init__(self):
        default = os.path.join(PROJECT_ROOT, "leaderboards", self.dataset)
        # Relative paths as written in a leaderboard file: from the project root.
        self.output_dir = os.path.join(PROJECT_ROOT, self.output_dir) if self.output_dir else default
        self.cache_dir = os.path.join(PROJECT_ROOT, self.cache_dir) if self.cache_dir else default

    def row_settings(self, entry: ModelEntry, seed: int) -> dict:
        """The config_dict of one run: shared settings, the row's own, the seed, and the leaderboard metrics."""
        shared = self.settings if entry.name in PIPELINES else settings_for(entry.name, self.settings)
        return {**shared, **entry.settings, "seed": seed, "metrics": list(LEADERBOARD_METRICS),
                "show_progress": False}


def _seeds(value, source):
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"seeds in {source} must be >= 1, got {value}")
        return [2020 + i for i in range(value)]
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"seeds in {source} repeat a seed: {value}")
        return list(value)
    raise ConfigError(f"seeds in {source} must be a count or a list of integers, got {value!r}")


def _entry(item, source, index):
    if isinstance(item, str):
        return ModelEntry(item, item)
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"models[{index}] in {source} must be a name or a mapping with 'name', got {item!r}")
    unknown = set(item) - {"name", "label", "settings"}
    if unknown:
        raise ConfigError(f"models[{index}] in {source} has unknown keys {sorted(unknown)} (name, label, settings)")
    settings = item.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"models[{index}].settings in {source} must be a mapping")
    return ModelEntry(str(item["name"]), str(item.get("label") or item["name"]), dict(settings))


def validate(spec: LeaderboardSpec) -> LeaderboardSpec:
    if not spec.models:
        raise ConfigError(f"leaderboard {spec.source} lists no models")
    if isinstance(spec.jobs, bool) or not isinstance(spec.jobs, int) or spec.jobs < 1:
        raise ConfigError(f"leaderboard {spec.source}: jobs must be an integer >= 1 (runs at a time), got "
                          f"{spec.jobs!r}")
    labels = [m.label for m in spec.models]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigError(f"leaderboard {spec.source}: row labels must be unique, repeated: {duplicated} "
                          "(give each variant a label)")
    for where, settings in [("settings", spec.settings)] + [(f"settings of {m.label}", m.settings) for m in spec.models]:
        fixed = sorted(set(settings) & set(PROTOCOL_KEYS))
        if fixed and where != "settings":
            raise ConfigError(f"leaderboard {spec.source}: {where} changes protocol keys {fixed}; every row must "
                              "share the split, candidates and metrics (set them for all rows under settings)")
        if where == "settings" and not any(m.name in PIPELINES for m in spec.models):
            for key in settings:
                if not any(accepts(m.name, key) for m in spec.models):
                    raise ConfigError(f"leaderboard {spec.source}: settings key '{key}' is a setting of "
                                      f"{', '.join(key_owners(key)[:6]) or 'no model'}, not of any row's model; "
                                      "move it to the rows it is meant for")
        if "metrics" in settings or "seed" in settings:
            raise ConfigError(f"leaderboard {spec.source}: {where} may not set metrics or seed (the leaderboard "
                              "fixes the metrics; seeds go under seeds)")
    return spec


def load_spec(path: str) -> LeaderboardSpec:
    data = read_yaml_file(path)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"leaderboard file {path} has unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    for key in ("dataset", "models"):
        if key not in data:
            raise ConfigError(f"leaderboard file {path} needs '{key}'")
    if not isinstance(data["models"], list):
        raise ConfigError(f"models in {path} must be a list")
    spec = LeaderboardSpec(
        dataset=str(data["dataset"]),
        models=[_entry(item, path, i) for i, item in enumerate(data["models"])],
        seeds=_seeds(data.get("seeds", 3), path),
        settings=dict(data.get("settings") or {}),
        significance_metric=str(data.get("significance_metric", "ndcg@10")).lower(),
        plot_metrics=[str(m).lower() for m in data.get("plot_metrics", ["ndcg@10", "recall@20"])],
        output_dir=str(data.get("output_dir") or ""),
        cache_dir=str(data.get("cache_dir") or ""),
        jobs=data.get("jobs", 1),
        source=path,
    )
    return validate(spec)


def quick_spec(models: list, dataset: str, seeds, settings: dict) -> LeaderboardSpec:
    """`--model=A,B,C --dataset=D --seeds=3 [--key=value...]`: every row gets the same settings."""
    return validate(LeaderboardSpec(dataset=dataset, models=[ModelEntry(m, m) for m in models],
                                    seeds=_seeds(seeds, "--seeds"), settings=dict(settings)))
