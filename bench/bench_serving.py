"""Serving latency on ml-100k-mm, CPU (issue 20): in process, against implicit's own recommend, and over HTTP.

For each bundle (default: MMSASRec and ImplicitALS trained here with their defaults, seed 2020, unless given):
  load          Recommender.load seconds (after the imports)
  one user      p50 / p95 ms of recommend([user], k=10) over --requests random users (in process)
  explain       p50 / p95 ms of the same with explain=True
  batch         users/s for --batch_users users in batches of 256
  implicit      ImplicitALS only: implicit's AlternatingLeastSquares.recommend on the same factors and the user's same
                history row (filter_already_liked_items), p50 / p95, and the ratio ours / theirs; the top-10s agree
  http          GET /recommend?user=..&k=10 through uvicorn on 127.0.0.1 (one persistent client, one request at a time):
                p50 / p95 and the overhead over the in-process call (p50 difference, ms)

Goal (the issue): one-user p95 <= 10 ms in process for both models; HTTP adds <= 2 ms p50.

  screenshot    with --screenshot PATH: the service's page for --user (default 196) in headless chromium
                (docs/serving-page.png; posters left out unless --with_images: they belong to the shared data)

Usage: .venv/bin/python bench/bench_serving.py [--mmsasrec BUNDLE] [--als BUNDLE] [--requests 300]
       [--batch_users 1000] [--out bench/out/serving.json] [--screenshot docs/serving-page.png --user 196]
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def train(model: str, work: str) -> str:
    from mmrecbole.quick_start import run

    result = run(model, "ml-100k-mm", config_dict={"seed": 2020, "show_progress": False,
                                                  "checkpoint_dir": os.path.join(work, "saved")},
                 log_dir=os.path.join(work, "log"), console_log=False)
    return result["bundle"]


def percentiles(seconds):
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def timed(call, inputs, warmup=20):
    for value in inputs[:warmup]:
        call(value)
    seconds = []
    for value in inputs:
        start = time.perf_counter()
        call(value)
        seconds.append(time.perf_counter() - start)
    return seconds


def implicit_side(recommender, users):
    """implicit's own recommend on the bundle's ALS factors (implicit's row n = RecBole's id n + 1)."""
    import implicit.cpu.als
    import scipy.sparse as sp

    model = recommender.model
    als = implicit.cpu.als.AlternatingLeastSquares(factors=model.factors, regularization=model.regularization)
    als.user_factors = model.user_factors[1:].numpy()
    als.item_factors = model.item_factors[1:].numpy()
    n_items = recommender.n_items - 1
    rows = {}
    for user in users:
        history = np.unique(np.array([recommender.item_index[i] for i in recommender.history_of(user)])) - 1
        rows[user] = sp.csr_matrix((np.ones(len(history), dtype=np.float32), history, [0, len(history)]),
                                   shape=(1, n_items))

    def call(user):
        return als.recommend(recommender.user_index[user] - 1, rows[user], N=10, filter_already_liked_items=True)

    agree = np.mean([[recommender.bundle.item_ids[i + 1] for i in call(u)[0]] ==
                     [i.item_id for i in recommender.recommend([u], k=10)[0].items] for u in users[:100]])
    return call, float(agree)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_side(recommender):
    """(GET /recommend for a user, the service's base URL, stop) with the app under uvicorn in a thread."""
    import httpx
    import uvicorn

    from mmrecbole.serving.http import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(recommender), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base)

    def call(user):
        response = client.get("/recommend", params={"user": user, "k": 10})
        response.raise_for_status()

    return call, base, lambda: (client.close(), setattr(server, "should_exit", True), thread.join())


def screenshot(path, user, target, images=False):
    import shutil
    import subprocess

    from mmrecbole.serving import Recommender

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("--screenshot needs chromium (apt install chromium)")
    recommender = Recommender.load(path, device="cpu")
    if not images:  # the posters are the shared data's: a committed screenshot must not copy them
        recommender.bundle.items["image"] = [None] * len(recommender.bundle.items["image"])
    _, base, stop = http_side(recommender)
    try:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                        "--window-size=1400,1150", f"--screenshot={os.path.abspath(target)}", f"{base}/?user={user}"],
                       check=True, capture_output=True, timeout=180)
    finally:
        stop()
    print(f"written: {target}")


def measure(name, path, args, rng):
    from mmrecbole.serving import Recommender

    recommender = Recommender.load(path, device="cpu")
    users = list(rng.choice(recommender.known_users(), size=args.requests, replace=True))
    row = {"model": recommender.model_name, "bundle": path, "load_s": round(recommender.load_seconds, 3)}
    one = timed(lambda u: recommender.recommend([u], k=10), users)
    row["one_user"] = percentiles(one)
    row["explain"] = percentiles(timed(lambda u: recommender.recommend([u], k=10, explain=True), users[:100]))
    batch_users = list(rng.choice(recommender.known_users(), size=args.batch_users, replace=True))
    start = time.perf_counter()
    recommender.recommend(batch_users, k=10)
    row["batch_users_per_s"] = round(args.batch_users / (time.perf_counter() - start), 1)
    if recommender.model_name == "ImplicitALS":
        call, agree = implicit_side(recommender, users)
        theirs = timed(call, users)
        row["implicit_recommend"] = percentiles(theirs)
        row["ours_over_implicit_p50"] = round(float(np.median(one) / np.median(theirs)), 2)
        row["top10_agree_with_implicit"] = agree
    call, _, stop = http_side(recommender)
    try:
        over_http = timed(call, users)
    finally:
        stop()
    row["http"] = percentiles(over_http)
    row["http_overhead_p50_ms"] = round(float((np.median(over_http) - np.median(one)) * 1000), 3)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmsasrec")
    parser.add_argument("--als")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch_users", type=int, default=1000)
    parser.add_argument("--out", default="bench/out/serving.json")
    parser.add_argument("--screenshot", metavar="PNG")
    parser.add_argument("--user", default="196")
    parser.add_argument("--with_images", action="store_true",
                        help="show the dataset's images in the screenshot (not for committing: they are the data's)")
    args = parser.parse_args()
    if args.screenshot:
        screenshot(args.mmsasrec or train("MMSASRec", tempfile.mkdtemp(prefix="bench-serving-")), args.user,
                   args.screenshot, images=args.with_images)
        return
    import torch

    torch.set_num_threads(1)  # one request at a time, as a web worker serves it
    work = tempfile.mkdtemp(prefix="bench-serving-")
    bundles = {"MMSASRec": args.mmsasrec or train("MMSASRec", work),
               "ImplicitALS": args.als or train("ImplicitALS", work)}
    rng = np.random.default_rng(0)
    rows = [measure(name, path, args, rng) for name, path in bundles.items()]
    for row in rows:
        print(json.dumps(row))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
