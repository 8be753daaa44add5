"""How much each protocol fix of issue 17 moves each leaderboard row, measured on the board's own runs.

For every finished run of a leaderboard (its cached runs for the current code version: run the board first), the
same trained model is evaluated on test under the old rule and the new one, one fix at a time:

  masking   sequential rows: only the input window's items masked (the old rule: a history longer than
            MAX_ITEM_LIST_LENGTH had its older items back among the candidates) vs every seen item (now);
  padding   implicit rows: implicit refitted, same settings and seed, on the matrix with RecBole's padding user and
            item (the old fit) vs the board's fit on the real users x items;
  pop       RecBole 1.2.1's Pop (counts once per batch, sampled negatives included) trained on the same split
            with each board seed vs ours (exact counts);
  split     per dataset: users whose validation or test item changes when interactions are ordered by RecBole's
            float32 timestamps (and, for ml-100k, RecBole's normalize_all) instead of the true ones.

Usage: .venv/bin/python bench/bench_protocol.py [--leaderboard properties/leaderboard/ml-100k-mm.yaml]
           [--out bench/out/protocol.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

METRICS = ("ndcg@10", "recall@10")


def split_targets(dataset_name, raw_order: bool, extra=None):
    """{user: (valid item, test item)} of leave-one-out, built by our pipeline or by RecBole's own dataset class
    (`raw_order`: RecBole's float32 timestamp order, as before the fix)."""
    from recbole.data.dataset import Dataset

    from mmrecbole import compat
    from mmrecbole.config import Config
    from mmrecbole.data.build import create_dataset, ensure_dataset_files

    config = Config("BPR", dataset_name, config_dict={"state": "WARNING", **(extra or {})})
    ensure_dataset_files(config)
    compat.set_seed(config["seed"], config["reproducibility"])
    dataset = Dataset(config) if raw_order else create_dataset(config)
    _, valid, test = dataset.build()
    targets = {}
    for position, split in enumerate((valid, test)):
        for user, item in zip(split.inter_feat[dataset.uid_field].numpy(), split.inter_feat[dataset.iid_field].numpy()):
            targets.setdefault(dataset.field2id_token[dataset.uid_field][user], [None, None])[position] = \
                dataset.field2id_token[dataset.iid_field][item]
    return {u: tuple(t) for u, t in targets.items()}


def split_changes(dataset_name):
    old_extra = {"normalize_all": True} if dataset_name == "ml-100k" else None  # RecBole's ml-100k.yaml
    old, new = split_targets(dataset_name, True, old_extra), split_targets(dataset_name, False)
    valid = sum(old[u][0] != new[u][0] for u in new)
    test = sum(old[u][1] != new[u][1] for u in new)
    either = sum(old[u] != new[u] for u in new)
    return {"users": len(new), "valid_changed": valid, "test_changed": test, "either_changed": either}


def evaluate(trainer, loader):
    result = trainer.evaluate(loader, load_best_model=False, show_progress=False)
    return {m: float(result[m]) for m in METRICS}


def window_only(trainer, loaded):
    """Test metrics with the old sequential masking: the input window's items only."""
    import torch

    loader = loaded.test
    seen, loader.seen_items = loader.seen_items, None
    original = trainer._full_sort_batch_eval

    def masked_window(batch):
        interaction, scores, positive_u, positive_i = original(batch)
        scores.scatter_(1, interaction[loaded.model.ITEM_SEQ].to(scores.device), -np.inf)
        return interaction, scores, positive_u, positive_i

    trainer._full_sort_batch_eval = masked_window
    try:
        with torch.no_grad():
            return evaluate(trainer, loader)
    finally:
        trainer._full_sort_batch_eval = original
        loader.seen_items = seen


def padded_refit(trainer, loaded):
    """Test metrics of the implicit model refitted as before the fix: on the matrix with row/column 0."""
    import torch

    from mmrecbole.compat import dataset_of
    from mmrecbole.model.external import implicit_models as im

    model = loaded.model
    train = dataset_of(loaded.train)
    if isinstance(model, im.ImplicitFactorModel):
        estimator = model.make_estimator()
        im._quiet_fit(estimator, model.training_matrix(train), False)
        model.user_factors = torch.from_numpy(np.ascontiguousarray(im.as_host_array(estimator.user_factors), np.float32))
        model.item_factors = torch.from_numpy(np.ascontiguousarray(im.as_host_array(estimator.item_factors), np.float32))
    else:  # item-kNN
        history = im.interaction_strength(train, model.confidence, model.rating_field)
        estimator = model.make_estimator()
        im._quiet_fit(estimator, history, False)
        model.similarity = estimator.similarity.tocsr()
    return evaluate(trainer, loaded.test)


def recbole_pop(dataset_name, seed, settings):
    """Test metrics of RecBole 1.2.1's own Pop, trained by its trainer on our split."""
    from mmrecbole import compat
    from mmrecbole.config import Config
    from mmrecbole.quick_start import build
    from mmrecbole.trainer import with_training

    config = Config("Pop", dataset_name, config_dict={**settings, "seed": seed, "state": "WARNING"})
    _, train, valid, test, _ = build(config)
    compat.set_seed(seed, config["reproducibility"])
    model = compat.import_recbole_model("Pop")(config, compat.dataset_of(train))
    trainer = with_training(compat.recbole_trainer_class(model.type, "Pop"))(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    return {m: float(result[m]) for m in METRICS}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaderboard", default=os.path.join(PROJECT, "properties/leaderboard/ml-100k-mm.yaml"))
    parser.add_argument("--out", default=os.path.join(PROJECT, "bench/out/protocol.json"))
    args = parser.parse_args()

    import torch

    from mmrecbole import registry
    from mmrecbole.leaderboard.runner import plan
    from mmrecbole.trainer import make_trainer
    from mmrecbole.leaderboard.spec import load_spec
    from mmrecbole.quick_start import load_run
    from recbole.utils import ModelType

    torch.set_num_threads(1)
    spec = load_spec(args.leaderboard)
    out = {"split": {}, "rows": []}
    for name in dict.fromkeys([spec.dataset, "ml-100k"]):
        out["split"][name] = split_changes(name)
        print(f"split {name}: {out['split'][name]}", flush=True)

    rows = {}
    for run in plan(spec):
        record = run.cached()
        if record is None or registry.get_pipeline(run.entry.name) is not None:
            continue
        row = rows.setdefault(run.entry.label, {"label": run.entry.label, "model": run.entry.name, "seeds": []})
        entry = {"seed": run.seed, "board": {m: record["test"][m] for m in METRICS}}
        if run.entry.name == "Pop":
            entry["old"] = recbole_pop(spec.dataset, run.seed, spec.row_settings(run.entry, run.seed))
            entry["fix"] = "pop"
        elif run.entry.name.startswith("Implicit") or registry.get_model(run.entry.name).type == ModelType.SEQUENTIAL:
            loaded = load_run(record["checkpoint"])
            trainer = make_trainer(loaded.config, loaded.model)
            trainer.eval_collector.data_collect(loaded.train)  # popularity for the beyond-accuracy metrics
            entry["new"] = evaluate(trainer, loaded.test)
            if loaded.config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
                entry["old"], entry["fix"] = window_only(trainer, loaded), "masking"
            elif run.entry.name.startswith("Implicit"):
                entry["old"], entry["fix"] = padded_refit(trainer, loaded), "padding"
        row["seeds"].append(entry)
        print(f"{run.entry.label} seed {run.seed}: {entry}", flush=True)
    out["rows"] = list(rows.values())

    print("\n| row | fix | NDCG@10 old rule | NDCG@10 new rule | ratio | Recall@10 old | Recall@10 new | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in out["rows"]:
        measured = [s for s in row["seeds"] if "old" in s]
        if not measured:
            continue
        cells = [row["label"], measured[0]["fix"]]
        for metric in METRICS:
            old = np.mean([s["old"][metric] for s in measured])
            new = np.mean([s["board"][metric] for s in measured])
            cells += [f"{old:.4f}", f"{new:.4f}", f"{new / old:.3f}x" if old else "–"]
        print("| " + " | ".join(cells) + " |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
