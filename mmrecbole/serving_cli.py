"""The serving commands of run_recbole_mm.py (docs/serving.md):

    --bundle    --checkpoint=PATH [--output=FILE]                 write a checkpoint's bundle
    --recommend --checkpoint=PATH --users=1,2,3 | --history=I1,I2 [--k=10] [--explain] [--format=table|json|csv]
                [--include_seen] [--device=cpu|cuda]
    --serve     --checkpoint=PATH [--host=127.0.0.1] [--port=8000] [--device=cpu|cuda]

--checkpoint takes a bundle, a saved LGBMStacker folder, or a checkpoint whose bundle is used (written beside it
first when missing or older).
These flags have their own parser: `--k` here is the list length, not ImplicitItemKNN's `k` setting.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

from mmrecbole.errors import ConfigError

ACTIONS = ("--recommend", "--serve", "--bundle")
FORMATS = ("table", "json", "csv")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message} (see docs/serving.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_recbole_mm.py", allow_abbrev=False, add_help=False)
    action = parser.add_mutually_exclusive_group(required=True)
    for flag in ACTIONS:
        action.add_argument(flag, action="store_true")
    parser.add_argument("--checkpoint", metavar="PATH")
    parser.add_argument("--output", metavar="FILE")
    parser.add_argument("--users", metavar="IDS")
    parser.add_argument("--history", metavar="IDS")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--include_seen", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--debug", action="store_true")
    return parser


def wants_serving(argv) -> bool:
    return any(token in ACTIONS for token in argv)


def _ids(text: str, flag: str) -> list:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise ConfigError(f"--{flag} needs comma-separated ids, e.g. --{flag}=1,2,3")
    return ids


def resolve_bundle(path: str) -> str:
    """A bundle path for --checkpoint: the file itself, or the checkpoint's bundle (written now when it is missing or
    older than the checkpoint)."""
    from mmrecbole import quick_start
    from mmrecbole.export import SUFFIX, bundle_path_for

    if path.endswith(SUFFIX) or os.path.isdir(path):  # a bundle, or a saved LGBMStacker folder
        return path
    bundle = bundle_path_for(path)
    if not os.path.isfile(bundle) or (os.path.isfile(path) and os.path.getmtime(bundle) < os.path.getmtime(path)):
        print(f"writing the serving bundle {os.path.relpath(bundle)} (once)", file=sys.stderr)
        quick_start.write_bundle(path, bundle)
    return bundle


def _shares(item) -> str:
    return "  ".join(f"{name} {share:4.0%}" for name, share in (item.shares or {}).items())


def format_table(answers, recommender, exclude_seen: bool, explain: bool) -> str:
    lines = []
    for answer in answers:
        who = f"user {answer.user}" if answer.user is not None else "the given history"
        seen = "seen items excluded" if exclude_seen else "seen items included"
        lines += ["", f"{recommender.model_name} on {recommender.dataset_name}, {who} ({answer.history_length} "
                      f"history items; {seen})",
                  f"{'rank':>4}  {'item':<10}  {'title':<44}  {'score':>8}  shares"]
        for item in answer.items:
            title = (item.title or "")[:44]
            lines.append(f"{item.rank:>4}  {item.item_id:<10}  {title:<44}  {item.score:>8.4f}  {_shares(item)}")
            for modality, near in (item.neighbours or {}).items() if explain else ():
                closest = "; ".join(f"{n['title'] or n['item_id']} ({n['similarity']:.2f})" for n in near)
                lines.append(f"{'':>18}closest in history by {modality}: {closest}")
        if explain and answer.attention:
            attended = "; ".join(f"{a['title'] or a['item_id']} (#{a['position']} from the end, {a['weight']:.2f})"
                                 for a in answer.attention)
            lines.append(f"attention leaned on: {attended}")
    return "\n".join(lines)


def format_csv(answers) -> str:
    sources = sorted({name for a in answers for item in a.items for name in (item.contributions or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user", "rank", "item_id", "title", "score"] + [f"part_{s}" for s in sources])
    for answer in answers:
        for item in answer.items:
            parts = item.contributions or {}
            writer.writerow([answer.user or "", item.rank, item.item_id, item.title or "", f"{item.score:.6g}"]
                            + [f"{parts[s]:.6g}" if s in parts else "" for s in sources])
    return out.getvalue().rstrip("\n")


def _recommend(args) -> int:
    from mmrecbole import serving

    if bool(args.users) == bool(args.history):
        raise ConfigError("--recommend needs exactly one of --users=ID,ID,... and --history=ITEM,ITEM,...")
    recommender = serving.load(resolve_bundle(args.checkpoint), device=args.device)
    exclude = not args.include_seen
    explain = args.explain or args.format == "table"  # the table always shows the modality shares
    if args.users:
        answers = recommender.recommend(_ids(args.users, "users"), k=args.k, exclude_seen=exclude, explain=explain)
    else:
        answers = [recommender.recommend_history(_ids(args.history, "history"), k=args.k, exclude_seen=exclude,
                                                 explain=explain)]
    if args.format == "json":
        print(json.dumps([a.to_dict() for a in answers], indent=1))
    elif args.format == "csv":
        print(format_csv(answers))
    else:
        print(format_table(answers, recommender, exclude, args.explain))
    return 0


def _serve(args) -> int:
    import uvicorn

    from mmrecbole import serving
    from mmrecbole.serving.http import create_app

    recommender = serving.load(resolve_bundle(args.checkpoint), device=args.device)
    print(f"serving {recommender.model_name} on {recommender.dataset_name} at http://{args.host}:{args.port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    uvicorn.run(create_app(recommender), host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    if not args.checkpoint:
        raise ConfigError("serving needs --checkpoint=PATH (a .bundle, or a checkpoint .pth)")
    if args.bundle:
        from mmrecbole import quick_start
        from mmrecbole.export import bundle_path_for

        path = quick_start.write_bundle(args.checkpoint, args.output or bundle_path_for(args.checkpoint))
        print(f"written: {os.path.relpath(path)}")
        return 0
    if args.recommend:
        return _recommend(args)
    return _serve(args)
