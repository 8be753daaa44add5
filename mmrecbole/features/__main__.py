"""``python -m mmrecbole.features``: build and inspect item feature tables.

  extract --dataset=ml-100k-mm --modality=text|image|all [--force] [--key=value ...]
  extract ... --shard=i/N        (encode shard i of N, 0 <= i < N; one process or machine per shard)
  extract ... --merge_shards=N   (merge the N shards into the table; see mmrecbole.features.shards)
  inspect --dataset=ml-100k-mm [--items=50,1] [--k=5] [--key=value ...]  (default items: the two most popular)

Settings come from ``properties/dataset/<dataset>.yaml`` (when present), then ``--config_files``, then
``--key=value`` flags (values parsed as YAML, as for models; only feature keys and data_path/ITEM_ID_FIELD are
accepted as flags).
A user-fixable problem prints one line on stderr and exits with code 2 (``--debug`` shows the traceback).
"""
import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmrecbole.errors import ConfigError, run_command

_EXTRA_KEYS = ("data_path", "ITEM_ID_FIELD")
# Settings that are strings: taken verbatim (YAML would read "{movie_title}" as a mapping); only null/~ mean None.
_STRING_KEYS = ("data_path", "ITEM_ID_FIELD", "mm_raw_dir", "image_dir", "text_encoder", "text_encoder_path",
                "text_template", "text_pooling", "image_model", "image_weights", "feature_device")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other user error
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mmrecbole.features", description="Item feature tables (text, image).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    extract = commands.add_parser("extract", help="build (or reuse, when up to date) feature tables")
    inspect = commands.add_parser("inspect", help="coverage per modality and nearest neighbours of a few items")
    for sub in (extract, inspect):
        sub.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k-mm")
        sub.add_argument("--config_files", nargs="+", default=[], metavar="FILE", help="YAML files layered in order")
        sub.add_argument("--debug", action="store_true", help="show full tracebacks")
    extract.add_argument("--modality", default="all", choices=("text", "image", "all"))
    extract.add_argument("--force", action="store_true", help="rebuild even when the stored table is up to date")
    sharding = extract.add_mutually_exclusive_group()
    sharding.add_argument("--shard", default=None, metavar="i/N",
                          help="encode only shard i of N (0 <= i < N), written beside the table")
    sharding.add_argument("--merge_shards", type=int, default=None, metavar="N",
                          help="merge the N shards (all built, none stale) into the table")
    inspect.add_argument("--items", default="", help="raw item ids whose neighbours to list, e.g. 50,1 (default: "
                                                     "the dataset's two most popular items)")
    inspect.add_argument("--k", type=int, default=5, help="neighbours per item (default: 5)")
    return parser


def load_settings(dataset: str, config_files: Sequence[str], flags: Sequence[str]) -> Dict:
    """The feature settings: the dataset's property files (mmrecbole.config.dataset_property_files), then
    --config_files, then --key=value flags, layered and parsed as every mmrecbole configuration is (mmrecbole.config:
    safe YAML with `1e-3` a float, typed values); flags are limited to the feature keys."""
    from mmrecbole.config import (dataset_property_files, describe_source, parse_value, read_layers,
                                  read_yaml_file, type_mismatch)
    from mmrecbole.features.store import FEATURE_DEFAULTS

    allowed = set(FEATURE_DEFAULTS) | set(_EXTRA_KEYS)
    cmd: Dict = {}
    for flag in flags:
        key, sep, value = flag[2:].partition("=") if flag.startswith("--") else ("", "", "")
        if not sep or not key:
            raise ConfigError(f"unrecognized argument {flag!r}: settings are given as --key=value")
        if key not in allowed:
            raise ConfigError(f"unknown feature setting --{key}; known: {', '.join(sorted(allowed))}")
        if key in _STRING_KEYS:  # taken verbatim: YAML would read "{movie_title}" as a mapping
            cmd[key] = None if value in ("null", "~", "") else value
        else:
            cmd[key] = parse_value(value)
    own = [(path, read_yaml_file(path)) for path in dataset_property_files(dataset)]
    layers = own + read_layers(config_files, None, cmd)
    settings: Dict = {}
    for source, values in layers:
        for key, value in values.items():
            expected = type_mismatch(value, FEATURE_DEFAULTS.get(key))
            if expected:
                raise ConfigError(f"feature setting '{key}' in {describe_source(source, key)} must be {expected}, "
                                  f"got {value!r}")
            settings[key] = value
    return settings


def cmd_extract(args, settings) -> None:
    from mmrecbole.features import shards
    from mmrecbole.features.store import dataset_modalities, materialize, plan_features

    shard = shards.parse_shard(args.shard) if args.shard is not None else None
    for modality in dataset_modalities(settings) if args.modality == "all" else (args.modality,):
        job = plan_features(args.dataset, modality, settings)
        if shard is not None:
            table, action = shards.build_shard(job, *shard, force=args.force)
        elif args.merge_shards is not None:
            table, action = shards.merge_shards(job, args.merge_shards)
        else:
            table, action = materialize(job, force=args.force)
        present, total = table.coverage()
        print(f"{modality}: {action}: {present}/{total} items have it, dim {table.dim} -> {table.source}")


def _titles(dataset: str, settings) -> Dict[str, str]:
    from mmrecbole.data import atomic_path, dataset_dir, read_atomic_file
    from mmrecbole.data.atomic_files import TITLE_COLUMNS
    from mmrecbole.features.store import setting

    item_file = atomic_path(dataset_dir(dataset, setting(settings, "data_path")), dataset, "item")
    if not os.path.isfile(item_file):
        return {}
    frame = read_atomic_file(item_file)
    id_field = setting(settings, "ITEM_ID_FIELD")
    title = settings.get("item_title_field") or next((c for c in TITLE_COLUMNS if c in frame.columns), None)
    if title is None:
        return {}
    year = frame["release_year"] if "release_year" in frame.columns else [""] * len(frame)
    return {i: f"{t} ({y})" if y else t for i, t, y in zip(frame[id_field], frame[title], year)}


def nearest_neighbours(table, item_id: str, k: int) -> Optional[List[tuple]]:
    """[(item id, cosine)] of the k items closest to ``item_id`` (None if it lacks this modality)."""
    query = table.vector(item_id)
    if query is None:
        return None
    present = np.flatnonzero(table.mask)
    vectors = table.matrix[present]
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    cosine = vectors @ query / np.maximum(norms, 1e-12)
    ranked = [r for r in np.argsort(-cosine) if table.ids[present[r]] != item_id][:k]
    return [(str(table.ids[present[r]]), float(cosine[r])) for r in ranked]


def cmd_inspect(args, settings) -> None:
    from mmrecbole.data import atomic_path, read_atomic_file
    from mmrecbole.features.store import dataset_modalities, plan_features, setting, stored_status

    titles = _titles(args.dataset, settings)
    id_field = setting(settings, "ITEM_ID_FIELD")
    tables = {}
    for modality in dataset_modalities(settings):
        job = plan_features(args.dataset, modality, settings)
        table, status = stored_status(job)
        if table is None:
            print(f"{modality}: {status} ({job.path}); build it with "
                  f"`python -m mmrecbole.features extract --dataset={args.dataset} --modality={modality}`")
            continue
        tables[modality] = table
        inter = read_atomic_file(atomic_path(os.path.dirname(os.path.dirname(job.path)), args.dataset, "inter"),
                                 columns=[id_field])[id_field]
        with_feature = set(table.ids[table.mask].tolist())
        covered = float(inter.isin(with_feature).mean()) if len(inter) else 0.0
        present, total = table.coverage()
        print(f"{modality}: {status}; {present} of {total} items have it, {total - present} lack it; "
              f"{covered:.1%} of {len(inter)} interactions are on items that have it; dim {table.dim}")
    asked = [i.strip() for i in args.items.split(",") if i.strip()]
    for item_id in asked or (inter.value_counts().index[:2].tolist() if tables else []):
        print(f"\nnearest neighbours of item {item_id} {titles.get(item_id, '')}".rstrip())
        if not any(item_id in table for table in tables.values()):
            print(f"  not an item of {args.dataset}")
            continue
        for modality, table in tables.items():
            neighbours = nearest_neighbours(table, item_id, args.k)
            if neighbours is None:
                print(f"  {modality}: item has no {modality} feature")
                continue
            print(f"  {modality}:")
            for other, cosine in neighbours:
                print(f"    {cosine:6.3f}  {other:>5}  {titles.get(other, '')}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def body():
        args, flags = build_parser().parse_known_args(argv)
        settings = load_settings(args.dataset, args.config_files, flags)
        (cmd_extract if args.command == "extract" else cmd_inspect)(args, settings)

    return run_command(body, argv)


if __name__ == "__main__":
    sys.exit(main())
