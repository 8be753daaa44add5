"""Aggregation and significance for leaderboards.

Rows: mean and std over seeds of every test metric, timings, memory, parameters. The reference row is the best
collaborative-filtering baseline (a row that reads no item content) by mean *validation* score, never by test, or
the row the board file declares as `baseline` (a choice made before any run, e.g. a model's plain variant on a board
of its variants).
Each other row is compared with it by paired tests on the per-user test metric (each user's value averaged over
seeds; paired t-test and Wilcoxon signed-rank over users) and over seeds (paired t-test of per-seed means).

The Wilcoxon variant is scipy's zero_method="zsplit": under leave-one-out most users have identical per-user metrics
for two models (both miss the single test item), and zsplit keeps those zero differences, splitting their ranks
evenly between the positive and negative sums. scipy's default "wilcox" drops them (a test over the users where the
models differ only) and "pratt" ranks them but then drops them from the statistic; the p-values differ a lot.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy import stats as scipy_stats

#: scipy.stats.wilcoxon's zero_method for the per-user test (see the module docstring; the report states it).
WILCOXON_ZERO_METHOD = "zsplit"
SUMMARY_FIELDS = ("best_valid_score", "train_seconds", "test_seconds", "peak_memory_mb", "n_parameters",
                  "best_epoch")


def group_by_label(records, labels):
    grouped = OrderedDict((label, []) for label in labels)
    for record in records:
        grouped.setdefault(record["label"], []).append(record)
    return OrderedDict((k, sorted(v, key=lambda r: r["seed"])) for k, v in grouped.items() if v)


def summarize(runs) -> dict:
    """{"n": seeds, "test": {metric: (mean, std)}, field: (mean, std), "uses_content": bool, "valid_metric": the
    metric best_valid_score is of (None in records that predate it)}."""
    summary = {"n": len(runs), "uses_content": bool(runs[0].get("uses_content")), "test": {},
               "valid_metric": runs[0].get("valid_metric")}
    for metric in runs[0]["test"]:
        values = np.array([r["test"][metric] for r in runs], dtype=float)
        summary["test"][metric] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    for name in SUMMARY_FIELDS:
        values = np.array([r.get(name) if r.get(name) is not None else np.nan for r in runs], dtype=float)
        summary[name] = (float(np.nanmean(values)), float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0)
    return summary


def choose_baseline(summaries, declared: str = "") -> str | None:
    """`declared` (the board file's baseline, fixed before any run) when it has runs; else the label of the CF row
    with the best mean validation score (None if every row reads item content)."""
    if declared:
        return declared if declared in summaries else None
    candidates = [(s["best_valid_score"][0], label) for label, s in summaries.items() if not s["uses_content"]]
    return max(candidates)[1] if candidates else None


def per_user_means(runs, metric):
    """{user_id: mean over seeds of the per-user test metric}."""
    sums, counts = {}, {}
    for run in runs:
        per_user = run.get("test_per_user") or {}
        for user, value in zip(per_user.get("user_id", []), per_user.get(metric, [])):
            sums[user] = sums.get(user, 0.0) + value
            counts[user] = counts.get(user, 0) + 1
    return {u: sums[u] / counts[u] for u in sums}


def paired_tests(runs, baseline_runs, metric) -> dict:
    """p-values of `runs` vs `baseline_runs` on `metric`: over users (t-test, Wilcoxon) and over seeds (t-test)."""
    out = {"p_users_t": np.nan, "p_users_wilcoxon": np.nan, "p_seeds_t": np.nan, "n_users": 0}
    mine, theirs = per_user_means(runs, metric), per_user_means(baseline_runs, metric)
    users = sorted(set(mine) & set(theirs))
    if len(users) >= 2:
        a = np.array([mine[u] for u in users])
        b = np.array([theirs[u] for u in users])
        out["n_users"] = len(users)
        if np.any(a != b):
            out["p_users_t"] = float(scipy_stats.ttest_rel(a, b).pvalue)
            out["p_users_wilcoxon"] = float(scipy_stats.wilcoxon(a, b, zero_method=WILCOXON_ZERO_METHOD).pvalue)
        else:
            out["p_users_t"] = out["p_users_wilcoxon"] = 1.0
    seeds = sorted({r["seed"] for r in runs} & {r["seed"] for r in baseline_runs})
    if len(seeds) >= 2:
        a = np.array([next(r for r in runs if r["seed"] == s)["test"][metric] for s in seeds])
        b = np.array([next(r for r in baseline_runs if r["seed"] == s)["test"][metric] for s in seeds])
        out["p_seeds_t"] = float(scipy_stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    return out
