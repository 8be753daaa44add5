"""A board's tuned rows: one Optuna study per row, the same budget for each, before the rows' seeds run.

Each study runs in a child process (`python -m mmrecbole.leaderboard.job`, task "tune"), trains with the board's
first seed and selects on validation only (mmrecbole.tuning.tune); its chosen settings are added to the row's settings,
and the row then trains on every seed like any other. Studies live in one Optuna storage (default
`sqlite:///<cache_dir>/tuning/<dataset>.db`): an interrupted study resumes there. A finished study is also recorded
as a JSON file in `<cache_dir>/tuning/studies/`, keyed like a run (model, dataset, fixed settings, search space,
trials, code version), so a rerun of the board neither starts a child nor imports Optuna for it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from mmrecbole import contract, provenance
from mmrecbole.config import Config, settings_for
from mmrecbole.data.fileio import write_text_atomically
from mmrecbole.errors import ConfigError
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry, TuneRequest
from mmrecbole.tuning.space import load_search_space, searched_for, space_path

#: The search every tuned row gets (the same for all rows): written on the board.
SAMPLER_SEED = 0


def tuning_folder(spec: LeaderboardSpec) -> str:
    return os.path.join(spec.cache_dir, "tuning")


def board_storage(spec: LeaderboardSpec) -> str:
    if spec.storage:
        return spec.storage
    os.makedirs(tuning_folder(spec), exist_ok=True)
    return f"sqlite:///{os.path.join(tuning_folder(spec), spec.dataset + '.db')}"


class PlannedStudy:
    """One tuned row's study: what it fixes, what it searches, where its record goes."""

    def __init__(self, spec: LeaderboardSpec, entry: ModelEntry, request: TuneRequest):
        self.entry, self.request, self.dataset = entry, request, spec.dataset
        self.train_seed = spec.seeds[0]
        self.space_file = request.search_space or space_path(entry.name)
        space = load_search_space(entry.name, self.space_file)
        for where, settings in ((f"row {entry.label}'s settings", entry.settings),
                                ("the board's settings", settings_for(entry.name, spec.settings))):
            clash = sorted(set(space) & set(settings))
            if clash:
                raise ConfigError(f"leaderboard {spec.source}: {', '.join(clash)} set in {where} and searched by "
                                  f"{self.space_file} for the tuned row {entry.label}; drop one of the two")
        self.fixed = {k: v for k, v in spec.row_settings(entry, self.train_seed).items() if k != "show_progress"}
        self.config = Config(entry.name, spec.dataset, config_dict=self.fixed)  # fails fast on bad settings
        self.uses_content = contract.reads_item_content(self.config)
        self.modalities = tuple(self.config["modalities"]) if self.uses_content else ()
        self.searched = sorted(searched_for(space, self.config))
        self.code_version = provenance.code_version()
        with open(self.space_file, "rb") as handle:
            space_digest = hashlib.sha256(handle.read()).hexdigest()
        key = json.dumps([entry.name, spec.dataset, self.fixed, space_digest, request.trials, SAMPLER_SEED,
                          self.code_version], sort_keys=True, default=str)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:12]
        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in entry.label).strip("_")
        self.path = os.path.join(tuning_folder(spec), "studies", f"{slug}-{self.key}.json")

    def cached(self):
        """The finished study's record, or None (absent, unreadable, or of another study)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict) or record.get("key") != self.key:
            return None
        return record

    def request_for_child(self, spec: LeaderboardSpec, fresh: bool, threads) -> dict:
        return {"task": "tune", "model": self.entry.name, "dataset": spec.dataset,
                "settings": {**self.fixed, "state": "INFO"}, "trials": self.request.trials,
                "storage": board_storage(spec), "space_file": self.space_file, "sampler_seed": SAMPLER_SEED,
                "study_key": {"code_version": self.code_version}, "fresh": bool(fresh),
                "log_dir": os.path.join(spec.cache_dir, "logs", "tuning"), "threads": threads}

    def record(self, result: dict, commit: str) -> dict:
        """What the board keeps of a finished study (`result`: the child's TuneResult as a dict)."""
        keep = ("study_name", "storage", "valid_metric", "best_value", "best_params", "trials_complete",
                "trials_pruned", "trials_seconds")
        return {"key": self.key, "label": self.entry.label, "model": self.entry.name, "dataset": self.dataset,
                "trials": self.request.trials, "train_seed": self.train_seed, "sampler_seed": SAMPLER_SEED,
                "search_space": os.path.relpath(self.space_file), "searched": self.searched,
                "code_version": result.get("code_version") or self.code_version, "commit": commit,
                **{k: result[k] for k in keep}}

    def put(self, record: dict) -> None:
        write_text_atomically(self.path, json.dumps(record, indent=1))


def plan_studies(spec: LeaderboardSpec) -> list:
    requests = [(entry, spec.tune_request(entry)) for entry in spec.models]
    return [PlannedStudy(spec, entry, request) for entry, request in requests if request is not None]


def with_tuned_settings(spec: LeaderboardSpec, studies: dict) -> LeaderboardSpec:
    """The board whose tuned rows carry their chosen settings (`studies`: {label: record}); rows whose study did not
    finish are left out (the board lists them as missing)."""
    rows = []
    for entry in spec.models:
        if spec.tune_request(entry) is None:
            rows.append(entry)
        elif entry.label in studies:
            rows.append(dataclasses.replace(entry, settings={**entry.settings,
                                                             **studies[entry.label]["best_params"]}))
    return dataclasses.replace(spec, models=rows)


def untuned_rows(spec: LeaderboardSpec) -> dict:
    """{label: why it keeps its defaults} for a board with tuning; {} for a board without."""
    if spec.tune is None and not any(isinstance(e.tune, TuneRequest) for e in spec.models):
        return {}
    return {e.label: spec.untuned_reason(e) for e in spec.models if spec.tune_request(e) is None}
