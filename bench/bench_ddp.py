"""DDP wall time: one process vs `nproc` processes (gloo on the CPU, NCCL on GPUs), side by side, same settings.

Each round trains every model once per process count for a fixed number of epochs (validation once, at the end),
interleaved, and prints seconds per training epoch, the ratio, and the test metrics of both (not bit-equal: each
rank draws its own negatives and dropout). On the CPU both sides get the same cores: one process uses all of them,
each of the N processes 1/N of them.

Usage: .venv/bin/python bench/bench_ddp.py [--dataset ml-100k] [--models BPR MMSASRec] [--nproc 2] [--epochs 5]
       [--rounds 2] [--gpu]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

#: Per-model settings: MMSASRec without modalities is the ID-only transformer, trained on all_positions windows.
MODEL_SETTINGS = {"MMSASRec": {"modalities": []}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=["BPR", "MMSASRec"])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="one GPU per process (gpu_id 0..nproc-1)")
    args = parser.parse_args()

    import torch

    from mmrecbole.quick_start import run

    cores = os.cpu_count() or 1
    base = {"state": "WARNING", "show_progress": False, "epochs": args.epochs, "eval_step": args.epochs,
            "stopping_step": 1000, "save_bundle": False, "use_gpu": args.gpu,
            "gpu_id": ",".join(str(i) for i in range(args.nproc)) if args.gpu else ""}
    print(f"{args.dataset}, {args.epochs} epochs, {args.rounds} rounds, {'GPU' if args.gpu else f'CPU, {cores} cores'}")
    for model in args.models:
        seconds = {1: [], args.nproc: []}
        tests = {}
        for _ in range(args.rounds):
            for nproc in seconds:
                threads = max(1, cores // nproc)
                os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the spawned ranks' torch at import
                torch.set_num_threads(threads)
                start = time.perf_counter()
                result = run(model, args.dataset, config_dict={**base, **MODEL_SETTINGS.get(model, {}),
                                                               "nproc": nproc}, console_log=False)
                wall = time.perf_counter() - start
                seconds[nproc].append(result["train_seconds"] / args.epochs)
                tests[nproc] = result["test"]
                print(f"  {model} nproc={nproc}: {seconds[nproc][-1]:.2f} s/epoch (run wall {wall:.1f} s)", flush=True)
        one, many = min(seconds[1]), min(seconds[args.nproc])
        print(f"{model}: best s/epoch 1 process {one:.2f}, {args.nproc} processes {many:.2f}: "
              f"{one / many:.2f}x speed-up")
        for nproc, test in tests.items():
            print(f"  test nproc={nproc}: ndcg@10 {test.get('ndcg@10', float('nan')):.4f}, "
                  f"recall@20 {test.get('recall@20', float('nan')):.4f}")


if __name__ == "__main__":
    main()
