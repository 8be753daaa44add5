"""A tuning study: Optuna's TPE sampler over a model's search space, each trial trained and early-stopped on the
validation split only (`quick_start.fit_on_validation`: the test split is never read), hopeless trials pruned on their
per-epoch validation curve (Optuna's MedianPruner), stored in an Optuna storage so that an interrupted study resumes
and several processes can share one.

`tune(model, dataset, trials, ...)` runs a study until it holds `trials` finished trials (complete or pruned) and
returns a `TuneResult`; `write_best(result, path)` writes the chosen settings as a property file that `--config_files`
or a leaderboard row can use.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from mmrecbole.errors import ConfigError
from mmrecbole.tuning.space import load_search_space, searched_for, space_path, suggest

#: Pruning waits for this many finished trials, and within a trial for this many validations, before it judges.
PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_STEPS = 2


@dataclass
class TuneResult:
    model: str
    dataset: str
    study_name: str
    storage: str
    valid_metric: str
    best_value: float
    best_params: Dict[str, Any]
    trials_complete: int
    trials_pruned: int
    search_seconds: float  # wall seconds of this call (0 when the study was already finished)
    trials_seconds: float = 0.0  # summed durations of the study's finished trials, whichever call ran them
    fixed: Dict[str, Any] = field(default_factory=dict)
    output_dir: str = ""  # <checkpoint_dir>/tuning: where the default storage and the chosen settings go


def default_storage(folder: str, dataset: str) -> str:
    """One SQLite file per dataset in `folder` (embedded: nothing to start)."""
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, dataset + '.db')}"


def study_name_for(model: str, dataset: str, fixed: Dict[str, Any], space_file: str) -> str:
    """Same model, dataset, fixed settings and search space -> same study (so a rerun resumes it)."""
    with open(space_file, "rb") as handle:
        space_bytes = handle.read()
    digest = hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode() + space_bytes).hexdigest()[:10]
    return f"{model}-{dataset}-{digest}"


def _create_study(optuna, attempts: int = 6, **kwargs):
    """optuna.create_study, retried: workers that start together on a new storage race to create its tables, and
    the loser's insert fails (sqlalchemy IntegrityError / OperationalError); once the tables exist it loads."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.create_study(**kwargs)
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _finished(study) -> tuple:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)


def _trials_seconds(study) -> float:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return float(sum(t.duration.total_seconds() for t in study.get_trials(deepcopy=False)
                     if t.state in done and t.duration is not None))


def tune(model: str, dataset: str, trials: int, config_file_list=None, cmd_dict=None, cmd_text=None,
         storage: Optional[str] = None, space_file: Optional[str] = None, seed: int = 0,
         on_trial: Optional[Callable[[dict], None]] = None, log_dir: str = "log",
         study_key: Optional[Dict[str, Any]] = None, fresh: bool = False) -> TuneResult:
    """Run (or resume) the study of `model` on `dataset` until it holds `trials` finished trials.

    The settings from `config_file_list` / `cmd_dict` are fixed for every trial; a searched setting may not be fixed
    too. `on_trial({'number', 'state', 'value', 'best', 'params', 'done', 'of'})` is called after each trial.
    `study_key`: more values that name the study (a leaderboard passes its code version: a study of other code is
    not resumed). `fresh`: delete the study of that name first and search again."""
    import optuna

    from mmrecbole.config import Config
    from mmrecbole.quick_start import fit_on_validation

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be an integer >= 1, got {trials!r}")
    space_file = space_file or space_path(model)
    space = load_search_space(model, space_file)
    fixed = dict(cmd_dict or {})
    clash = sorted(set(space) & set(fixed))
    if clash:
        raise ConfigError(f"{', '.join('--' + k for k in clash)}: searched by {space_file} and fixed on the command "
                          "line; drop the flag (or the key from the search space)")
    base = Config(model, dataset, config_file_list, None, fixed, cmd_text)
    space = searched_for(space, base)
    clash = sorted(k for k in space if k in base.external_config_dict)
    if clash:
        raise ConfigError(f"{', '.join(clash)}: searched by {space_file} and set in --config_files; drop one")
    output_dir = os.path.abspath(os.path.join(base["checkpoint_dir"], "tuning"))
    storage = storage or default_storage(output_dir, base["dataset"])
    name = study_name_for(model, dataset, {"config_files": list(config_file_list or []), **fixed,
                                           **({"study_key": study_key} if study_key else {})}, space_file)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if fresh and name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
    study = _create_study(
        optuna, study_name=name, storage=storage, load_if_exists=True,
        direction="maximize" if base["valid_metric_bigger"] else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=PRUNER_WARMUP_STEPS))

    if not study.get_trials(deepcopy=False):
        # Trial 0 is the row's untuned setting (its defaults and fixed settings): the chosen setting is then never
        # worse on validation than the defaults, whatever the sampler draws (a 20-trial study once chose a setting
        # below them). skip_if_exists: workers that start together enqueue it once.
        study.enqueue_trial({k: base[k] for k in space}, skip_if_exists=True)

    def objective(trial):
        settings = suggest(trial, space)
        config = Config(model, dataset, config_file_list, settings, fixed, cmd_text)

        def report(epoch, score):  # the curve stays in the study: trial.intermediate_values
            trial.report(float(score), int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return fit_on_validation(config, on_validation=report, log_dir=log_dir)[0]

    def after_trial(study_, trial):
        if on_trial is not None:
            complete, pruned = _finished(study_)
            on_trial({"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                      "best": study_.best_value if complete else None, "params": trial.params,
                      "done": complete + pruned, "of": trials})

    start = time.perf_counter()
    remaining = trials - sum(_finished(study))
    if remaining > 0:
        # MaxTrialsCallback counts the study's trials in the storage: with several workers on one study, each stops
        # once the study holds `trials` finished ones, whoever ran them.
        stop = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,
                                                              optuna.trial.TrialState.PRUNED))
        study.optimize(objective, n_trials=remaining, callbacks=[after_trial, stop])
    complete, pruned = _finished(study)
    if complete == 0:
        raise ConfigError(f"study {name}: no trial completed ({pruned} pruned); raise --trials")
    return TuneResult(model=model, dataset=dataset, study_name=name, storage=storage,
                      valid_metric=str(base["valid_metric"]).lower(), best_value=float(study.best_value),
                      best_params=dict(study.best_params), trials_complete=complete, trials_pruned=pruned,
                      search_seconds=time.perf_counter() - start, trials_seconds=_trials_seconds(study), fixed=fixed,
                      output_dir=output_dir)


def write_best(result: TuneResult, path: str) -> str:
    """The chosen settings as a property file (atomically), with where they came from in its comments."""
    from mmrecbole.data.fileio import write_text_atomically

    lines = [f"# Tuned {result.model} on {result.dataset}: best of {result.trials_complete} complete trials "
             f"({result.trials_pruned} pruned), validation {result.valid_metric} {result.best_value:.4f}.",
             f"# Optuna study {result.study_name} in {result.storage}. Use: --config_files {path}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in sorted(result.best_params.items())]
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
