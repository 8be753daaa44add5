"""Training batches: RecBole 1.2.1's Interaction indexing (a Python list) vs ours (a tensor), side by side.

mmrecbole.compat replaces Interaction.__getitem__ so that an array or tensor index stays a tensor (RecBole turns it
into a list first). This times one training epoch of BPR, the model whose batches index most (rows, joined
features, sampled negatives), with RecBole's own method put back and with ours, in interleaved rounds, each from
the same seed, initial weights and fresh dataloaders, and checks that both give the same loss (same batches, same
numbers).

Usage: .venv/bin/python bench/bench_batches.py [--datasets ml-100k-mm amazon-office] [--rounds 5] [--threads 1]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k-mm", "amazon-office"])
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (leaderboard children of make run: 1)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from recbole.data.interaction import Interaction

    from mmrecbole import compat
    from mmrecbole.config import Config
    from mmrecbole.quick_start import build
    from mmrecbole.trainer import make_trainer

    torch.set_num_threads(args.threads)
    methods = {"recbole (list index)": compat._recbole_interaction_rows, "ours (tensor index)": Interaction.__getitem__}
    for dataset in args.datasets:
        config = Config(args.model, dataset, config_dict={"state": "WARNING", "show_progress": False})
        seconds = {name: [] for name in methods}
        losses = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, method in methods.items():
                Interaction.__getitem__ = method
                _, train, _, _, model = build(config)  # fresh dataloaders: their sampler's generator restarts too
                trainer = make_trainer(config, model)
                start = time.perf_counter()
                loss = trainer._train_epoch(train, 0)
                seconds[name].append(time.perf_counter() - start)
                losses[name].append(float(loss if not isinstance(loss, tuple) else sum(loss)))
        Interaction.__getitem__ = methods["ours (tensor index)"]
        best = {name: min(values) for name, values in seconds.items()}
        median = {name: float(np.median(values)) for name, values in seconds.items()}
        same = len({tuple(values) for values in losses.values()}) == 1
        print(f"{dataset}, {args.model}, one training epoch, {args.threads} thread(s), {args.rounds} rounds:")
        for name in methods:
            print(f"  {name:22s} best {best[name]:.3f} s, median {median[name]:.3f} s, loss {losses[name][0]:.6f}")
        ours, theirs = "ours (tensor index)", "recbole (list index)"
        print(f"  ours / recbole: {best[ours] / best[theirs]:.2f}x (best), {median[ours] / median[theirs]:.2f}x "
              f"(median); same loss every round: {same}")
        if not same:
            raise SystemExit("the two indexing paths gave different losses")


if __name__ == "__main__":
    main()
