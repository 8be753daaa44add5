"""The LGBMStacker run, end to end (registered in mmrecbole.registry.PIPELINES):

1. base models: trained with quick_start.run, or reused from the run cache (`run_cache_dir`, mmrecbole.runs);
2. valid phase: every base model scores the validation users (history = training split) through its own trainer;
   candidates = union of their top-N; features per (user, candidate); labels = the validation item;
3. LightGBM LambdaRank fitted on a share of the validation users, early-stopped on the others (held-out fold);
4. test phase, once: the base models score the test users (history = training + validation, as in every other
   row), the same features, the stacker ranks each user's candidates, RecBole's metrics.

Nothing from the test phase exists before step 3 ends; `fit_on_validation` only ever receives the valid frame.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from mmrecbole import checkpoint, registry
from mmrecbole.data.build import ensure_dataset_files
from mmrecbole.features import aligned_features
from mmrecbole.ensemble import base_models, candidates, evaluation, features, phases, serving_reference
from mmrecbole.ensemble.settings import STACKER_NAME, resolve
from mmrecbole.ensemble.stacker import LGBMStacker
from mmrecbole.errors import CheckpointError, DatasetError
from mmrecbole.log import log_to_file, new_log_path
from mmrecbole.progress import report as report_progress
from mmrecbole.runs import RunResult

logger = logging.getLogger(__name__)


def plan(dataset, config_dict) -> registry.PipelinePlan:
    """Check the settings (ConfigError naming the key) and hash them with the base models' config hashes."""
    settings = resolve(dataset, config_dict=config_dict)
    return registry.PipelinePlan(settings.config_hash, settings.uses_content)


def _content_tables(settings, reference) -> dict:
    """modality -> (unit item vectors, has-modality mask) for the available content_modalities."""
    tables = {}
    for modality in settings.available_modalities():
        matrix, mask = aligned_features(settings.protocol, reference.dataset, modality)
        has = mask.numpy().astype(bool)
        tables[modality] = (features.unit_rows(matrix.numpy(), has), has)
    skipped = [m for m in settings["content_modalities"] if m not in tables]
    if skipped:
        logger.info(f"content similarity: no feature table for {skipped} (mm_feature_files or "
                    f"<data_path>/{settings.dataset}/features/): skipped")
    return tables


def _load_scorers(settings, runs, reference, retrain):
    scorers = []
    for index, run in enumerate(runs):
        try:
            loaded = base_models.load_base_model(run, settings.dataset)
        except CheckpointError as exc:
            if not run.reused:
                raise
            logger.warning(f"cached base model {run.label} no longer loads ({exc}): retraining it")
            run = runs[index] = retrain(settings.base_models[index])
            loaded = base_models.load_base_model(run, settings.dataset)
        if checkpoint.dataset_fingerprint(loaded.dataset) != reference.fingerprint:
            raise DatasetError(f"base model {run.label} was built on other user/item ids than the protocol's split "
                               f"({checkpoint.dataset_fingerprint(loaded.dataset)} vs {reference.fingerprint})")
        scorers.append(candidates.BaseScorer(run.label, loaded))
    return scorers


def phase_frame(phase, scorers, settings, reference, content) -> features.FeatureFrame:
    """Candidates and features of one phase (scores read in two streaming passes, see candidates.py)."""
    n = settings["candidates_per_model"]
    proposals = {s.label: candidates.top_n(s, phase, n) for s in scorers}
    pool = candidates.pool_candidates(phase, proposals)
    model_scores, masked = {}, np.zeros(len(pool.items), dtype=bool)
    for scorer in scorers:
        scores, ranks, seen = candidates.scores_at_candidates(scorer, pool, reference.n_items)
        model_scores[scorer.label] = (scores, ranks)
        masked |= seen
    if masked.any():
        # An item one model masks as seen and another proposes (sequential models see only their last
        # MAX_ITEM_LIST_LENGTH items): the user has seen it, so it is not a candidate.
        keep = ~masked
        pool = pool.keep(keep)
        model_scores = {label: (s[keep], r[keep]) for label, (s, r) in model_scores.items()}
    prefixes = {spec.label: spec.feature_prefix for spec in settings.base_models}
    return features.build_features(pool, model_scores, prefixes, reference, content,
                                   settings["content_recent_items"], settings["popularity_windows"])


def split_users(n_users: int, held_out_fraction: float, seed: int):
    """(fit user indices, held-out user indices), a seeded random split."""
    order = np.random.default_rng(seed).permutation(n_users)
    n_held = min(max(1, int(round(held_out_fraction * n_users))), n_users - 1)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _rows_of_users(pool, user_indices):
    mask = np.zeros(len(pool.phase.users), dtype=bool)
    mask[user_indices] = True
    return np.repeat(mask, pool.group_sizes)


def fit_on_validation(frame, settings):
    """The stacker fitted on the valid phase's frame: labels = candidate is the user's validation item; a seeded
    `valid_user_fraction` of the users is held out for early stopping. Returns (stacker, held-out user indices)."""
    if frame.pool.phase.name != "valid":
        raise ValueError(f"the stacker is fitted on the valid phase only, got {frame.pool.phase.name!r}")
    pool = frame.pool
    relevance = pool.relevance()
    fit_users, held_users = split_users(len(pool.phase.users), settings["valid_user_fraction"], settings.seed)
    fit_rows, held_rows = _rows_of_users(pool, fit_users), _rows_of_users(pool, held_users)
    sizes = pool.group_sizes
    stacker = LGBMStacker(settings["lgbm_params"], settings["early_stopping_rounds"],
                          eval_at=_cutoff(settings.protocol["valid_metric"], settings.max_topk), seed=settings.seed,
                          backend=settings["stacker_backend"], dask_scheduler=settings["dask_scheduler"],
                          dask_workers=settings["dask_workers"])
    stacker.fit(frame.matrix[fit_rows], relevance[fit_rows], sizes[fit_users], frame.names,
                eval_set=(frame.matrix[held_rows], relevance[held_rows], sizes[held_users]))
    return stacker, held_users


def _cutoff(valid_metric: str, default: int) -> int:
    _, _, k = str(valid_metric).partition("@")
    return int(k) if k.isdigit() else default


def _stacker_folder(checkpoint_dir, dataset):
    stamp = time.strftime("%b-%d-%Y_%H-%M-%S")
    base = os.path.join(checkpoint_dir, f"{STACKER_NAME}-{dataset}-{stamp}-{os.getpid()}")
    folder, suffix = base, 1
    while os.path.exists(folder):
        suffix += 1
        folder = f"{base}-{suffix}"
    return folder


def run(dataset, config_file_list=None, config_dict=None, cmd_dict=None, saved=True, show_progress=None,
        log_dir="log", console_log=True, cmd_text=None) -> dict:
    """Train (or reuse) the base models, fit the stacker on validation, evaluate on test once. Returns
    quick_start.run's keys plus candidate_recall, feature_importance, base_models and timings."""
    settings = resolve(dataset, config_file_list, config_dict, cmd_dict, cmd_text)
    protocol = settings.protocol
    ensure_dataset_files(protocol)
    log_file = new_log_path(log_dir, STACKER_NAME, dataset)
    report_progress("log", model=STACKER_NAME, path=os.path.abspath(log_file))
    progress = protocol["show_progress"] if show_progress is None else show_progress
    checkpoint_dir = protocol["checkpoint_dir"]
    cache = base_models.run_cache(protocol)

    def attach_log():  # every base run switches logging to its own file
        log_to_file(log_file, protocol["state"], console_log)

    def train(spec, retrain=False):
        result = base_models.ensure_base_run(spec, dataset, settings.seed, cache, progress, log_dir, console_log,
                                             retrain=retrain)
        attach_log()
        return result

    attach_log()
    logger.info(f"{STACKER_NAME} on {dataset} (seed {settings.seed}, config {settings.config_hash}): base models "
                + ", ".join(f"{s.label} [{s.config_hash}]" for s in settings.base_models))
    runs = [train(spec) for spec in settings.base_models]

    start = time.perf_counter()
    reference = phases.load_reference(protocol)
    scorers = _load_scorers(settings, runs, reference, lambda spec: train(spec, retrain=True))
    content = _content_tables(settings, reference)
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    valid_frame = phase_frame(reference.phases["valid"], scorers, settings, reference, content)
    valid_features_seconds = time.perf_counter() - start
    stacker, held_users = fit_on_validation(valid_frame, settings)
    valid_scores = stacker.predict(valid_frame.matrix)
    valid_metrics, _ = evaluation.evaluate_rankings(protocol, valid_frame.pool, valid_scores, reference, held_users)
    train_seconds = time.perf_counter() - start
    valid_recall = valid_frame.pool.recall()
    importance = stacker.feature_importance()
    logger.info(f"valid: {len(valid_frame.pool.items)} candidates for {len(reference.phases['valid'])} users "
                f"(candidate recall {valid_recall:.4f}); stacker best iteration {stacker.best_iteration} of "
                f"{stacker.iterations_run}, held-out {valid_metrics}")
    logger.info("feature importance (gain): " + ", ".join(f"{k} {v:.1f}" for k, v in importance.items()))

    # -- test: read once, after the stacker is final ---------------------------------------------------------------
    start = time.perf_counter()
    test_frame = phase_frame(reference.phases["test"], scorers, settings, reference, content)
    test_features_seconds = time.perf_counter() - start
    predict_start = time.perf_counter()
    test_scores = stacker.predict(test_frame.matrix)
    predict_seconds = time.perf_counter() - predict_start
    test_metrics, per_user = evaluation.evaluate_rankings(protocol, test_frame.pool, test_scores, reference)
    test_seconds = time.perf_counter() - start
    test_recall = test_frame.pool.recall()
    logger.info(f"test: candidate recall {test_recall:.4f}; {test_metrics}")
    del scorers

    valid_metric = protocol["valid_metric"].lower()
    base_summary = [{"label": r.label, "model": r.name, "config_hash": r.config_hash, "checkpoint": r.checkpoint,
                     "reused": r.reused, **r.result} for r in runs]
    folder = None
    if saved:
        folder = stacker.save(_stacker_folder(checkpoint_dir, dataset), extra={
            "dataset": dataset, "config_hash": settings.config_hash, "settings": settings.values,
            "shared_settings": settings.shared, "content_modalities_used": list(content),
            "base_models": [{k: b[k] for k in ("label", "model", "config_hash", "checkpoint")}
                            for b in base_summary]})
        if protocol["save_bundle"]:
            serving_reference.write(folder, reference, content, [r.checkpoint for r in runs])
        logger.info(f"stacker saved to {folder}")
    users = reference.phases["test"].users[per_user.pop("user_index")]
    tokens = reference.dataset.field2id_token[reference.dataset.uid_field]
    history = [(int(i), float(v), float(t)) for i, v, t in stacker.history]
    return RunResult(
        model=STACKER_NAME,
        dataset=dataset,
        seed=settings.seed,
        valid_metric=valid_metric,
        best_valid_score=float(valid_metrics[valid_metric]),
        best_epoch=stacker.best_iteration,
        epochs_run=stacker.iterations_run,
        epochs_budget=int(stacker.params.get("n_estimators", 100)),
        progress_unit="boosting rounds",
        stopped_early=stacker.iterations_run < int(stacker.params.get("n_estimators", 100)),
        fitted_once=False,
        valid=valid_metrics,
        test=test_metrics,
        valid_history=history,
        seconds_to_best=next((t for i, _, t in history if i == stacker.best_iteration), None),
        train_seconds=train_seconds,
        test_seconds=test_seconds,
        n_parameters=stacker.n_leaves(),
        checkpoint=folder,
        log_file=log_file,
        test_per_user={"user_id": [str(t) for t in tokens[users]],
                       **{k: [round(float(x), 6) for x in v] for k, v in per_user.items()}},
        extra={
            "candidate_recall": {"valid": valid_recall, "test": test_recall},
            "candidates_per_user": {"valid": float(np.mean(valid_frame.pool.group_sizes)),
                                    "test": float(np.mean(test_frame.pool.group_sizes))},
            "feature_importance": importance,
            "content_modalities_used": list(content),
            "base_models": base_summary,
            "timings": {"load_base_models_and_data": load_seconds,
                        "valid_candidates_features": valid_features_seconds, "lightgbm_fit": stacker.fit_seconds,
                        "test_candidates_features": test_features_seconds, "lightgbm_predict_test": predict_seconds},
            "notes": [f"candidate recall: valid {valid_recall:.4f}, test {test_recall:.4f} (the most Hit@k can "
                      "reach)",
                      "feature importance (gain): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in list(importance.items())[:8]),
                      "base models: " + ", ".join(f"{b['label']} ({'cached' if b['reused'] else 'trained'}, test "
                                                  f"{valid_metric} {b['test'].get(valid_metric, float('nan')):.4f})"
                                                  for b in base_summary)],
        },
    ).to_dict()
