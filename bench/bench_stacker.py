"""LightGBM stacker vs its base models on ml-100k-mm (issue 8).

Protocol: the leaderboard's (properties/overall.yaml; the leaderboard's metrics). Per seed, one
`quick_start.run("LGBMStacker", ...)`: base models trained with that seed (or reused from the stacker cache in
--checkpoint-dir), the stacker fitted on validation targets (75% of validation users, early-stopped on the other
25%), test read once. Reported per seed and as mean +- std:

- test NDCG@10 and Recall@20 of the stacker and of the best single base model, chosen by validation NDCG@10 (the
  leaderboard's rule; the best by test is shown too);
- candidate recall (share of users whose target is in the pooled top-N: the stacker's ceiling), pool size;
- feature importance (gain, as a share of the total, mean over seeds);
- time: LightGBM fit + predict, and everything the stacker adds (scoring the base models on valid and test,
  candidates, features, fit, predict, metrics), each as a ratio to the slowest base model's training. Base models
  trained in this invocation give same-run ratios; cached ones carry the training time of their own run (the table
  says which).

Usage: .venv/bin/python bench/bench_stacker.py [--seeds 2020 2021 2022] [--data-path /path/to/dataset]
           [--checkpoint-dir bench/out/stacker-saved] [--out bench/out/stacker.json] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASE_MODELS = [
    "ImplicitALS",
    "BPR",
    {"name": "MMSASRec", "settings": {"train_mode": "all_positions"}},
    {"name": "MMSASRec", "label": "SASRec (ID only)", "settings": {"modalities": [], "train_mode": "all_positions"}},
    "Pop",
]


def run_seed(seed, args):
    from mmrecbole.config import parse_value
    from mmrecbole.leaderboard.spec import LEADERBOARD_METRICS
    from mmrecbole.quick_start import run

    settings = {"data_path": args.data_path, "checkpoint_dir": args.checkpoint_dir, "seed": seed,
                "metrics": list(LEADERBOARD_METRICS), "show_progress": False, "state": "INFO",
                "base_models": BASE_MODELS}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = parse_value(value)
    start = time.perf_counter()
    result = run("LGBMStacker", "ml-100k-mm", config_dict=settings, log_dir=args.log_dir, console_log=False)
    result["bench_wall_seconds"] = time.perf_counter() - start
    return result


def summarise(result):
    bases = result["base_models"]
    by_valid = max(bases, key=lambda b: b["valid"]["ndcg@10"])
    by_test = max(bases, key=lambda b: b["test"]["ndcg@10"])
    slowest = max(bases, key=lambda b: b["train_seconds"])
    timings = result["timings"]
    lgbm = timings["lightgbm_fit"] + timings["lightgbm_predict_test"]
    added = result["train_seconds"] + result["test_seconds"]
    return {
        "seed": result["seed"],
        "stacker": {m: result["test"][m] for m in ("ndcg@10", "recall@20")},
        "stacker_valid_heldout_ndcg@10": result["best_valid_score"],
        "best_by_valid": {"label": by_valid["label"], **{m: by_valid["test"][m] for m in ("ndcg@10", "recall@20")}},
        "best_by_test": {"label": by_test["label"], **{m: by_test["test"][m] for m in ("ndcg@10", "recall@20")}},
        "gain_ndcg@10": result["test"]["ndcg@10"] / by_valid["test"]["ndcg@10"] - 1.0,
        "gain_recall@20": result["test"]["recall@20"] / by_valid["test"]["recall@20"] - 1.0,
        "candidate_recall": result["candidate_recall"],
        "candidates_per_user": result["candidates_per_user"],
        "best_iteration": result["best_epoch"], "iterations_run": result["epochs_run"],
        "lightgbm_fit_predict_s": lgbm, "stacker_added_s": added,
        "slowest_base": {"label": slowest["label"], "train_s": slowest["train_seconds"], "cached": slowest["reused"]},
        "ratio_lightgbm": lgbm / slowest["train_seconds"], "ratio_added": added / slowest["train_seconds"],
        "bases": {b["label"]: {"valid_ndcg@10": b["valid"]["ndcg@10"], "ndcg@10": b["test"]["ndcg@10"],
                               "recall@20": b["test"]["recall@20"], "train_s": b["train_seconds"],
                               "cached": b["reused"]} for b in bases},
        "importance": result["feature_importance"],
    }


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def markdown(summaries):
    lines = ["| seed | stacker NDCG@10 | best single (by valid) | its NDCG@10 | gain | stacker Recall@20 | its Recall@20 "
             "| gain | cand. recall valid / test | cands/user | LightGBM fit+predict / slowest base train | "
             "stacker total / slowest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(
            f"| {s['seed']} | {s['stacker']['ndcg@10']:.4f} | {s['best_by_valid']['label']} | "
            f"{s['best_by_valid']['ndcg@10']:.4f} | {s['gain_ndcg@10']:+.1%} | {s['stacker']['recall@20']:.4f} | "
            f"{s['best_by_valid']['recall@20']:.4f} | {s['gain_recall@20']:+.1%} | "
            f"{s['candidate_recall']['valid']:.3f} / {s['candidate_recall']['test']:.3f} | "
            f"{s['candidates_per_user']['test']:.0f} | {s['lightgbm_fit_predict_s']:.1f} s / "
            f"{s['slowest_base']['train_s']:.0f} s ({s['slowest_base']['label']}) = {s['ratio_lightgbm']:.3f} | "
            f"{s['stacker_added_s']:.1f} s = {s['ratio_added']:.3f} |")
    lines.append("")
    lines.append(f"Mean ± std over {len(summaries)} seeds: stacker NDCG@10 "
                 f"{mean_std([s['stacker']['ndcg@10'] for s in summaries])}, best single "
                 f"{mean_std([s['best_by_valid']['ndcg@10'] for s in summaries])}, gain "
                 f"{np.mean([s['gain_ndcg@10'] for s in summaries]):+.1%}; Recall@20 "
                 f"{mean_std([s['stacker']['recall@20'] for s in summaries])} vs "
                 f"{mean_std([s['best_by_valid']['recall@20'] for s in summaries])}.")
    labels = list(summaries[0]["bases"])
    lines += ["", "| base model | valid NDCG@10 | test NDCG@10 | test Recall@20 | train s |", "|---|---|---|---|---|"]
    for label in labels:
        rows = [s["bases"][label] for s in summaries]
        lines.append(f"| {label} | {mean_std([r['valid_ndcg@10'] for r in rows])} | "
                     f"{mean_std([r['ndcg@10'] for r in rows])} | {mean_std([r['recall@20'] for r in rows])} | "
                     f"{np.mean([r['train_s'] for r in rows]):.0f}"
                     f"{' (cached)' if any(r['cached'] for r in rows) else ''} |")
    shares = {}
    for s in summaries:
        total = sum(s["importance"].values()) or 1.0
        for name, gain in s["importance"].items():
            shares.setdefault(name, []).append(gain / total)
    lines += ["", "| feature | gain share (mean over seeds) |", "|---|---|"]
    for name, values in sorted(shares.items(), key=lambda p: -np.mean(p[1])):
        lines.append(f"| {name} | {np.mean(values):.1%} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--data-path", default="dataset", help="parent folder of ml-100k-mm/ (with features/)")
    parser.add_argument("--checkpoint-dir", default="bench/out/stacker-saved")
    parser.add_argument("--log-dir", default="bench/out/stacker-log")
    parser.add_argument("--out", default="bench/out/stacker.json")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra settings (YAML values), e.g. candidates_per_model=100")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    results, summaries = [], []
    for seed in args.seeds:
        result = run_seed(seed, args)
        results.append(result)
        summaries.append(summarise(result))
        print(f"seed {seed}: stacker test ndcg@10 {result['test']['ndcg@10']:.4f} "
              f"(best single by valid: {summaries[-1]['best_by_valid']['label']} "
              f"{summaries[-1]['best_by_valid']['ndcg@10']:.4f}), {result['bench_wall_seconds']:.0f} s", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"summaries": summaries, "results": [{k: v for k, v in r.items() if k != "test_per_user"}
                                                       for r in results]}, f, indent=1)
    print(markdown(summaries))


if __name__ == "__main__":
    main()
