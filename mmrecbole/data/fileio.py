"""Small file helpers shared by dataset builders and feature tables: atomic writes and content hashes.

Atomic = write to a temporary file in the destination directory, then ``os.replace`` it over the target: a reader
(or a crash halfway) never sees a half-written file, and the temp file lives on the same filesystem so the rename
cannot turn into a copy.
"""
import hashlib
import os
import re
import tempfile
from typing import BinaryIO, Callable

_CHUNK = 1 << 20
# (path, size, mtime_ns) -> sha256; weights files are hashed once per process, not once per provenance check.
_FILE_HASH_CACHE: dict = {}


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: do it once, at import, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# `.<name>.<pid>-<random>.tmp`: the writer's process id says whether a temp file is still being written.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temp_files(directory: str) -> list:
    """Delete the temp files of writes whose process died (killed mid-save: nothing else removes them); returns
    their paths. Temp files of live processes are left alone."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
            except OSError:
                pass
    return removed


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place. Stale temp files that killed
    writers left in that folder are removed first."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temp_files(directory)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-", suffix=".tmp",
                                    dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def write_text_atomically(path: str, text: str, encoding: str = "utf-8") -> None:
    write_atomically(path, lambda handle: handle.write(text.encode(encoding)))


def sha256_file(path: str) -> str:
    """sha256 of a file's bytes, cached per process while its size and mtime are unchanged."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    cached = _FILE_HASH_CACHE.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        cached = _FILE_HASH_CACHE[key] = digest.hexdigest()
    return cached


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Image file suffixes an item's image may have, in order of preference when an item has several.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def images_by_stem(folder: str) -> dict:
    """{file name without suffix: path} of the image files in `folder` (named `<raw item id><suffix>`, suffix any
    case; the first of IMAGE_SUFFIXES wins). The one lookup of the importer and the image feature extractor."""
    found: dict = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            rank = IMAGE_SUFFIXES.index(suffix.lower()) if suffix.lower() in IMAGE_SUFFIXES else -1
            if rank >= 0 and entry.is_file() and (stem not in found or rank < found[stem][0]):
                found[stem] = (rank, entry.path)
    return {stem: path for stem, (_, path) in found.items()}
