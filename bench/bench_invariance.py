"""Proof that a refactoring changed no result: every model family's metrics on planted data, to 6 decimals.

    python bench/bench_invariance.py record OUT.json     # run every case below, write their metrics
    python bench/bench_invariance.py compare A.json B.json  # exit 1 and list the differences when any
    python bench/bench_invariance.py compare-runs OLD_RUNS_DIR NEW_RUNS_DIR  # leaderboard run records, by label+seed

Each case is one `quick_start.run` with a fixed seed on the planted fixtures of tests/ (ring walks, and the planted
multimodal data with text/image feature tables), covering every trainer path: gradient (RecBole's trainer, ours),
one-pass (FitOnceTrainer, implicit), sequential prefix and all_positions windows, content models, cold-start items,
the LGBMStacker pipeline. Real-data runs are compared through leaderboard run records (`compare-runs`: every run of
the new folder against the run of the same label and seed in the old one: validation and test metrics and every
user's test metrics, exactly).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmrecbole.quick_start import run  # noqa: E402
from tests.planted import FAST, write_ring_dataset  # noqa: E402
from tests.planted_mm import write_planted_mm  # noqa: E402

SEQ = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005}
GRU = {"embedding_size": 32, "hidden_size": 32, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005}
GENERAL = {"embedding_size": 32, "learning_rate": 0.01}
EVAL = {**FAST, "topk": [5, 10], "metrics": ["Hit", "NDCG", "Recall", "MRR"], "valid_metric": "NDCG@10",
        "epochs": 6, "seed": 7, "metric_decimal_place": 6}
WINDOWS = {"train_mode": "all_positions", "position_encoding": "relative", "window_context": 4}

#: (case name, model, dataset: "ring" or "mm", settings)
CASES = [
    ("Pop", "Pop", "ring", {}),
    ("ItemKNN", "ItemKNN", "ring", {}),
    ("BPR", "BPR", "ring", GENERAL),
    ("LightGCN", "LightGCN", "ring", GENERAL),
    ("SASRec", "SASRec", "ring", SEQ),
    ("GRU4Rec", "GRU4Rec", "ring", GRU),
    ("ImplicitALS", "ImplicitALS", "ring", {"factors": 8, "iterations": 5}),
    ("ImplicitBPR", "ImplicitBPR", "ring", {"factors": 8, "iterations": 20}),
    ("ImplicitItemKNN", "ImplicitItemKNN", "ring", {}),
    ("MMSASRec prefix", "MMSASRec", "mm", {**SEQ, "loss_weights": {"rec": 1.0, "align": 0.1, "rating": 0.01}}),
    ("MMSASRec all_positions", "MMSASRec", "mm", {**SEQ, **WINDOWS}),
    ("MMSASRec ID only", "MMSASRec", "mm", {**SEQ, **WINDOWS, "modalities": []}),
    ("MMGRU4Rec", "MMGRU4Rec", "mm", {**GRU, "train_mode": "all_positions", "fusion": "gate",
                                      "adapter": "whitening"}),
    ("VBPR", "VBPR", "mm", GENERAL),
    ("FREEDOM", "FREEDOM", "mm", GENERAL),
    ("MMSASRec cold-start", "MMSASRec", "mm", {**SEQ, **WINDOWS, "cold_start_item_ratio": 0.2}),
    ("VBPR cold-start", "VBPR", "mm", {**GENERAL, "cold_start_item_ratio": 0.2}),
    ("LGBMStacker", "LGBMStacker", "mm", {
        "epochs": 2, "candidates_per_model": 10, "early_stopping_rounds": 10,
        "lgbm_params": {"n_estimators": 30, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 5},
        "base_models": [{"name": "ImplicitALS", "settings": {"factors": 8, "iterations": 5}},
                        {"name": "MMSASRec", "label": "SASRec (ID only)",
                         "settings": {"modalities": [], "train_mode": "all_positions", "hidden_size": 16,
                                      "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 5}}]}),
]


def _rounded(metrics: dict) -> dict:
    return {k: round(float(v), 6) for k, v in sorted(metrics.items())}


def record(out_path: str) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as work:
        ring = write_ring_dataset(os.path.join(work, "ring"))
        mm_root, files, _ = write_planted_mm(os.path.join(work, "mm"))
        for case, model, data, settings in CASES:
            base = {**EVAL, "checkpoint_dir": os.path.join(work, "saved", case.replace(" ", "_"))}
            if data == "ring":
                dataset, base = "planted", {**base, "data_path": ring}
            else:
                dataset, base = "plantedmm", {**base, "data_path": mm_root, "mm_feature_files": files}
            result = run(model, dataset, config_dict={**base, **settings}, console_log=False,
                         log_dir=os.path.join(work, "log"))
            results[case] = {"valid": _rounded(result["valid"]), "test": _rounded(result["test"]),
                             "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
                             "n_parameters": result["n_parameters"],
                             "test_per_user_sha1": hashlib.sha1(json.dumps(result["test_per_user"], sort_keys=True)
                                                                .encode()).hexdigest()}
            print(f"{case:26s} test ndcg@10 {results[case]['test']['ndcg@10']:.6f}", flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)


def compare(a_path: str, b_path: str) -> int:
    with open(a_path, encoding="utf-8") as f:
        a = json.load(f)
    with open(b_path, encoding="utf-8") as f:
        b = json.load(f)
    differences = [case for case in sorted(set(a) | set(b)) if a.get(case) != b.get(case)]
    for case in differences:
        print(f"DIFFERS {case}:\n  {a.get(case)}\n  {b.get(case)}")
    print(f"{len(set(a) & set(b)) - len([c for c in differences if c in a and c in b])} of {len(set(a) | set(b))} "
          "cases identical")
    return 1 if differences else 0


def _records(folder: str) -> dict:
    records = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                record = json.load(f)
            records[(record["label"], record["seed"])] = record
    return records


def compare_runs(old_dir: str, new_dir: str) -> int:
    old, new = _records(old_dir), _records(new_dir)
    same, differing = 0, []
    for key, record in sorted(new.items()):
        before = old.get(key)
        fields = ("valid", "test", "test_per_user", "best_epoch", "epochs_run")
        if before is None:
            differing.append(f"{key}: no old run")
        elif any(record.get(f) != before.get(f) for f in fields):
            changed = [f for f in fields if record.get(f) != before.get(f)]
            differing.append(f"{key}: {changed} differ (test ndcg@10 {before['test'].get('ndcg@10')} -> "
                             f"{record['test'].get('ndcg@10')})")
        else:
            same += 1
            print(f"identical {key[0]} seed {key[1]}: test ndcg@10 {record['test'].get('ndcg@10')}, "
                  f"{len(record['test_per_user']['user_id'])} users' metrics; code {before['code_version']} -> "
                  f"{record['code_version']}")
    for line in differing:
        print("DIFFERS " + line)
    print(f"{same} of {len(new)} runs identical")
    return 1 if differing else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare-runs":
        sys.exit(compare_runs(sys.argv[2], sys.argv[3]))
    else:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
