"""The build manifest of a generated dataset (``dataset/<name>/build_manifest.json``): input and output hashes, so a
builder called again with the same inputs and intact outputs does nothing, and a hand-edited or truncated output
file is rebuilt."""
import json
import os
from dataclasses import dataclass, field
from typing import Dict

from mmrecbole.data.fileio import sha256_file, write_text_atomically

MANIFEST_NAME = "build_manifest.json"


@dataclass
class BuildResult:
    """What a dataset builder produced: paths, whether it wrote anything, and counts for the log."""

    out_dir: str
    inter_path: str
    item_path: str
    rebuilt: bool
    stats: Dict[str, int] = field(default_factory=dict)


def is_up_to_date(out_dir: str, builder_version: int, input_hashes: Dict[str, str], outputs: Dict[str, str]) -> bool:
    """Whether ``out_dir``'s manifest records this builder version, these inputs and the outputs as they are now."""
    try:
        with open(os.path.join(out_dir, MANIFEST_NAME), "r", encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return False
    if manifest.get("builder_version") != builder_version or manifest.get("inputs") != input_hashes:
        return False
    for name, path in outputs.items():
        # Hashing the outputs too catches a hand-edited or truncated file.
        if not os.path.isfile(path) or manifest.get("outputs", {}).get(name) != sha256_file(path):
            return False
    return True


def write_manifest(out_dir: str, dataset: str, builder_version: int, inputs: Dict[str, str],
                   input_hashes: Dict[str, str], outputs: Dict[str, str], stats: Dict[str, int]) -> None:
    manifest = {
        "dataset": dataset,
        "builder_version": builder_version,
        "inputs": input_hashes,
        "input_paths": inputs,
        "outputs": {name: sha256_file(path) for name, path in outputs.items()},
        "stats": stats,
    }
    write_text_atomically(os.path.join(out_dir, MANIFEST_NAME), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
