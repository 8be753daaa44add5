"""Command line: `python run_recbole_mm.py --model=SASRec --dataset=ml-100k [--config_files a.yaml b.yaml]
[--key=value ...]`.

Bad input gets one line on stderr and exit code 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from mmrecbole.errors import ConfigError, UserError, run_command


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message over several lines; we want one line
        raise ConfigError(f"{message} (see --help)")


def _model_list_text() -> str:
    from mmrecbole.registry import available_models

    models = available_models()
    width = 100
    ours = textwrap.fill(", ".join(models["mmrecbole"]) or "(none yet)", width, initial_indent="  ",
                         subsequent_indent="  ")
    theirs = textwrap.fill(", ".join(models["recbole"]), width, initial_indent="  ", subsequent_indent="  ")
    return f"models (mmrecbole):\n{ours}\nmodels (RecBole):\n{theirs}"


def build_parser(with_models: bool = False) -> argparse.ArgumentParser:
    epilog = (
        "Any other setting is a --key=value flag (RecBole style), parsed as YAML: --learning_rate=1e-3 "
        "--topk=[10,20] --eval_args='{mode: full}'.\nSettings layer as: RecBole defaults < properties/overall.yaml "
        "< properties/model/<Model>.yaml < properties/dataset/<dataset>.yaml < --config_files < --key=value.\n\n"
    )
    if with_models:
        epilog += ("Serving a trained model (docs/serving.md): --recommend --checkpoint=PATH --users=1,2 [--k=10] "
                   "[--explain] [--format=table|json|csv], --history=I1,I2 for a session; --serve --checkpoint=PATH "
                   "[--host --port]; --bundle --checkpoint=PATH.\n\n")
        epilog += _model_list_text()
    parser = _Parser(
        prog="run_recbole_mm.py",
        description="Train a recommender (RecBole's or mmrecbole's), early-stop on validation, test the best "
        "checkpoint; or evaluate a saved checkpoint.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help (with the model list) and exit")
    parser.add_argument("--model", help="model name, e.g. SASRec, BPR, MMSASRec")
    parser.add_argument("--dataset", help="dataset name: a folder <data_path>/<name>/ of RecBole atomic files")
    parser.add_argument("--config_files", nargs="+", default=[], metavar="FILE",
                        help="YAML files layered in order (space- or comma-separated)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="evaluate this saved checkpoint on valid and test instead of training")
    parser.add_argument("--refit", action="store_true",
                        help="with --checkpoint and --dataset: continue training that model on a grown version of its "
                             "dataset (ids follow raw ids; docs/refit.md)")
    parser.add_argument("--leaderboard", metavar="FILE",
                        help="run a leaderboard file (properties/leaderboard/<name>.yaml): models x seeds, reports in "
                             "leaderboards/<dataset>/")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="with several models in --model (A,B,C): run a quick leaderboard over N seeds")
    parser.add_argument("--force", action="store_true", help="leaderboards: re-run runs that are cached")
    parser.add_argument("--report_only", action="store_true",
                        help="leaderboards: run nothing, report the cached runs (missing ones are listed)")
    parser.add_argument("--readme", action="store_true",
                        help="leaderboards: also refresh the README's generated leaderboard section")
    parser.add_argument("--tune", action="store_true",
                        help="tune --model on --dataset over properties/search/<Model>.yaml (Optuna, validation only, "
                             "pruned, resumable) and write the chosen settings as a property file")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="with --tune: finished trials the study (each row's, on a quick leaderboard) should hold")
    parser.add_argument("--storage", metavar="URL",
                        help="with --tune or a leaderboard: Optuna storage (default sqlite under "
                             "<checkpoint_dir>/tuning/, a board's under leaderboards/<dataset>/tuning/; an RDB URL "
                             "lets several processes share one study)")
    parser.add_argument("--workers", metavar="N",
                        help="leaderboards: runs at a time, an integer >= 1 or auto (overrides the file's jobs; auto: "
                             "one per GPU, each child its own device; on the CPU 1 up to 4 cores, else cores // 4)")
    parser.add_argument("--no_save", action="store_true",
                        help="do not write checkpoints (test then uses the last epoch, not the best)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def parse_args(argv):
    """(namespace, overrides, raw texts) from argv; overrides are `--key=value` flags parsed as YAML, raw texts the
    values as typed."""
    from mmrecbole.config import parse_value

    args, extras = build_parser().parse_known_args(argv)
    files = [f for item in args.config_files for f in item.replace(",", " ").split()]
    overrides, texts = {}, {}
    for token in extras:
        if token.startswith("--") and "=" in token:
            key, value = token[2:].split("=", 1)
            if not key:
                raise ConfigError(f"malformed flag '{token}': expected --key=value")
            if key in overrides:
                raise ConfigError(f"flag --{key} given twice")
            overrides[key] = parse_value(value)
            texts[key] = value
        elif not token.startswith("-") and token.endswith((".yaml", ".yml")) and files:
            files.append(token)  # `--config_files=a.yaml b.yaml`: argparse hands b.yaml over as an extra
        else:
            raise ConfigError(f"unrecognized argument '{token}': settings are given as --key=value (see --help)")
    args.config_files = files
    return args, overrides, texts


def _format_table(result: dict) -> str:
    names = list(result["test"] or result["valid"])
    lines = [f"{'metric':<22}{'valid':>10}{'test':>10}"]
    for name in names:
        valid = result["valid"].get(name)
        test = result["test"].get(name)
        lines.append(f"{name:<22}{'' if valid is None else f'{valid:.4f}':>10}{'' if test is None else f'{test:.4f}':>10}")
    return "\n".join(lines)


def _report_run(result: dict) -> str:
    head = f"{result['model']} on {result['dataset']} (seed {result['seed']})"
    unit = result.get("progress_unit", "epochs")  # pipelines count other steps (e.g. LightGBM's boosting rounds)
    if result.get("fitted_once"):
        stop = "fitted in one pass (no epochs)"
    elif result["stopped_early"]:
        stop = f"early-stopped after {result['epochs_run']} {unit} on valid {result['valid_metric']}"
    elif unit != "epochs":
        stop = f"ran all {result['epochs_budget']} {unit}"
    else:
        stop = (f"stopped at the epoch budget (epochs={result['epochs_budget']}): a quick-start budget, not "
                f"converged; raise --epochs for full training")
    lines = [
        "",
        f"== {head}: {stop}" if result.get("fitted_once") else f"== {head}: best {unit.rstrip('s')} {result['best_epoch']}, {stop}",
        f"   train {result['train_seconds']:.1f} s, test evaluation {result['test_seconds']:.1f} s, "
        f"{result['n_parameters']:,} trainable parameters",
        _format_table(result),
    ]
    lines.extend(result.get("notes") or [])  # what a pipeline adds (e.g. the stacker's candidate recall)
    if result["checkpoint"]:
        lines.append(f"checkpoint: {os.path.relpath(result['checkpoint'])}")
    if result.get("bundle"):
        lines.append(f"bundle:     {os.path.relpath(result['bundle'])} (serve it: --recommend / --serve "
                     f"--checkpoint=...; docs/serving.md)")
    lines.append(f"log:        {os.path.relpath(result['log_file'])}")
    return "\n".join(lines)


def _report_checkpoint(result: dict) -> str:
    training = result.get("training") or {}
    return "\n".join([
        "",
        f"== {result['model']} on {result['dataset']} from {result['checkpoint']} (saved at epoch "
        f"{training.get('epoch')})",
        _format_table(result),
    ])


def _int_or_text(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def _leaderboard(args, overrides, argv) -> int:
    from mmrecbole import PROJECT_ROOT
    from mmrecbole.leaderboard import load_spec, quick_spec, run_leaderboard
    from mmrecbole.leaderboard.report import update_readme

    if args.leaderboard:
        if args.model or args.seeds is not None or overrides:
            raise ConfigError("--leaderboard takes its models, seeds and settings from the file; drop --model, "
                              "--seeds and --key=value flags")
        if args.tune or args.trials is not None:
            raise ConfigError("--leaderboard takes its tuning from the file (tune: {trials: N}); drop --tune and "
                              "--trials")
        spec = load_spec(args.leaderboard)
        if args.dataset and args.dataset != spec.dataset:
            raise ConfigError(f"--dataset={args.dataset} differs from the file's dataset {spec.dataset}")
    else:
        if not args.dataset:
            raise ConfigError("no dataset given: pass --dataset=NAME")
        if args.trials is not None and not args.tune:
            raise ConfigError("--trials goes with --tune")
        if args.tune and args.trials is None:
            raise ConfigError("--tune needs --trials=N (finished trials per row's study)")
        models = [m.strip() for m in args.model.split(",") if m.strip()]
        spec = quick_spec(models, args.dataset, 1 if args.seeds is None else args.seeds, overrides,
                          tune_trials=args.trials if args.tune else None)
    if args.storage:
        spec.storage = args.storage
    if args.workers is not None:
        from mmrecbole.leaderboard.spec import resolve_jobs

        spec.jobs = resolve_jobs(_int_or_text(args.workers), "--workers")
    outcome = run_leaderboard(spec, force=args.force, report_only=args.report_only)
    report = outcome["report"]
    print()
    print(report["markdown"])
    print("written: " + ", ".join(os.path.relpath(p) for p in report["paths"].values()))
    if args.readme:
        command = "python run_recbole_mm.py " + " ".join(
            a for a in argv if a not in ("--readme", "--force", "--report_only"))
        readme = os.path.join(PROJECT_ROOT, "README.md")
        if not report["publishable"]:  # mixed code versions, uncommitted changes or unrecorded runs
            from mmrecbole.provenance import listing

            origin = report["provenance"]
            raise UserError(f"README.md not updated: the {spec.dataset} board is not from one committed code version "
                            f"(runs trained at: {listing(origin['commits'])}; code versions: "
                            f"{listing(origin['code_versions'])}); commit the code and rerun (--force re-trains "
                            "cached runs)")
        if update_readme(readme, spec.dataset, report["markdown"], command, report["paths"]["md"]):
            print(f"README.md leaderboard section for {spec.dataset} refreshed")
        else:
            raise ConfigError(f"README.md has no leaderboard markers for {spec.dataset}")
    return 0


def _tune(args, overrides, texts) -> int:
    from mmrecbole.tuning import tune, write_best

    if not args.tune:
        raise ConfigError("--trials and --storage go with --tune")
    if not args.model or "," in args.model or not args.dataset:
        raise ConfigError("--tune needs one --model=NAME and a --dataset=NAME")
    if args.trials is None:
        raise ConfigError("--tune needs --trials=N (finished trials the study should hold)")

    def on_trial(event):
        value = "" if event["value"] is None else f"{event['value']:.4f}"
        best = "" if event["best"] is None else f", best {event['best']:.4f}"
        print(f"[trial {event['done']}/{event['of']}] #{event['number']} {event['state']} {value}{best}  "
              f"{event['params']}", flush=True)

    result = tune(args.model, args.dataset, args.trials, args.config_files, overrides, texts, storage=args.storage,
                  on_trial=on_trial)
    path = write_best(result, os.path.join(result.output_dir, f"{result.dataset}-{result.model}.yaml"))
    print(f"\n== {result.model} on {result.dataset}: best validation {result.valid_metric} {result.best_value:.4f} "
          f"of {result.trials_complete} complete trials ({result.trials_pruned} pruned), search "
          f"{result.search_seconds:.0f} s")
    print(f"chosen: {result.best_params}")
    print(f"written: {os.path.relpath(path)} (use: --config_files {os.path.relpath(path)}); study "
          f"{result.study_name} in {result.storage}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(lambda: _main(argv), argv)


def _main(argv) -> int:
    if "-h" in argv or "--help" in argv:
        build_parser(with_models=True).print_help()
        return 0
    from mmrecbole import serving_cli

    if serving_cli.wants_serving(argv):  # --recommend / --serve / --bundle: their own flags (docs/serving.md)
        return serving_cli.main(argv)
    args, overrides, texts = parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (the number of seeds of a quick leaderboard), got {args.seeds}")
    from mmrecbole import quick_start

    if args.refit:
        if not args.checkpoint or not args.dataset:
            raise ConfigError("--refit needs --checkpoint=OLD (its bundle beside it) and --dataset=NEW")
        result = quick_start.refit(args.checkpoint, args.dataset, args.config_files, cmd_dict=overrides,
                                   cmd_text=texts, saved=not args.no_save)
        print(_report_run(result))
        print(f"refit of {os.path.relpath(result['parent'])}: {result['refit']}")
        return 0
    if args.checkpoint:
        if overrides:
            flags = " ".join(f"--{k}" for k in overrides)
            raise ConfigError(f"{flags}: settings cannot change a saved checkpoint; --checkpoint evaluates it "
                              "with the settings it was trained with")
        result = quick_start.evaluate_checkpoint(args.checkpoint, args.model, args.dataset)
        print(_report_checkpoint(result))
        return 0
    if args.leaderboard or (args.model and ("," in args.model or args.seeds is not None)):
        return _leaderboard(args, overrides, argv)
    if args.workers is not None:
        raise ConfigError("--workers goes with a leaderboard (--leaderboard=FILE, or --model=A,B --seeds=N); one "
                          "run uses the machine's cores itself")
    if args.tune or args.trials is not None or args.storage:
        return _tune(args, overrides, texts)
    if not args.model:
        raise ConfigError("no model given: pass --model=NAME (run with --help for the list)")
    if not args.dataset:
        raise ConfigError("no dataset given: pass --dataset=NAME, e.g. --dataset=ml-100k")
    result = quick_start.run(args.model, args.dataset, args.config_files, cmd_dict=overrides,
                             cmd_text=texts, saved=not args.no_save)
    if result is None:  # a DDP run whose global rank 0 is another machine's: that machine reports it
        print("this machine's training processes finished; the machine of global rank 0 (--ip) reports the run "
              "and holds its checkpoint")
        return 0
    print(_report_run(result))
    return 0
