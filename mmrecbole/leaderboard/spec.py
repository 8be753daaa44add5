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
    baseline: SASRec (ID only)         # reference row of the Δ and p-values, declared before any run; default:
                                       # the CF row (no item content) with the best mean validation score
    plot_metrics: [ndcg@10, recall@20]
    output_dir: leaderboards/<name>    # reports; default leaderboards/<dataset>
    cache_dir: leaderboards/<dataset>  # runs/, checkpoints/, logs/: shared by every leaderboard of the dataset, so
                                       # a row with the same label, settings and seed is reused across files
    jobs: auto                         # runs at a time (CLI: --workers N); auto: one per GPU on a GPU machine
                                       # (each child its own device), else 1 up to 4 cores and cores // 4 above;
                                       # > 1 shares the cores among them (cores // jobs torch threads each) and
                                       # the board says its timings come from a shared machine
    tune: {trials: 20}                 # tune every row whose model has properties/search/<Model>.yaml with the
                                       # same budget (Optuna, validation only) before its seeds run; a row may say
                                       # tune: false (keeps its defaults) or tune: {trials: 20, search_space: FILE}

A tuned row's study trains with the board's first seed; its chosen settings then train on every seed. Every tuned
row gets the same number of trials (a board that gives rows different budgets is refused); rows without a search
space keep their defaults and the board marks them untuned.

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
             "cache_dir", "jobs", "tune", "baseline"}
_TUNE_KEYS = {"trials", "search_space"}


@dataclass(frozen=True)
class TuneRequest:
    """A row's study: `trials` finished trials over `search_space` (default properties/search/<Model>.yaml)."""

    trials: int
    search_space: str = ""


@dataclass
class ModelEntry:
    name: str
    label: str
    settings: dict = field(default_factory=dict)
    #: None: the board's `tune` decides; False: keep the defaults; a TuneRequest: tune this row.
    tune: object = None


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
    jobs: int = 1  # load_spec / quick_spec resolve the files' and the CLI's "auto" with default_workers()
    tune: object = None  # a TuneRequest for every row with a search space, or None
    storage: str = ""    # Optuna storage of the board's studies; default sqlite:///<cache_dir>/tuning/<dataset>.db
    source: str = "command line"
    #: label of the reference row of the Δ and p-values ("" = the best CF row by mean validation score). A board
    #: of variants of one content model (no CF row) names its plain variant here.
    baseline: str = ""

    def __post_init__(self):
        default = os.path.join(PROJECT_ROOT, "leaderboards", self.dataset)
        # Relative paths as written in a leaderboard file: from the project root.
        self.output_dir = os.path.join(PROJECT_ROOT, self.output_dir) if self.output_dir else default
        self.cache_dir = os.path.join(PROJECT_ROOT, self.cache_dir) if self.cache_dir else default

    def tune_request(self, entry: ModelEntry):
        """The TuneRequest of a row, or None when it keeps its defaults: its own `tune`, else the board's for a
        model with a search space."""
        if entry.tune is False:
            return None
        if isinstance(entry.tune, TuneRequest):
            return entry.tune
        if self.tune is not None and entry.name not in PIPELINES and os.path.isfile(_default_space(entry.name)):
            return self.tune
        return None

    def untuned_reason(self, entry: ModelEntry) -> str:
        """Why a row keeps its defaults (for the board's tuning table)."""
        if entry.tune is False:
            return "tune: false"
        if entry.name in PIPELINES:
            return "a pipeline over other rows' models (their defaults)"
        if self.tune is not None:
            return f"no search space: {os.path.relpath(_default_space(entry.name), PROJECT_ROOT)} absent"
        return "no tune on the board or row"

    def row_settings(self, entry: ModelEntry, seed: int) -> dict:
        """The config_dict of one run: shared settings, the row's own, the seed, and the leaderboard metrics."""
        shared = self.settings if entry.name in PIPELINES else settings_for(entry.name, self.settings)
        return {**shared, **entry.settings, "seed": seed, "metrics": list(LEADERBOARD_METRICS),
                "show_progress": False}


def _default_space(model: str) -> str:
    from mmrecbole.tuning.space import space_path

    return space_path(model)


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


def _tune_request(value, where: str, allow_false: bool):
    """`tune:` as written -> a TuneRequest, False (a row that opts out) or None (absent)."""
    if value is None:
        return None
    if value is False and allow_false:
        return False
    if not isinstance(value, dict):
        allowed = "{trials: N} or false" if allow_false else "{trials: N}"
        raise ConfigError(f"{where} must be {allowed}, got {value!r}")
    unknown = set(value) - _TUNE_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)} (known: {sorted(_TUNE_KEYS)})")
    trials = value.get("trials")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{where}.trials must be an integer >= 1 (finished trials per study), got {trials!r}")
    space = value.get("search_space") or ""
    if space:
        space = space if os.path.isabs(str(space)) else os.path.join(PROJECT_ROOT, str(space))
        if not os.path.isfile(space):
            raise ConfigError(f"{where}.search_space: {space} not found")
    return TuneRequest(trials, str(space))


def _entry(item, source, index):
    if isinstance(item, str):
        return ModelEntry(item, item)
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"models[{index}] in {source} must be a name or a mapping with 'name', got {item!r}")
    unknown = set(item) - {"name", "label", "settings", "tune"}
    if unknown:
        raise ConfigError(f"models[{index}] in {source} has unknown keys {sorted(unknown)} (name, label, settings, "
                          "tune)")
    settings = item.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"models[{index}].settings in {source} must be a mapping")
    return ModelEntry(str(item["name"]), str(item.get("label") or item["name"]), dict(settings),
                      _tune_request(item.get("tune"), f"models[{index}].tune in {source}", allow_false=True))


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """`jobs: auto`: one run per GPU on a GPU machine; on the CPU, 1 up to 4 cores (two runs at a time gain ~1.3x
    on 2 cores but make every seconds column a shared machine's), else one per 4 cores."""
    gpus = cuda_device_count()
    if gpus:
        return gpus
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else cores // 4


def resolve_jobs(value, source: str) -> int:
    """A board's or the CLI's `jobs` / --workers: 'auto' or an integer >= 1."""
    if value == "auto":
        return default_workers()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source} must be an integer >= 1 (runs at a time) or auto, got {value!r}")
    return value


def validate(spec: LeaderboardSpec) -> LeaderboardSpec:
    if not spec.models:
        raise ConfigError(f"leaderboard {spec.source} lists no models")
    if isinstance(spec.jobs, bool) or not isinstance(spec.jobs, int) or spec.jobs < 1:
        raise ConfigError(f"leaderboard {spec.source}: jobs must be an integer >= 1 (runs at a time), got "
                          f"{spec.jobs!r}")
    if spec.tune is not None and spec.tune.search_space:
        raise ConfigError(f"leaderboard {spec.source}: tune.search_space names one model's space; put it on that "
                          "row's tune instead")
    budgets = {}
    for entry in spec.models:
        if isinstance(entry.tune, TuneRequest) and entry.name in PIPELINES:
            raise ConfigError(f"leaderboard {spec.source}: row {entry.label} ({entry.name}) is a pipeline over other "
                              "rows' models and cannot be tuned itself; drop its tune")
        if isinstance(entry.tune, TuneRequest) and not entry.tune.search_space \
                and not os.path.isfile(_default_space(entry.name)):
            raise ConfigError(f"leaderboard {spec.source}: row {entry.label} asks for tuning but {entry.name} has no "
                              f"search space ({_default_space(entry.name)}); write one or give tune.search_space")
        request = spec.tune_request(entry)
        if request is not None:
            budgets.setdefault(request.trials, []).append(entry.label)
    if len(budgets) > 1:
        listed = "; ".join(f"{n} trials: {', '.join(labels)}" for n, labels in sorted(budgets.items()))
        raise ConfigError(f"leaderboard {spec.source}: tuned rows must share one budget (the same trials), got "
                          f"{listed}")
    labels = [m.label for m in spec.models]
    if spec.baseline and spec.baseline not in labels:
        raise ConfigError(f"leaderboard {spec.source}: baseline '{spec.baseline}' is not a row label; labels: "
                          f"{labels}")
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
        jobs=resolve_jobs(data.get("jobs", "auto"), f"leaderboard {path}: jobs"),
        tune=_tune_request(data.get("tune"), f"tune in {path}", allow_false=False),
        source=path,
        baseline=str(data.get("baseline") or ""),
    )
    return validate(spec)


def quick_spec(models: list, dataset: str, seeds, settings: dict, tune_trials=None) -> LeaderboardSpec:
    """`--model=A,B,C --dataset=D --seeds=3 [--tune --trials=N] [--key=value...]`: every row gets the same settings
    (and, with tune_trials, the same tuning budget)."""
    tune = None if tune_trials is None else _tune_request({"trials": tune_trials}, "--trials", allow_false=False)
    return validate(LeaderboardSpec(dataset=dataset, models=[ModelEntry(m, m) for m in models],
                                    seeds=_seeds(seeds, "--seeds"), settings=dict(settings), tune=tune,
                                    jobs=default_workers()))
