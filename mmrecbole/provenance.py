"""Which code computed a run: its code version and its git commit.

The code version is a short sha256 over the contents of every .py file of the mmrecbole package and every .yaml file
under properties/ except the board files of properties/leaderboard/ (sorted relative paths and bytes; __pycache__
excluded), plus the versions of the packages that compute results. It is part of every run's key
(mmrecbole.runs.RunCache: leaderboard runs, the stacker's base models), so a run of other code is never found and
reused; the git commit says where to find that code, and whether it was committed.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from importlib import metadata

from mmrecbole import PROJECT_ROOT, PROPERTIES_DIR

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Board files (properties/leaderboard/) compose runs and compute nothing: what a row changes is in its run's config
#: hash. Left out of the code version, so that adding or editing a board does not invalidate every cached run.
BOARD_FILES_SUBDIR = "leaderboard"
#: Packages whose version can change a run's numbers.
RESULT_PACKAGES = ("recbole", "implicit", "torch", "lightgbm", "numpy", "scipy", "transformers", "torchvision")
NOT_RECORDED = "not recorded"
UNCOMMITTED = "+uncommitted changes"


def _source_files():
    """(relative path with '/', absolute path) of every file the code version covers."""
    for top, suffix in ((PACKAGE_DIR, ".py"), (PROPERTIES_DIR, ".yaml")):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"
                       and os.path.join(folder, d) != os.path.join(PROPERTIES_DIR, BOARD_FILES_SUBDIR)]
            for name in files:
                if name.endswith(suffix):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, PROJECT_ROOT).replace(os.sep, "/"), path


def package_versions() -> dict:
    versions = {}
    for package in RESULT_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def version_of(files, packages: dict) -> str:
    """12 hex digits of sha256 over `files` ((relative path, absolute path) pairs, sorted by relative path: path
    and bytes of each) and `packages` ({name: version})."""
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        with open(path, "rb") as f:
            data = f.read()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    for package, version in sorted(packages.items()):
        digest.update(f"{package}=={version}\0".encode())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The version of the code that computes results in this process (computed once: the code it imported)."""
    return version_of(_source_files(), package_versions())


def code_commit() -> str:
    """Short commit of the working tree, '+uncommitted changes' when the files the code version covers (the package,
    properties/) differ from it, untracked ones included; 'unknown' outside git. Other files (a board's own report,
    the README it updates) do not make a run uncommitted: they compute nothing."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        properties = os.path.relpath(PROPERTIES_DIR, PROJECT_ROOT)
        covered = [os.path.relpath(PACKAGE_DIR, PROJECT_ROOT), properties,
                   ":(exclude)" + os.path.join(properties, BOARD_FILES_SUBDIR)]
        status = subprocess.run(["git", "status", "--porcelain", "--", *covered], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=10)
        dirty = status.stdout.strip() or status.returncode != 0  # a status that failed proves nothing clean
        return (commit + (UNCOMMITTED if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_clean_commit(commit) -> bool:
    return bool(commit) and commit not in (NOT_RECORDED, "unknown") and UNCOMMITTED not in commit


def _counts(values) -> list:
    counts = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def listing(counts) -> str:
    return ", ".join(f"{value} ({n} run{'s' if n != 1 else ''})" for value, n in counts)


#: How every `summarize` line starts (a report finds the line by it).
SUMMARY_STARTS = ("All ", "**WARNING: MIXED board")


def summarize(records, current_commit: str | None = None, current_version: str | None = None) -> dict:
    """Provenance of a board's runs: {"code_versions", "commits" (ordered (value, runs) pairs), "single_commit",
    "publishable", "line"}.

    single_commit: every run has one recorded code version and one clean commit. publishable: every run has one
    recorded code version V, and either every run was trained at a clean commit (several clean commits of one code
    version have identical code) or the report is written at a clean commit whose code version is V (runs trained
    before their changes were committed, the same code). `line` is the board's sentence about it: a plain statement
    when publishable, otherwise a warning that names the mix (and matches `runs trained at:.*uncommitted`)."""
    versions = _counts(r.get("code_version") or NOT_RECORDED for r in records)
    commits = _counts(r.get("commit") or NOT_RECORDED for r in records)
    n = len(records)
    one_version = len(versions) == 1 and versions[0][0] != NOT_RECORDED
    clean = bool(commits) and all(is_clean_commit(c) for c, _ in commits)
    version = versions[0][0] if one_version else None
    checkout_matches = one_version and is_clean_commit(current_commit) and current_version == version
    out = {"code_versions": versions, "commits": commits,
           "single_commit": one_version and clean and len(commits) == 1,
           "publishable": one_version and (clean or checkout_matches)}
    runs = f"{n} run{'s' if n != 1 else ''}"
    if out["single_commit"]:
        out["line"] = f"All {runs} computed by code version {version} at commit {commits[0][0]} (clean checkout)."
    elif one_version and clean:
        out["line"] = (f"All {runs} computed by code version {version} (identical code and package versions) at "
                       f"commits {listing(commits)}.")
    elif out["publishable"]:
        out["line"] = (f"All {runs} computed by code version {version}, the code of commit {current_commit} (clean "
                       f"checkout); they were trained with that code before it was committed, at "
                       f"{listing(commits)}.")
    else:
        problems = []
        recorded = [v for v, _ in versions if v != NOT_RECORDED]
        if len(recorded) > 1:
            problems.append(f"{len(recorded)} code versions")
        if any(v == NOT_RECORDED for v, _ in versions) or any(c == NOT_RECORDED for c, _ in commits):
            problems.append("runs whose code is not recorded")
        if any(UNCOMMITTED in c for c, _ in commits):
            problems.append("uncommitted changes")
        if any(c == "unknown" for c, _ in commits):
            problems.append("runs outside git")
        out["line"] = (f"**WARNING: MIXED board, not from one committed code version "
                       f"({', '.join(problems) or 'no runs'}).** "
                       f"This board's runs trained at: {listing(commits) or NOT_RECORDED}; code versions: "
                       f"{listing(versions) or NOT_RECORDED}. A board from several code versions, uncommitted "
                       "changes or runs without a recorded version is not reproducible from one commit: commit the "
                       "code and rerun (--force re-trains cached runs) before publishing it.")
    return out
