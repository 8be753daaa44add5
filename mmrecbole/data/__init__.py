"""Dataset builders: raw sources -> ``dataset/<name>/<name>.inter|.item`` (RecBole atomic files).

``prepare_dataset(name)`` is what the rest of the package calls: it builds a dataset that has a builder when its files
are missing or stale, and otherwise only checks that the atomic files are there.
"""
import os
from typing import Callable, Dict, Optional

from mmrecbole import DATASET_DIR
from mmrecbole.data.atomic_files import atomic_path, read_atomic_file, read_header, write_atomic_file
from mmrecbole.data.amazon_office import build_amazon_office
from mmrecbole.data.manifest import BuildResult
from mmrecbole.data.ml100k_mm import build_ml100k_mm, resolve_raw_dir
from mmrecbole.errors import DatasetError

#: Datasets this package can generate from raw sources; any other dataset must already exist as atomic files.
DATASET_BUILDERS: Dict[str, Callable[..., BuildResult]] = {"ml-100k-mm": build_ml100k_mm,
                                                          "amazon-office": build_amazon_office}


def dataset_dir(dataset_name: str, data_path: Optional[str] = None) -> str:
    """Folder holding ``<name>.inter``. ``data_path`` may be the parent (RecBole's ``data_path`` property, e.g.
    'dataset/') or the dataset's own folder (what RecBole's Config stores after joining the name on)."""
    base = os.path.abspath(os.path.expanduser(data_path or DATASET_DIR))
    if os.path.basename(os.path.normpath(base)) == dataset_name:
        return base
    return os.path.join(base, dataset_name)


def prepare_dataset(
    dataset_name: str, data_path: Optional[str] = None, raw_dir: Optional[str] = None, force: bool = False
) -> str:
    """Make sure ``dataset/<name>/<name>.inter`` exists; returns the dataset folder.

    With a builder: rebuild when the raw inputs changed (cheap hash check) or when ``force``. When the raw inputs
    are not reachable but the atomic files exist (e.g. copied from another machine), those files are used.
    """
    directory = dataset_dir(dataset_name, data_path)
    inter_file = atomic_path(directory, dataset_name, "inter")
    builder = DATASET_BUILDERS.get(dataset_name)
    if builder is not None:
        try:
            builder(out_dir=directory, raw_dir=raw_dir, force=force)
        except DatasetError:
            if force or not os.path.isfile(inter_file):
                raise
    if not os.path.isfile(inter_file):
        raise DatasetError(
            f"dataset {dataset_name!r}: {inter_file} not found. Put RecBole atomic files in {directory} "
            f"(see dataset/README.md) or use a dataset with a builder: {sorted(DATASET_BUILDERS)}"
        )
    return directory


__all__ = [
    "BuildResult",
    "DATASET_BUILDERS",
    "build_amazon_office",
    "atomic_path",
    "build_ml100k_mm",
    "dataset_dir",
    "prepare_dataset",
    "read_atomic_file",
    "read_header",
    "resolve_raw_dir",
    "write_atomic_file",
]
