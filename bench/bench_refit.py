"""Periodic updates on ml-100k-mm or amazon-office (--dataset), simulated by time (issue 21): stale vs refit vs
retraining from scratch.

The interactions, in time order, are cut into a base period (--base, default the first 70%) and --steps equal
increments; version t (datasets mlv0..mlvK, or aov0..aovK for amazon-office, under --work) holds everything up to the
end of increment t (amazon-office's same-day ties keep the file's order, which is its time order). Per model:
  scratch   trained from scratch on version t (its defaults, seed 2020)
  refit     quick_start.refit of the previous step's refit (step 1: of the base model) on version t, early stopping
            after --refit_stopping_step evaluations without improvement (implicit's factor models: a warm-started
            fit of --refit_iterations iterations)
  refit_mean (--mean_rows) the same refit chain with `refit_new_rows: mean` (new ids' rows start at the mean of
            the kept rows instead of zero)
  refit_sp  (--shrink_perturb S P) the same refit chain with `refit_shrink: S, refit_perturb: P` (carried weights
            times S plus P times a fresh initialisation, a fresh optimizer: Ash & Adams' shrink and perturb)
  refit_replay (--replay R [--replay_valid_users all|updated]) the same refit chain training on the users with new
            interactions plus a share R of the others (`refit_replay: R`), selecting on the updated users'
            validation interactions (`refit_valid_users: updated`, the default here) or everyone's
  stale     the base model carried over to version t without training (a refit at a learning rate of 1e-12):
            gradient-trained models only
Each is measured on version t's test split (every user's last interaction), averaged over the users whose test
interaction lies in increment t (the users the update is for): NDCG@10 and Recall@20, plus Recall@20 over the users
whose test item is new in increment t (content models can rank those; ID models cannot), and NDCG@10 / Recall@20
over the other users (test interaction before increment t: what an update must not forget). Seconds: training time of
refit and scratch. The content model reads the dataset's feature tables (ml-100k-mm: text and posters;
amazon-office: text), relabelled per version (the items' content does not change between versions).

Goal (the issue): refit >= 0.98 x scratch quality at <= 0.25 x its time at every step, and clearly above stale.

Usage: .venv/bin/python bench/bench_refit.py [--dataset ml-100k-mm|amazon-office]
       [--models "SASRec (ID only)" MMSASRec ImplicitALS] [--base 0.7] [--steps 3] [--refit_stopping_step 3] [--refit_iterations 3] [--mean_rows] [--shrink_perturb S P] [--replay R] [--replay_valid_users updated] [--work DIR] [--out bench/out/refit.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

#: Rows: label -> (model, settings). The ID-only sequential row is MMSASRec without modalities, as on the boards (our
#: all_positions training; RecBole's SASRec trains prefix rows, ~10x slower per epoch on ml-100k-mm).
VARIANTS = {"SASRec (ID only)": ("MMSASRec", {"modalities": []}), "MMSASRec": ("MMSASRec", {}),
            "ImplicitALS": ("ImplicitALS", {})}
GRADIENT = {"MMSASRec", "MMGRU4Rec", "SASRec", "GRU4Rec", "BPR", "LightGCN", "VBPR", "FREEDOM"}
#: Source dataset -> (prefix of its version names, its modalities).
SOURCES = {"ml-100k-mm": ("mlv", ("text", "image")), "amazon-office": ("aov", ("text",))}


def write_versions(work: str, base: float, steps: int, dataset: str):
    """[(name, cut time)] of the versions, written as atomic files under work/data (rows in time order, ties in file
    order, as RecBole sorts them)."""
    from mmrecbole.data import dataset_dir, prepare_dataset

    prepare_dataset(dataset)
    source = os.path.join(dataset_dir(dataset), f"{dataset}.inter")
    with open(source, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    time_column = [c.split(":")[0] for c in header.split("\t")].index("timestamp")
    times = np.array([float(r.split("\t")[time_column]) for r in rows])
    order = np.argsort(times, kind="stable")
    versions = []
    for t in range(steps + 1):
        end = int(round(len(rows) * (base + t * (1.0 - base) / steps)))
        name = f"{SOURCES[dataset][0]}{t}"
        folder = os.path.join(work, "data", name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
            f.write("\n".join([header] + [rows[i] for i in order[:end]]) + "\n")
        versions.append((name, float(times[order[end - 1]])))
    return versions


def relabelled_features(work: str, name: str, dataset: str) -> tuple:
    """(the source dataset's feature tables with their provenance's dataset set to version `name`, the text template
    they were built with: the versions have no property file of their own)."""
    from mmrecbole.features import FeatureTable, load_or_build_features
    from mmrecbole.config import Config

    modalities = list(SOURCES[dataset][1])
    config = Config("MMSASRec", dataset, config_dict={"modalities": modalities})
    files = {}
    for modality in modalities:
        table = load_or_build_features(dataset, modality, config)
        path = os.path.join(work, "features", f"{name}-{modality}.npz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        FeatureTable(table.ids, table.matrix, table.mask, dict(table.provenance, dataset=name), source=path).save(path)
        files[modality] = path
    return files, config["text_template"]


def settings_for(label, work, name, dataset):
    model, own = VARIANTS[label]
    settings = {"seed": 2020, "show_progress": False, "state": "WARNING", "data_path": os.path.join(work, "data"),
                "checkpoint_dir": os.path.join(work, "saved", label.replace(" ", "_"), name), **own}
    if model.startswith("MM") and "modalities" not in own:
        settings["modalities"] = list(SOURCES[dataset][1])
    if model.startswith("MM") and settings["modalities"]:
        settings["mm_feature_files"], settings["text_template"] = relabelled_features(work, name, dataset)
    return settings


def increment_scores(result, work, name, previous_cut, items_before):
    """Mean NDCG@10 and Recall@20 over the users whose test (last) interaction is later than `previous_cut`, and
    Recall@20 over those whose test item was not in the previous version."""
    path = os.path.join(work, "data", name, f"{name}.inter")
    with open(path, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    columns = [c.split(":")[0] for c in header.split("\t")]
    u, i, t = columns.index("user_id"), columns.index("item_id"), columns.index("timestamp")
    last = {}
    for row in rows:  # time order: the last row of a user is their test interaction
        cells = row.split("\t")
        last[cells[u]] = (cells[i], float(cells[t]))
    per_user = result["test_per_user"]
    index = {user: n for n, user in enumerate(per_user["user_id"])}
    fresh = [user for user, (_, when) in last.items() if when > previous_cut and user in index]
    new_item = [user for user in fresh if last[user][0] not in items_before]
    mean = lambda key, users: float(np.mean([per_user[key][index[x]] for x in users])) if users else None  # noqa
    fresh_set = set(fresh)
    others = [user for user in index if user not in fresh_set]  # earlier test interactions: forgetting shows here
    return {"users": len(fresh), "ndcg@10": mean("ndcg@10", fresh), "recall@20": mean("recall@20", fresh),
            "new_item_users": len(new_item), "new_item_recall@20": mean("recall@20", new_item),
            "other_users": len(others), "other_ndcg@10": mean("ndcg@10", others),
            "other_recall@20": mean("recall@20", others)}


def items_of(work, name) -> set:
    with open(os.path.join(work, "data", name, f"{name}.inter"), encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    column = [c.split(":")[0] for c in header.split("\t")].index("item_id")
    return {r.split("\t")[column] for r in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm", choices=list(SOURCES))
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--base", type=float, default=0.7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--refit_stopping_step", type=int, default=3)
    parser.add_argument("--refit_iterations", type=int, default=3,
                        help="implicit factor models: iterations of the warm-started refit (scratch: their default)")
    parser.add_argument("--mean_rows", action="store_true",
                        help="gradient-trained rows: also a refit chain with refit_new_rows: mean (new users' and "
                             "items' ID rows start at the kept rows' mean instead of zero)")
    parser.add_argument("--shrink_perturb", nargs=2, type=float, metavar=("SHRINK", "PERTURB"),
                        help="gradient-trained rows: also a refit chain with refit_shrink / refit_perturb")
    parser.add_argument("--replay", type=float, metavar="SHARE",
                        help="gradient-trained rows: also a refit chain with refit_replay: SHARE (the updated users "
                             "plus this share of the others)")
    parser.add_argument("--replay_valid_users", default="updated", choices=["all", "updated"],
                        help="refit_valid_users of the --replay chain")
    parser.add_argument("--work")
    parser.add_argument("--out", default="bench/out/refit.json")
    args = parser.parse_args()
    from mmrecbole.quick_start import refit, run

    work = args.work or tempfile.mkdtemp(prefix="bench-refit-")
    versions = write_versions(work, args.base, args.steps, args.dataset)
    rows = []
    for label in args.models:
        model = VARIANTS[label][0]
        base_name = versions[0][0]
        base = run(model, base_name, config_dict=settings_for(label, work, base_name, args.dataset), console_log=False)
        previous = previous_mean = previous_sp = previous_replay = base
        for step in range(1, len(versions)):
            name, _ = versions[step]
            previous_name, previous_cut = versions[step - 1]
            before = items_of(work, previous_name)
            settings = settings_for(label, work, name, args.dataset)
            start = time.perf_counter()
            scratch = run(model, name, config_dict=settings, console_log=False)
            scratch_wall = time.perf_counter() - start
            start = time.perf_counter()
            factor_model = model in ("ImplicitALS", "ImplicitBPR", "ImplicitLMF")
            own = {"iterations": args.refit_iterations} if factor_model else {"stopping_step": args.refit_stopping_step}
            updated = refit(previous["bundle"], name, console_log=False, config_dict={**settings, **own})
            refit_wall = time.perf_counter() - start
            row = {"row": label, "model": model, "step": step, "dataset": name,
                   "scratch": increment_scores(scratch, work, name, previous_cut, before),
                   "refit": increment_scores(updated, work, name, previous_cut, before),
                   "scratch_train_s": round(scratch["train_seconds"], 1),
                   "refit_train_s": round(updated["train_seconds"], 1),
                   "scratch_wall_s": round(scratch_wall, 1), "refit_wall_s": round(refit_wall, 1),
                   "scratch_epochs": scratch["epochs_run"], "refit_epochs": updated["epochs_run"]}
            if model in GRADIENT:
                stale = refit(base["bundle"], name, console_log=False,
                              config_dict={**settings, "epochs": 1, "learning_rate": 1e-12})
                row["stale"] = increment_scores(stale, work, name, previous_cut, before)
                if args.mean_rows:  # the same refit chain with new ids' rows started at the kept rows' mean
                    mean = refit(previous_mean["bundle"], name, console_log=False,
                                 config_dict={**settings, **own, "refit_new_rows": "mean"})
                    row["refit_mean"] = increment_scores(mean, work, name, previous_cut, before)
                    row["refit_mean_train_s"] = round(mean["train_seconds"], 1)
                    previous_mean = mean
                if args.shrink_perturb:  # the same refit chain, its weights shrunk towards a fresh init each step
                    shrink, perturb = args.shrink_perturb
                    sp = refit(previous_sp["bundle"], name, console_log=False,
                               config_dict={**settings, **own, "refit_shrink": shrink, "refit_perturb": perturb})
                    row["refit_sp"] = increment_scores(sp, work, name, previous_cut, before)
                    row["refit_sp_train_s"] = round(sp["train_seconds"], 1)
                    previous_sp = sp
                if args.replay is not None:  # the same refit chain on the updated users plus a replayed share
                    replayed = refit(previous_replay["bundle"], name, console_log=False,
                                     config_dict={**settings, **own, "refit_replay": args.replay,
                                                  "refit_valid_users": args.replay_valid_users})
                    row["refit_replay"] = increment_scores(replayed, work, name, previous_cut, before)
                    row["refit_replay_train_s"] = round(replayed["train_seconds"], 1)
                    row["refit_replay_epochs"] = replayed["epochs_run"]
                    row["refit_replay_users"] = replayed["refit"]["users"]
                    for key in ("ndcg@10", "recall@20"):
                        row[f"refit_replay_over_scratch_{key}"] = round(
                            row["refit_replay"][key] / row["scratch"][key], 3)
                    row["refit_replay_over_scratch_time"] = round(
                        row["refit_replay_train_s"] / max(row["scratch_train_s"], 1e-9), 3)
                    previous_replay = replayed
            for key in ("ndcg@10", "recall@20"):
                row[f"refit_over_scratch_{key}"] = round(row["refit"][key] / row["scratch"][key], 3)
            row["refit_over_scratch_time"] = round(row["refit_train_s"] / max(row["scratch_train_s"], 1e-9), 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
            write_out(args, rows)  # after every row: a crash later keeps what was measured
            previous = updated
    write_out(args, rows)
    print(f"written: {args.out}")


def write_out(args, rows):
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"dataset": args.dataset, "base": args.base, "steps": args.steps,
                   "refit_stopping_step": args.refit_stopping_step,
                   "refit_iterations": args.refit_iterations, "shrink_perturb": args.shrink_perturb, "replay": args.replay,
                   "replay_valid_users": args.replay_valid_users, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
