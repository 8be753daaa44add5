"""Time to quality and throughput of sequential training (issue 6), side by side in one run.

  ttq         RecBole's SASRec (prefix augmentation, through our pipeline: anomaly detection off, same protocol) vs our
              SASRec-equivalent (MMSASRec without features, train_mode: all_positions), same sizes, several seeds:
              training seconds until the best validation NDCG@10, and the test NDCG@10 reached there.
  throughput  seconds per epoch and training targets per second: all_positions fp32 vs CPU bf16 autocast
              (enable_amp) vs RecBole's prefix mode, a few epochs each.
  options     all_positions options one at a time (length bucketing off, torch.compile, CPU bf16, compile + bf16)
              vs the default: steady-state seconds per epoch, first epoch (compilation), test NDCG@10.
  scale       all_positions epoch time on synthetic data of growing size; growth exponent of time vs interactions.
  curves      validation AND test NDCG@10 after every epoch, no early stopping (a diagnostic: test is read, never
              selected on): do validation and test rise and fall together under each training mode, and does the
              validation-selected epoch leave test quality behind? Means over fixed epoch ranges, paired by seed.
  eval        full-ranking test evaluation of one trained model on a large synthetic catalog: RecBole's batching
              (eval_batch_size counts sequences) vs ours (it counts scores), seconds and peak memory.
  evalrows    validation evaluation of MMSASRec (text) on real datasets with eval_sequence_rows uncapped (one batch
              of eval_batch_size scores) vs 256 vs 64 rows, interleaved repeats in one process: seconds, ratio to
              uncapped, and the metric (identical by construction, checked).

Usage: .venv/bin/python bench/bench_sequential.py ttq --seeds 2020 2021 2022 [--variants ours-all-positions ...]
           (ttq also prints test NDCG@10 by users' training-history length, for the seeds with per-user values)
       .venv/bin/python bench/bench_sequential.py throughput
       .venv/bin/python bench/bench_sequential.py options --epochs 6 --repeats 2
       .venv/bin/python bench/bench_sequential.py scale --sizes 100000 1000000
       .venv/bin/python bench/bench_sequential.py curves --seeds 2020 2021 2022 2023 2024 --epochs 60 \
           --variants ours-all-positions ours-all-positions-shift
       .venv/bin/python bench/bench_sequential.py eval --items 50000 --sizes 250000
       .venv/bin/python bench/bench_sequential.py evalrows --datasets ml-100k-mm amazon-office --repeats 3
Each run is a child process (clean RecBole state, own peak memory). Results go to bench/out/sequential-<mode>.json.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)  # run_key and code_commit; the runs themselves are child processes
BACKBONE = {"n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.2,
            "attn_dropout_prob": 0.2, "MAX_ITEM_LIST_LENGTH": 50, "learning_rate": 0.001, "show_progress": False,
            "state": "WARNING"}
VARIANTS = {
    "recbole-prefix": ("SASRec", {"train_batch_size": 2048}),
    "ours-all-positions": ("MMSASRec", {"modalities": [], "train_mode": "all_positions", "window_batch_size": 128}),
    "ours-prefix": ("MMSASRec", {"modalities": [], "train_mode": "prefix", "train_batch_size": 2048}),
    "ours-all-positions-lr2e-3": ("MMSASRec", {"modalities": [], "train_mode": "all_positions",
                                               "window_batch_size": 128, "learning_rate": 0.002}),
    "ours-all-positions-relative": ("MMSASRec", {"modalities": [], "train_mode": "all_positions",
                                                 "window_batch_size": 128, "position_encoding": "relative"}),
    "ours-all-positions-relative-context25": ("MMSASRec", {"modalities": [], "train_mode": "all_positions",
                                                           "window_batch_size": 128, "position_encoding": "relative",
                                                           "window_context": 25}),
    "ours-prefix-relative": ("MMSASRec", {"modalities": [], "train_mode": "prefix", "train_batch_size": 2048,
                                          "position_encoding": "relative"}),
    "ours-window-64": ("MMSASRec", {"modalities": [], "train_mode": "all_positions", "window_batch_size": 64}),
    "ours-all-positions-shift": ("MMSASRec", {"modalities": [], "train_mode": "all_positions",
                                              "window_batch_size": 128, "window_shift": True}),
    "ours-all-positions-bf16": ("MMSASRec", {"modalities": [], "train_mode": "all_positions",
                                             "window_batch_size": 128, "enable_amp": True}),
    "ours-no-bucketing": ("MMSASRec", {"modalities": [], "train_mode": "all_positions", "window_batch_size": 128,
                                       "window_bucketing": False}),
    "ours-compiled": ("MMSASRec", {"modalities": [], "train_mode": "all_positions", "window_batch_size": 128,
                                   "torch_compile": True}),
    "ours-compiled-bf16": ("MMSASRec", {"modalities": [], "train_mode": "all_positions", "window_batch_size": 128,
                                        "torch_compile": True, "enable_amp": True}),
}

CHILD = r'''
import json, resource, sys
import torch
request = json.loads(sys.stdin.read())
torch.set_num_threads(request.get("threads", 2))
from mmrecbole.quick_start import run
r = run(request["model"], request["dataset"], config_dict=request["settings"], console_log=False, saved=True)
r["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
per_user = r.pop("test_per_user", None) or {}
if request.get("keep_per_user") and per_user:  # for paired tests over users (ttq); only the selection metric
    r["test_per_user"] = {"user_id": per_user["user_id"], "ndcg@10": per_user["ndcg@10"]}
print("RESULT " + json.dumps(r))
'''


CURVE_CHILD = r'''
import json, sys, time
import torch
request = json.loads(sys.stdin.read())
torch.set_num_threads(request.get("threads", 2))
from mmrecbole.config import Config
from mmrecbole.data.build import ensure_dataset_files
from mmrecbole.quick_start import build
from mmrecbole.trainer import make_trainer
config = Config(request["model"], request["dataset"], config_dict=request["settings"])
ensure_dataset_files(config)
_, train, valid, test, model = build(config)
trainer = make_trainer(config, model)
curve, start = [], time.perf_counter()
def after_validation(epoch, valid_score):
    # Test after every epoch, for this diagnostic only: nothing here selects on it. Full ranking draws no random
    # numbers, so the training trajectory is the one ttq runs take.
    test_result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    curve.append([int(epoch), float(valid_score), float(test_result["ndcg@10"]), time.perf_counter() - start])
trainer.fit(train, valid, saved=False, show_progress=False, callback_fn=after_validation)
print("RESULT " + json.dumps({"curve": curve}))
'''


def child(model, dataset, settings, workdir, threads=2, keep_per_user=False, script=CHILD):
    env = dict(os.environ, PYTHONPATH=PROJECT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    request = {"model": model, "dataset": dataset, "settings": settings, "threads": threads,
               "keep_per_user": keep_per_user}
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True,
                          cwd=workdir, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{model} failed:\n{proc.stderr[-3000:]}")
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])


def mean_std(values):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def run_key(model, dataset, settings):
    """The leaderboard's run key of these settings (every resolved config value but the seed, hashed) and the seed:
    a saved run is reused only while the code's defaults and the settings still give the same config. The epoch cap
    is left out: `reusable` checks it (a run that stopped early is the same under any cap it did not reach)."""
    from mmrecbole.config import Config
    from mmrecbole.runs import config_hash

    uncapped = {k: v for k, v in settings.items() if k != "epochs"}
    return f"{model}/{dataset}/{config_hash(Config(model, dataset, config_dict=uncapped))}/{settings['seed']}"


def reusable(run, max_epochs):
    """A saved run answers for this cap if it ran under it, or stopped early before reaching it (nothing in training
    depends on the cap: no schedule over epochs)."""
    if run is None:
        return False
    return run.get("epochs_budget") == max_epochs or (run["stopped_early"] and run["epochs_run"] <= max_epochs)


def ttq(args, workdir):
    # A run of RecBole's prefix mode takes most of an hour on 2 cores: each finished run is saved at once to a partial
    # file, and a rerun resumes from it instead of repeating finished runs whose resolved config is unchanged.
    from mmrecbole.provenance import code_commit

    partial_path = os.path.join(PROJECT, "bench", "out", "sequential-ttq.partial.json")
    done = {}
    if os.path.exists(partial_path):
        with open(partial_path) as f:
            done = json.load(f)["runs"]
    out = {}
    ours = [name for name in args.variants if name != "recbole-prefix"]  # RecBole's prefix mode always runs
    for seed in args.seeds:  # interleave variants per seed: machine noise hits both alike
        for name in ["recbole-prefix"] + ours:
            model, extra = VARIANTS[name]
            settings = {**BACKBONE, **extra, "seed": seed, "epochs": args.max_epochs, "stopping_step": 10}
            key = run_key(model, args.dataset, settings)
            r = done.get(key)
            if not reusable(r, args.max_epochs):
                r = child(model, args.dataset, settings, workdir, keep_per_user=True)
                r["commit"] = code_commit()
                done[key] = r
                os.makedirs(os.path.dirname(partial_path), exist_ok=True)
                with open(partial_path + ".tmp", "w") as f:
                    json.dump({"runs": done}, f, default=str)
                os.replace(partial_path + ".tmp", partial_path)
            out.setdefault(name, []).append(r)
            print(f"{name:22s} seed {seed}: best epoch {r['best_epoch']:3d}, {r['seconds_to_best']:7.1f} s to best "
                  f"({r['train_seconds']:7.1f} s total, {r['epochs_run']} epochs), test ndcg@10 "
                  f"{r['test']['ndcg@10']:.4f}, valid {r['valid']['ndcg@10']:.4f} (run {key}, commit "
                  f"{r.get('commit', 'not recorded')})", flush=True)
    summary = {}
    for name, runs in out.items():
        summary[name] = {"seconds_to_best": mean_std([r["seconds_to_best"] for r in runs]),
                         "test_ndcg@10": mean_std([r["test"]["ndcg@10"] for r in runs]),
                         "valid_ndcg@10": mean_std([r["valid"]["ndcg@10"] for r in runs]),
                         "seconds_per_epoch": mean_std([r["train_seconds"] / r["epochs_run"] for r in runs])}
    print("\nvariant                   time to best (s)     test NDCG@10       valid NDCG@10      s/epoch")
    for name, s in summary.items():
        print(f"{name:24s} {s['seconds_to_best'][0]:8.1f} ± {s['seconds_to_best'][1]:6.1f}   "
              f"{s['test_ndcg@10'][0]:.4f} ± {s['test_ndcg@10'][1]:.4f}   "
              f"{s['valid_ndcg@10'][0]:.4f} ± {s['valid_ndcg@10'][1]:.4f}   {s['seconds_per_epoch'][0]:7.2f}")
    # Is a test gap larger than seed noise? The leaderboard's paired tests: over seeds (t-test) and, for the runs
    # that kept per-user values, over users (each user's NDCG@10 averaged over those seeds).
    from mmrecbole.leaderboard.stats import paired_tests

    base = summary["recbole-prefix"]
    base_runs = out["recbole-prefix"]
    for name in ours:
        ours_summary, ours_runs = summary[name], out[name]
        print(f"{name} / RecBole prefix: time to best "
              f"{ours_summary['seconds_to_best'][0] / base['seconds_to_best'][0]:.3f}x, "
              f"test NDCG@10 {ours_summary['test_ndcg@10'][0] / base['test_ndcg@10'][0]:.3f}x, "
              f"valid NDCG@10 {ours_summary['valid_ndcg@10'][0] / base['valid_ndcg@10'][0]:.3f}x")
        by_seeds = paired_tests(ours_runs, base_runs, "ndcg@10")
        with_users = ({r["seed"] for r in ours_runs if r.get("test_per_user")}
                      & {r["seed"] for r in base_runs if r.get("test_per_user")})
        by_users = paired_tests([r for r in ours_runs if r["seed"] in with_users],
                                [r for r in base_runs if r["seed"] in with_users], "ndcg@10")
        ours_summary["paired_tests_vs_recbole"] = {
            "p_seeds_t": by_seeds["p_seeds_t"], "p_users_t": by_users["p_users_t"],
            "p_users_wilcoxon": by_users["p_users_wilcoxon"], "n_users": by_users["n_users"],
            "seeds_with_users": sorted(with_users)}
        print(f"  paired tests of test NDCG@10: p over seeds {by_seeds['p_seeds_t']:.3f} ({len(args.seeds)} seeds); "
              f"p over users {by_users['p_users_t']:.3f} (t) / {by_users['p_users_wilcoxon']:.3f} (Wilcoxon), "
              f"{by_users['n_users']} users, seeds {sorted(with_users)} (those with per-user values)")
        if with_users:
            ours_summary["by_history_length"] = by_history_length(
                [r for r in ours_runs if r["seed"] in with_users], [r for r in base_runs if r["seed"] in with_users],
                training_lengths(args.dataset))
    return {"runs": out, "summary": summary}


#: Users grouped by their number of training items; with MAX_ITEM_LIST_LENGTH 50 the first group trains in a single
#: all_positions window (up to 50 targets), where a window predicts every target from the same history as its prefix
#: row; longer users are cut into several windows.
HISTORY_BINS = ((1, 51, "<= 51 (one window)"), (52, 101, "52-101"), (102, 201, "102-201"), (202, None, "> 201"))


def training_lengths(dataset):
    """{user token: number of training interactions} under the bench's split (leave-one-out: all but two)."""
    import numpy as np

    from mmrecbole.config import Config
    from mmrecbole.data.build import create_dataset

    config = Config("SASRec", dataset, config_dict={**BACKBONE, "gpu_id": ""})
    data = create_dataset(config)
    users = np.asarray(data.inter_feat[data.uid_field])  # a DataFrame column before the dataloaders are built
    counts = np.bincount(users, minlength=data.user_num)
    return {str(data.id2token(data.uid_field, u)): int(c) - 2 for u, c in enumerate(counts) if u > 0 and c > 0}


def by_history_length(ours_runs, base_runs, lengths):
    """Per HISTORY_BINS group: users, and test NDCG@10 of RecBole prefix and ours (per-user means over seeds)."""
    import numpy as np

    from mmrecbole.leaderboard.stats import per_user_means

    mine, theirs = per_user_means(ours_runs, "ndcg@10"), per_user_means(base_runs, "ndcg@10")
    rows = []
    for low, high, label in HISTORY_BINS:
        users = [u for u in mine if u in theirs and low <= lengths[u] and (high is None or lengths[u] <= high)]
        if users:
            base, ours = np.mean([theirs[u] for u in users]), np.mean([mine[u] for u in users])
            rows.append({"training_items": label, "users": len(users), "recbole_prefix": base, "ours": ours})
            print(f"    users with {label:20s} training items: {len(users):4d} users, test NDCG@10 RecBole prefix "
                  f"{base:.4f}, ours {ours:.4f} ({ours - base:+.4f})")
    return rows


def throughput(args, workdir):
    out = {}
    for name in ("ours-all-positions", "ours-all-positions-bf16", "recbole-prefix"):
        model, extra = VARIANTS[name]
        settings = {**BACKBONE, **extra, "seed": 2020, "epochs": args.epochs, "stopping_step": 100}
        r = child(model, args.dataset, settings, workdir)
        # Training targets per epoch are the same in both modes (every training interaction after a user's first).
        r["seconds_per_epoch"] = r["train_seconds"] / r["epochs_run"]
        out[name] = r
        print(f"{name:26s} {r['seconds_per_epoch']:7.2f} s/epoch (incl. validation), test ndcg@10 "
              f"{r['test']['ndcg@10']:.4f} after {r['epochs_run']} epochs, peak {r['peak_memory_mb']:.0f} MB",
              flush=True)
    base = out["ours-all-positions"]["seconds_per_epoch"]
    for name, r in out.items():
        print(f"  {name:26s} {r['seconds_per_epoch'] / base:.2f}x the seconds per epoch of fp32 all_positions")
    return out


def options(args, workdir):
    """all_positions training options one at a time against the default (length-bucketed, eager, fp32): seconds per
    epoch in the steady state (epochs after the first, which also pays torch.compile's compilation) and the first."""
    out = {}
    names = ("ours-all-positions", "ours-no-bucketing", "ours-compiled", "ours-all-positions-bf16", "ours-compiled-bf16")
    for repeat in range(args.repeats):  # interleaved repeats: machine noise hits every variant alike
        for name in names:
            model, extra = VARIANTS[name]
            settings = {**BACKBONE, **extra, "seed": 2020, "epochs": args.epochs, "stopping_step": 100}
            r = child(model, args.dataset, settings, workdir)
            times = [t for _, _, t in r["valid_history"]]
            r["first_epoch_seconds"] = times[0]
            r["steady_seconds_per_epoch"] = (times[-1] - times[0]) / (len(times) - 1)
            out.setdefault(name, []).append(r)
            print(f"{name:24s} repeat {repeat}: first epoch {times[0]:6.2f} s, then {r['steady_seconds_per_epoch']:5.2f} "
                  f"s/epoch (incl. validation); test ndcg@10 {r['test']['ndcg@10']:.4f} after {r['epochs_run']} epochs",
                  flush=True)
    base = mean_std([r["steady_seconds_per_epoch"] for r in out["ours-all-positions"]])[0]
    print("\nvariant                  steady s/epoch     vs default   first epoch s   test NDCG@10")
    for name, runs in out.items():
        steady = mean_std([r["steady_seconds_per_epoch"] for r in runs])
        first = mean_std([r["first_epoch_seconds"] for r in runs])[0]
        ndcg = mean_std([r["test"]["ndcg@10"] for r in runs])[0]
        print(f"{name:24s} {steady[0]:6.2f} ± {steady[1]:4.2f}   {steady[0] / base:6.2f}x   {first:10.2f}   {ndcg:.4f}")
    return out


def write_synthetic(root, n_interactions, n_items, seed=0):
    """Users of 20-200 interactions drawn from a Zipf-like item popularity; item count fixed across sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    name = f"synth{n_interactions}"
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    written, user = 0, 0
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        while written < n_interactions:
            user += 1
            length = int(min(rng.integers(20, 200), n_interactions - written))
            items = rng.choice(n_items, size=length, p=popularity) + 1
            f.write("".join(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items)))
            written += length
    return name


def scale(args, workdir):
    import numpy as np

    data_root = tempfile.mkdtemp(prefix="synth-")
    model, extra = VARIANTS["ours-all-positions"]
    points = []
    for size in args.sizes:
        name = write_synthetic(data_root, size, args.items)
        settings = {**BACKBONE, **extra, "seed": 2020, "epochs": 1, "data_path": data_root, "eval_batch_size": 512}
        start = time.perf_counter()
        r = child(model, name, settings, workdir)
        points.append((size, r["train_seconds"], r["peak_memory_mb"], time.perf_counter() - start))
        print(f"{size:>9,} interactions, {args.items} items: {r['train_seconds']:7.1f} s per epoch (incl. validation), "
              f"peak {r['peak_memory_mb']:.0f} MB, whole run incl. dataset build {points[-1][3]:.0f} s", flush=True)
    if len(points) > 1:
        slope = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0]
        print(f"growth exponent of epoch time vs interactions: {slope:.2f}")
    else:
        slope = None
    return {"points": points, "exponent": slope, "items": args.items}


EVAL_CHILD = r'''
import json, resource, sys, time
import torch
request = json.loads(sys.stdin.read())
torch.set_num_threads(2)
from mmrecbole import compat
from mmrecbole.data.eval_loader import ScoreBoundedFullSortEvalDataLoader
from mmrecbole.quick_start import load_run
from mmrecbole.trainer import make_trainer
loaded = load_run(request["checkpoint"])
config = loaded.config
config["eval_batch_size"] = request["eval_batch_size"]
from recbole.data.dataloader import FullSortEvalDataLoader
# RecBole's loader counts eval_batch_size in sequences; ours (data.eval_loader) in scores. Both mask every seen item.
class RecBoleBatching(ScoreBoundedFullSortEvalDataLoader):
    _init_batch_size_and_step = FullSortEvalDataLoader._init_batch_size_and_step
loader = RecBoleBatching if request["recbole_batching"] else ScoreBoundedFullSortEvalDataLoader
test = loader(config, compat.dataset_of(loaded.test), loaded.test._sampler, shuffle=False)
if loaded.test.seen_items is not None:
    test.set_seen_items(loaded.test.seen_items)  # every seen item masked, as in training runs
trainer = make_trainer(config, loaded.model)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
result = trainer.evaluate(test, load_best_model=False)
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "peak_before_mb": before, "batches": len(test), "ndcg@10": result["ndcg@10"]}))
'''


def evaluation(args, workdir):
    data_root = tempfile.mkdtemp(prefix="synth-")
    name = write_synthetic(data_root, args.sizes[0], args.items)
    model, extra = VARIANTS["ours-all-positions"]
    settings = {**BACKBONE, **extra, "seed": 2020, "epochs": 1, "data_path": data_root, "eval_batch_size": 4096}
    trained = child(model, name, settings, workdir)
    env = dict(os.environ, PYTHONPATH=PROJECT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    variants = (("recbole (4096 sequences)", True, 4096), ("ours (1,048,576 scores)", False, 1048576),
                ("ours (8,388,608 scores)", False, 8388608))
    for label, recbole_batching, batch in variants + tuple((f"{v[0]} #2",) + v[1:] for v in variants):
        proc = subprocess.run([sys.executable, "-c", EVAL_CHILD], capture_output=True, text=True, cwd=workdir, env=env,
                              input=json.dumps({"checkpoint": trained["checkpoint"], "eval_batch_size": batch,
                                                "recbole_batching": recbole_batching}))
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        r = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
        out[label] = r
        print(f"{label:28s} {r['seconds']:7.2f} s, {r['batches']} batches, peak {r['peak_mb']:.0f} MB "
              f"(before evaluation {r['peak_before_mb']:.0f} MB), ndcg@10 {r['ndcg@10']:.4f}", flush=True)
    return {"items": args.items, "interactions": args.sizes[0], "runs": out}


def evaluation_rows(args, workdir):
    import torch

    from mmrecbole.config import Config
    from mmrecbole.quick_start import build
    from mmrecbole.trainer import make_trainer

    torch.set_num_threads(args.threads)
    caps = {"uncapped": 10 ** 9, "256 rows": 256, "64 rows": 64}
    out = {}
    for dataset in args.datasets:
        trainers = {}
        for label, cap in caps.items():
            config = Config("MMSASRec", dataset, config_dict={"modalities": ["text"], "state": "WARNING",
                                                              "show_progress": False, "eval_sequence_rows": cap,
                                                              "checkpoint_dir": workdir})
            _, _, valid, _, model = build(config)
            trainers[label] = (make_trainer(config, model), valid)
        seconds = {label: [] for label in caps}
        metric = {}
        for repeat in range(args.repeats + 1):  # the first round warms up (allocator, caches) and is not counted
            for label, (trainer, valid) in trainers.items():
                start = time.perf_counter()
                result = trainer.evaluate(valid, load_best_model=False)
                if repeat:
                    seconds[label].append(time.perf_counter() - start)
                metric[label] = result["ndcg@10"]
        base = min(seconds["uncapped"])
        for label in caps:
            print(f"{dataset:14s} {label:9s} {len(trainers[label][1]):3d} batches  best {min(seconds[label]):5.2f} s "
                  f"(x{min(seconds[label]) / base:.2f} of uncapped)  valid ndcg@10 {metric[label]:.6f}", flush=True)
        if len(set(metric.values())) != 1:
            raise SystemExit(f"{dataset}: the row cap changed the metric: {metric}")
        out[dataset] = {"seconds": seconds, "ndcg@10": metric}
    return out


def curves(args, workdir):
    """Per-epoch validation and test NDCG@10 of each variant and seed (args.epochs epochs, no early stopping)."""
    import statistics

    from mmrecbole.provenance import code_commit

    partial_path = os.path.join(PROJECT, "bench", "out", "sequential-curves.partial.json")
    done = {}
    if os.path.exists(partial_path):
        with open(partial_path) as f:
            done = json.load(f)["runs"]
    runs = {}
    for seed in args.seeds:
        for name in args.variants:
            model, extra = VARIANTS[name]
            settings = {**BACKBONE, **extra, "seed": seed, "epochs": args.epochs, "stopping_step": args.epochs}
            # No schedule depends on the epoch count and nothing stops early: a longer saved curve answers for a
            # shorter one (its first epochs), so the key leaves the count out.
            key = run_key(model, args.dataset, settings)
            if len(done.get(key, {}).get("curve", [])) < args.epochs:
                curve = child(model, args.dataset, settings, workdir, threads=args.threads, script=CURVE_CHILD)
                done[key] = {**curve, "commit": code_commit()}
                # Two invocations with different seeds may share the file (one thread each on two cores): merge
                # with what the other saved meanwhile instead of overwriting it.
                if os.path.exists(partial_path):
                    with open(partial_path) as f:
                        done = {**json.load(f)["runs"], **done}
                os.makedirs(os.path.dirname(partial_path), exist_ok=True)
                with open(partial_path + f".{os.getpid()}.tmp", "w") as f:
                    json.dump({"runs": done}, f)
                os.replace(partial_path + f".{os.getpid()}.tmp", partial_path)
            runs.setdefault(name, {})[seed] = done[key]["curve"][: args.epochs]
            print(f"{name:26s} seed {seed}: {args.epochs} epochs (run {key}, commit {done[key]['commit']})", flush=True)
    # Epoch ranges: where the validation-selected epochs fall (ttq: 18-35 for prefix mode, 30-35 for all_positions)
    # and after; a mean over a range is not the maximum of a noisy curve, so selection does not inflate it.
    ranges = [(lo, hi) for lo, hi in ((20, 40), (30, 60), (20, 60)) if hi <= args.epochs] or [(0, args.epochs)]

    def mean_over(curve, column, lo, hi):
        return statistics.mean(row[column] for row in curve if lo <= row[0] < hi)

    summary = {}
    print(f"\n{'variant':26s} {'epochs':>7s}  valid NDCG@10  test NDCG@10  valid - test   (means over seeds)")
    for name, by_seed in runs.items():
        at_best = []
        for curve in by_seed.values():
            best = max(curve, key=lambda row: (row[1], row[0]))  # RecBole keeps the later epoch on ties
            at_best.append(best)
        summary[name] = {"at_best_valid": {"epoch": [b[0] for b in at_best], "valid": [b[1] for b in at_best],
                                           "test": [b[2] for b in at_best]}}
        print(f"{name:26s} {'best':>7s}  {statistics.mean(b[1] for b in at_best):.4f}         "
              f"{statistics.mean(b[2] for b in at_best):.4f}        "
              f"{statistics.mean(b[1] - b[2] for b in at_best):+.4f}   (at the best validation epoch)")
        for lo, hi in ranges:
            valid = [mean_over(c, 1, lo, hi) for c in by_seed.values()]
            test = [mean_over(c, 2, lo, hi) for c in by_seed.values()]
            summary[name][f"{lo}-{hi - 1}"] = {"valid": valid, "test": test}
            print(f"{name:26s} {lo:>3d}-{hi - 1:<3d}  {statistics.mean(valid):.4f}         {statistics.mean(test):.4f}"
                  f"        {statistics.mean(v - t for v, t in zip(valid, test)):+.4f}")
    base = args.variants[0]
    for name in args.variants[1:]:
        seeds = sorted(set(runs[name]) & set(runs[base]))
        for lo, hi in ranges:
            dv = [mean_over(runs[name][s], 1, lo, hi) - mean_over(runs[base][s], 1, lo, hi) for s in seeds]
            dt = [mean_over(runs[name][s], 2, lo, hi) - mean_over(runs[base][s], 2, lo, hi) for s in seeds]
            summary[name][f"minus_{base}_{lo}-{hi - 1}"] = {"seeds": seeds, "valid": dv, "test": dt}
            print(f"{name} - {base}, epochs {lo}-{hi - 1}, per seed {seeds}: valid "
                  f"{' '.join(f'{d:+.4f}' for d in dv)} (mean {statistics.mean(dv):+.4f}); test "
                  f"{' '.join(f'{d:+.4f}' for d in dt)} (mean {statistics.mean(dt):+.4f})")
    return {"runs": runs, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["ttq", "throughput", "options", "scale", "eval", "evalrows", "curves"])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k-mm", "amazon-office"], help="evalrows' datasets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=["ours-all-positions"],
                        choices=list(VARIANTS),
                        help="ttq: our variants compared with RecBole's prefix mode (always run); curves: the "
                             "variants to trace, differences taken against the first")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="curves, evalrows: torch threads per run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        modes = {"ttq": ttq, "throughput": throughput, "options": options, "scale": scale, "eval": evaluation,
                 "evalrows": evaluation_rows, "curves": curves}
        result = modes[args.mode](args, workdir)
    os.makedirs(os.path.join(PROJECT, "bench", "out"), exist_ok=True)
    with open(os.path.join(PROJECT, "bench", "out", f"sequential-{args.mode}.json"), "w") as f:
        json.dump({"args": vars(args), "result": result}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
