"""implicit's ALS / BPR / LMF / item-kNN vs RecBole's BPR, LightGCN, ItemKNN on ml-100k (issue 5).

Protocol: ours (properties/overall.yaml): leave-one-out by time, full ranking over all items, seen items masked,
model selection on validation NDCG@10; each model with its properties/model/<Model>.yaml defaults. Reported: test
NDCG@10 and Recall@20, and fit seconds = trainer.fit wall time (fitting + validation evaluation; for RecBole's models
every epoch until early stopping), mean +- std over seeds.

Wrapper overhead (implicit models): in the same process right after each of our runs, the same model is fitted with
bare `implicit` on the same training matrix and evaluated with implicit's `recommend(...,
filter_already_liked_items=True)` + numpy metrics on the same split; ratio = ours (trainer.fit + test evaluate, incl.
checkpoint save and reload) / bare (CSR build + fit + validation and test rankings + metrics). Dataset loading and
splitting are left out of both (shared). The bare metrics are compared with ours too (parity on real data; ours are
rounded to RecBole's 4 decimals, so gaps up to 5e-5 are rounding).

RecBole's full-ranking loader packs eval_batch_size // n_items users per batch: with the default 4096 that is 2 users
on ml-100k, and its per-batch bookkeeping dominates the evaluation of cheap models; `--eval-batch-size` shows the
overhead without it.

Usage: .venv/bin/python bench/bench_implicit.py [--seeds 2020 2021 2022] [--models ...] [--epochs N]
           [--eval-batch-size N] [--torch-threads 1] [--out bench/out/implicit.json] [--results bench/RESULTS.md]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMPLICIT_MODELS = ["ImplicitALS", "ImplicitBPR", "ImplicitLMF", "ImplicitItemKNN"]
RECBOLE_MODELS = ["BPR", "LightGCN", "ItemKNN"]
GRADIENT_MODELS = {"BPR", "LightGCN"}
KS = (10, 20)


# -- bare implicit ------------------------------------------------------------------------------------------------
def bare_estimator(config):
    """The implicit estimator our wrapper builds for `config`, constructed directly from implicit."""
    import implicit.cpu.als
    import implicit.cpu.bpr
    import implicit.cpu.lmf
    from implicit import nearest_neighbours

    name, seed = config["model"], config["seed"]
    if name == "ImplicitALS":
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=config["factors"], regularization=config["regularization"], alpha=1.0,
            iterations=config["iterations"], random_state=seed)
    if name == "ImplicitBPR":
        return implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=config["factors"], learning_rate=config["learning_rate"], regularization=config["regularization"],
            iterations=config["iterations"], verify_negative_samples=config["verify_negative_samples"],
            num_threads=1 if config["reproducibility"] else 0, random_state=seed)
    if name == "ImplicitLMF":
        return implicit.cpu.lmf.LogisticMatrixFactorization(
            factors=config["factors"], learning_rate=config["learning_rate"], regularization=config["regularization"],
            iterations=config["iterations"], neg_prop=config["neg_prop"], random_state=seed)
    kinds = {"cosine": nearest_neighbours.CosineRecommender, "tfidf": nearest_neighbours.TFIDFRecommender}
    if config["knn_similarity"] == "bm25":
        return nearest_neighbours.BM25Recommender(K=config["k"], K1=config["bm25_K1"], B=config["bm25_B"])
    return kinds[config["knn_similarity"]](K=config["k"])


def bare_training_matrix(config, counts):
    """The documented confidence: ALS 1 + alpha * r, LMF alpha * r, BPR and kNN the counts (confidence: count)."""
    matrix = counts.astype(np.float32)
    if config["model"] == "ImplicitALS":
        matrix.data = 1.0 + config["alpha"] * matrix.data
    elif config["model"] == "ImplicitLMF":
        matrix.data = config["alpha"] * matrix.data
    return matrix


def numpy_metrics(recommended, targets):
    """Recall/NDCG/MRR/Hit at KS from top-max(KS) lists, one held-out item per user (leave-one-out)."""
    hits = recommended == targets[:, None]
    out = {}
    for k in KS:
        top = hits[:, :k]
        out[f"recall@{k}"] = float(top.any(axis=1).mean())
        out[f"ndcg@{k}"] = float((top / np.log2(np.arange(2, k + 2))).sum(axis=1).mean())
        out[f"mrr@{k}"] = float((top / np.arange(1, k + 1)).sum(axis=1).mean())
        out[f"hit@{k}"] = out[f"recall@{k}"]
    return out


def bare_run(config):
    """(seconds for fit + validation + test evaluation, {valid: metrics, test: metrics}) with bare implicit.

    As in our path, a user is known by their training row (item-kNN scores with it; implicit's `recommend` uses the
    row it is given both to score and to filter), and the test ranking also leaves out the validation item: the test
    list is asked one item longer and the user's validation item dropped from it.
    """
    from threadpoolctl import threadpool_limits

    from mmrecbole.compat import dataset_of
    from mmrecbole.data.build import build_dataloaders, create_dataset

    train, valid, test = (dataset_of(loader) for loader in build_dataloaders(config, create_dataset(config)))

    def targets(split):
        return split.inter_feat[split.uid_field].numpy(), split.inter_feat[split.iid_field].numpy()

    valid_item_of = np.zeros(train.user_num, dtype=np.int64)
    valid_users, valid_items = targets(valid)
    valid_item_of[valid_users] = valid_items  # leave-one-out: one validation item per user

    start = time.perf_counter()
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # implicit sees the real users x items only (RecBole's padding row/column 0 dropped): its row n is
        # RecBole's id n + 1, as in our wrappers.
        counts = train.inter_matrix(form="csr")[1:, 1:].tocsr()
        estimator = bare_estimator(config)
        estimator.fit(bare_training_matrix(config, counts), show_progress=False)
        metrics = {}
        for phase, split in [("valid", valid), ("test", test)]:
            users, items = targets(split)
            extra = 1 if phase == "test" else 0
            recommended, _ = estimator.recommend(users - 1, counts[users - 1], N=max(KS) + extra,
                                                 filter_already_liked_items=True)
            recommended = recommended + 1
            if extra:
                recommended = np.stack([row[row != valid_item_of[user]][:max(KS)]
                                        for row, user in zip(recommended, users)])
            metrics[phase] = numpy_metrics(recommended, items)
    return time.perf_counter() - start, metrics


# -- one benchmark cell -------------------------------------------------------------------------------------------
def run_cell(model, seed, epochs, eval_batch_size, workdir):
    from mmrecbole.config import Config
    from mmrecbole.quick_start import run

    settings = {"seed": seed, "show_progress": False, "state": "WARNING"}
    if eval_batch_size:
        settings["eval_batch_size"] = eval_batch_size
    if epochs and model in GRADIENT_MODELS:
        settings["epochs"] = epochs
    cwd = os.getcwd()
    os.chdir(workdir)  # saved/ and log/ of the benchmark runs stay out of the checkout
    try:
        result = run(model, "ml-100k", config_dict=settings, console_log=False)
        cell = {
            "model": model, "seed": seed, "ndcg@10": result["test"]["ndcg@10"],
            "recall@20": result["test"]["recall@20"], "fit_seconds": result["train_seconds"],
            "test_seconds": result["test_seconds"], "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"], "hit_epoch_budget": bool(epochs) and not result["stopped_early"],
        }
        if model in IMPLICIT_MODELS:
            bare_seconds, bare_metrics = bare_run(Config(model, "ml-100k", config_dict=settings))
            ours = result["train_seconds"] + result["test_seconds"]
            cell.update(ours_seconds=ours, bare_seconds=bare_seconds, overhead=ours / bare_seconds,
                        max_metric_gap=max(abs(result[p][m] - bare_metrics[p][m])
                                           for p in ("valid", "test") for m in bare_metrics[p]))
    finally:
        os.chdir(cwd)
    return cell


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def seconds(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def tables(cells, models):
    rows = ["| model | NDCG@10 (test) | Recall@20 (test) | fit s (mean ± std) | epochs run |",
            "|---|---|---|---|---|"]
    for model in models:
        mine = [c for c in cells if c["model"] == model]
        epochs = "1 fit" if model in IMPLICIT_MODELS else ", ".join(str(c["epochs_run"]) for c in mine)
        if any(c["hit_epoch_budget"] for c in mine):
            epochs += " (budget)"
        rows.append(f"| {model} | {mean_std([c['ndcg@10'] for c in mine])} | "
                    f"{mean_std([c['recall@20'] for c in mine])} | {seconds([c['fit_seconds'] for c in mine])} | "
                    f"{epochs} |")
    overhead = ["| model | ours: fit+valid+test s | bare implicit + numpy s | ratio (mean, max) | max metric gap |",
                "|---|---|---|---|---|"]
    for model in models:
        mine = [c for c in cells if c["model"] == model and "overhead" in c]
        if mine:
            ratios = [c["overhead"] for c in mine]
            overhead.append(f"| {model} | {seconds([c['ours_seconds'] for c in mine])} | "
                            f"{seconds([c['bare_seconds'] for c in mine])} | {np.mean(ratios):.2f}×, "
                            f"{np.max(ratios):.2f}× | {max(c['max_metric_gap'] for c in mine):.1e} |")
    return "\n".join(rows), "\n".join(overhead)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--models", nargs="+", default=IMPLICIT_MODELS + RECBOLE_MODELS)
    parser.add_argument("--epochs", type=int, default=None, help="cap epochs of RecBole's BPR/LightGCN (default: "
                                                                  "train until early stopping)")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="RecBole's eval_batch_size for every model (default: the protocol's 4096, i.e. 2 users "
                             "per full-ranking batch on ml-100k)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine two threads make every "
                             "small per-batch scoring op wait for the busy core)")
    parser.add_argument("--out", default="bench/out/implicit.json")
    parser.add_argument("--results", default=None, help="append a section to this Markdown file (bench/RESULTS.md)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.torch_threads)
    warnings.filterwarnings("ignore")
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-implicit-") as workdir:
        for model in args.models:
            for seed in args.seeds:
                start = time.perf_counter()
                cell = run_cell(model, seed, args.epochs, args.eval_batch_size, workdir)
                cells.append(cell)
                extra = f", overhead {cell['overhead']:.2f}×" if "overhead" in cell else ""
                print(f"{model:16s} seed {seed}: ndcg@10 {cell['ndcg@10']:.4f} recall@20 {cell['recall@20']:.4f} "
                      f"fit {cell['fit_seconds']:.2f}s epochs {cell['epochs_run']}{extra} "
                      f"[{time.perf_counter() - start:.0f}s]", flush=True)

    metrics_table, overhead_table = tables(cells, args.models)
    print("\n" + metrics_table + "\n\n" + overhead_table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(cells, f, indent=1)

    if args.results:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        command = " ".join([".venv/bin/python", "bench/bench_implicit.py"] + sys.argv[1:])
        section = "\n".join([
            "", "## Implicit baselines (issue 5)" + (f", eval_batch_size={args.eval_batch_size}"
                                                    if args.eval_batch_size else ""), "",
            f"Command: `{command}`  ", f"Commit: `{commit}` (plus the uncommitted issue-5 files)  ",
            f"Machine: {os.cpu_count()} CPU cores, no GPU, torch threads {args.torch_threads}; "
            f"seeds {', '.join(map(str, args.seeds))}; ml-100k, "
            "leave-one-out by time, full ranking, seen items masked, selection on validation NDCG@10.",
            "", metrics_table, "",
            "Wrapper overhead, same process (ours = `trainer.fit` + test `evaluate`, incl. checkpoint save and "
            "reload; bare = CSR build + implicit fit + `recommend(filter_already_liked_items=True)` + numpy metrics "
            "for validation and test; dataset loading excluded from both):", "", overhead_table, "",
        ])
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(section)


if __name__ == "__main__":
    main()
