"""SASRec on ml-100k, same settings, back to back: stock RecBole vs our CLI path (issue 2).

Variants, each in a fresh subprocess (so one's import side effects cannot leak into another):
  recbole        RecBole's own pipeline (Config, create_dataset, data_preparation, Trainer.fit) as run_recbole
                 does it; sine.py leaves autograd anomaly detection ON
  recbole-noanom the same with anomaly detection switched off after the model import
  mmrecbole      mmrecbole.quick_start.run (registry, strict config, safe checkpoints, anomaly off)

Stock RecBole cannot reload its own best checkpoint under torch >= 2.6 (weights_only), so it runs with
saved=False and tests the last epoch; ours saves and tests the best epoch (the same epoch when validation
improves every epoch, as it does in the first epochs). Ours runs with mask_seen_items=False so both rank the same
candidates (RecBole does not mask seen items for sequential models).

Usage: .venv/bin/python bench/bench_foundation.py [--epochs 2] [--out bench/out/foundation.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "epochs": 2,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Recall", "NDCG", "MRR", "Hit"],
    "topk": [10, 20],
    "valid_metric": "NDCG@10",
    "train_neg_sample_args": None,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "show_progress": False,
    "stopping_step": 10,
    "seed": 2020,
}

CHILD = r'''
import json, sys, time
variant, settings = sys.argv[1], json.loads(sys.argv[2])
sys.argv = sys.argv[:1]  # RecBole's Config reads sys.argv
import torch
torch.set_num_threads(2)
if variant.startswith("recbole"):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed
    model_class = get_model("SASRec")
    if variant == "recbole-noanom":
        torch.autograd.set_detect_anomaly(False)
    config = Config(model="SASRec", dataset="ml-100k", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    anomaly = torch.is_anomaly_enabled()
    start = time.perf_counter()
    trainer.fit(train, valid, saved=False, show_progress=False)
    fit = time.perf_counter() - start
    result = trainer.evaluate(test, load_best_model=False)
    out = {"fit_seconds": fit, "epochs": config["epochs"], "test": {k: float(v) for k, v in result.items()},
           "anomaly_detection": anomaly}
else:
    from mmrecbole.quick_start import run
    r = run("SASRec", "ml-100k", config_dict={**settings, "mask_seen_items": False}, console_log=False)
    out = {"fit_seconds": r["train_seconds"], "epochs": r["epochs_run"], "test": r["test"],
           "anomaly_detection": torch.is_anomaly_enabled(), "best_epoch": r["best_epoch"]}
print("RESULT " + json.dumps(out))
'''


def run_variant(variant, settings, workdir):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, variant, json.dumps(settings)], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    out["wall_seconds"] = time.perf_counter() - start
    out["seconds_per_epoch"] = out["fit_seconds"] / out["epochs"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="bench/out/foundation.json")
    args = parser.parse_args()
    settings = {**SETTINGS, "epochs": args.epochs}
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = project + os.pathsep + os.environ.get("PYTHONPATH", "")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for variant in ("recbole", "recbole-noanom", "mmrecbole"):
            results[variant] = run_variant(variant, settings, workdir)
            r = results[variant]
            print(f"{variant:15s} {r['seconds_per_epoch']:7.1f} s/epoch (train+valid)  anomaly={r['anomaly_detection']}"
                  f"  test ndcg@10={r['test']['ndcg@10']:.4f} recall@10={r['test']['recall@10']:.4f}", flush=True)
    base = results["recbole"]["seconds_per_epoch"]
    print("\nratios of seconds per epoch (lower is faster):")
    for variant, r in results.items():
        print(f"  {variant:15s} {r['seconds_per_epoch'] / base:.2f}x of stock RecBole")
    same = all(results[v]["test"] == results["recbole"]["test"] for v in results)
    print(f"test metrics identical across variants: {same}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"settings": settings, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
