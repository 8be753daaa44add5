"""``python -m mmrecbole.data``: bring a dataset export into mmrecbole in one command.

  import --name=NAME --interactions=FILE [--items=FILE] [--images=DIR]
         [--user=COL --item=COL --time=COL --rating=COL --text=colA,colB] [--item_key=COL]
         [--data_path=DIR] [--force] [--debug]

Files are CSV, TSV, Parquet or JSON lines (by extension: .csv .tsv .parquet .jsonl .ndjson .json). Writes
``dataset/NAME/`` (or ``DIR/NAME/``): ``NAME.inter``, ``NAME.item`` (with --items) and ``NAME.yaml``, then prints a
summary and the next commands. See ``mmrecbole.data.importer``.
A user-fixable problem prints one line on stderr and exits with code 2 (``--debug`` shows the traceback).
"""
import argparse
import sys
from typing import Optional, Sequence

from mmrecbole.errors import ConfigError, run_command


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other user error
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mmrecbole.data", description="Dataset tools.", allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    imp = commands.add_parser("import", allow_abbrev=False,
                              help="CSV/TSV/Parquet/JSON-lines export -> RecBole atomic files + property file")
    imp.add_argument("--name", required=True, help="dataset name: the folder dataset/NAME/ and its file names")
    imp.add_argument("--interactions", required=True, metavar="FILE", help="one row per interaction")
    imp.add_argument("--items", metavar="FILE", help="one row per item: its id and text columns")
    imp.add_argument("--images", metavar="DIR", help="folder of <raw item id>.jpg|.jpeg|.png|.webp files")
    imp.add_argument("--user", metavar="COL", help="user id column (default: user_id or user)")
    imp.add_argument("--item", metavar="COL", help="item id column (default: item_id or item)")
    imp.add_argument("--time", metavar="COL", help="time column, unix seconds or ISO dates (default: timestamp or "
                                                   "time); required by leave-one-out by time")
    imp.add_argument("--rating", metavar="COL", help="rating column (default: rating, when present)")
    imp.add_argument("--text", metavar="COLS", help="comma-separated text columns of --items, in template order "
                                                    "(default: all its other columns)")
    imp.add_argument("--item_key", metavar="COL", help="item id column of --items (default: the interactions' item "
                                                       "column name, else item_id or item)")
    imp.add_argument("--data_path", metavar="DIR", help="parent folder of the dataset (default: the project's "
                                                        "dataset/)")
    imp.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    imp.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _known_options(parser: argparse.ArgumentParser) -> list:
    names = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names += [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    return sorted(set(names))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from mmrecbole.config import closest

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    for token in extras:
        if token.startswith("--"):
            option = token.split("=", 1)[0]
            hint = closest(option, _known_options(parser))
            raise ConfigError(f"unknown option {option}" + (f"; did you mean {hint}?" if hint else "")
                              + " (see --help)")
        raise ConfigError(f"unexpected argument {token!r}: options are given as --key=value (see --help)")
    for key in ("name", "interactions", "items", "images", "user", "item", "time", "rating", "text", "item_key",
                "data_path"):
        if getattr(args, key, None) == "":
            raise ConfigError(f"--{key}= is empty: give a value or leave the option out")
    return args


def cmd_import(args) -> None:
    from mmrecbole.data.importer import ImportOptions, import_dataset

    text = None
    if args.text is not None:
        text = [c.strip() for c in args.text.split(",") if c.strip()]
        if not text:
            raise ConfigError(f"--text={args.text!r} names no column: give comma-separated column names")
    result = import_dataset(ImportOptions(
        name=args.name, interactions=args.interactions, items=args.items, images=args.images, user=args.user,
        item=args.item, time=args.time, rating=args.rating, text=text, item_key=args.item_key,
        data_path=args.data_path, force=args.force,
    ))
    print(result.summary())


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: cmd_import(parse_args(argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
