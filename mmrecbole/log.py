"""Logging for one run: a log file per run plus the console, replaced (not stacked) when a process runs again."""
from __future__ import annotations

import logging
import os
import re
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_MARK = "_mmrecbole_handler"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainFormatter(logging.Formatter):
    """RecBole colours its messages with ANSI codes; keep them out of log files (the console keeps them)."""

    def format(self, record):
        return _ANSI.sub("", super().format(record))


def setup_logging(config, log_dir: str = "log", console: bool = True) -> str:
    """Route the root logger (RecBole's trainer logs there) to `log/<model>/<model>-<dataset>-<time>.log`.

    RecBole's own `init_logger` uses `logging.basicConfig`, which does nothing on a second call: in a process that
    runs several models (a leaderboard) every run would log into the first run's file. Returns the log file path.
    """
    return log_to_file(new_log_path(log_dir, config["model"], config["dataset"]), config["state"], console)


def new_log_path(log_dir: str, model: str, dataset: str) -> str:
    """`<log_dir>/<model>/<model>-<dataset>-<time>-<pid>.log` (the folder is created)."""
    folder = os.path.join(log_dir, model)
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(folder, f"{model}-{dataset}-{stamp}-{os.getpid()}.log")


def log_to_file(path: str, state, console: bool = True) -> str:
    """Route the root logger to `path` (appending) and, if `console`, to stderr; our earlier handlers are removed.

    A pipeline that runs other models (each of which calls `setup_logging`) calls this again afterwards to return
    to its own log file."""
    level = _LEVELS.get(str(state or "info").lower(), logging.INFO)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s  %(message)s"))
    handlers = [file_handler]
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s  %(message)s", "%d %b %H:%M:%S"))
        handlers.append(stream)
    for handler in handlers:
        handler.setLevel(level)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    return path
