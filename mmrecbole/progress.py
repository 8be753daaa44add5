"""Progress of long steps (training epochs, feature extraction) for whoever shows it.

The code that does the work calls `report(kind, **fields)`; a front end that wants to show progress registers a
listener with `listening(fn)`. A leaderboard child forwards every event to its parent as a `PROGRESS {json}` line
(mmrecbole.leaderboard.job), which prints them on one updating line (mmrecbole.leaderboard.runner). Without a
listener an event costs one function call: the log file still has the full epoch lines.

Events: `epoch` (model, epoch, start_epoch, score, metric, best, best_epoch, seconds since training started,
epochs_left: see `epochs_left`), `step` (what, done, total: e.g. batches encoded), `log` (model, path).
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_listeners: list = []


def report(kind: str, **fields) -> None:
    for listener in list(_listeners):
        listener({"kind": kind, **fields})


@contextmanager
def listening(listener):
    """Send events to `listener(event: dict)` inside the `with` block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def epochs_left(epoch: int, epochs: int, cur_step: int, stopping_step: int, eval_step: int) -> dict:
    """After `epoch` (0-based): {"budget": epochs the budget still allows, "patience": epochs until RecBole's early
    stopping ends the run if no later validation beats the best (it stops at the validation where `cur_step`
    exceeds `stopping_step`)}. Only the smaller of the two bounds the time left when it is the budget: a better
    validation score resets the patience."""
    return {"budget": max(epochs - epoch - 1, 0), "patience": (stopping_step - cur_step + 1) * max(eval_step, 1)}


def describe(event: dict) -> str:
    """One short line for an event, e.g. `epoch 12: valid ndcg@10 0.1203 (best 0.1210 at 10), 8.1 s/epoch, stops
    within 1.5 min unless validation improves`."""
    if event.get("kind") == "epoch":
        done = event["epoch"] + 1 - event.get("start_epoch", 0)
        per_epoch = event["seconds"] / max(done, 1)
        best = f" (best {event['best']:.4f} at {event['best_epoch']})" if event.get("best_epoch") is not None else ""
        left = event["epochs_left"]
        if left["budget"] <= left["patience"]:
            when = f"at most {_duration(left['budget'] * per_epoch)} left"
        else:
            when = f"stops within {_duration(left['patience'] * per_epoch)} unless validation improves"
        return (f"epoch {event['epoch']}: valid {event['metric']} {event['score']:.4f}{best}, {per_epoch:.1f} "
                f"s/epoch, {when}")
    if event.get("kind") == "step":
        total = f"/{event['total']}" if event.get("total") else ""
        return f"{event['what']}: {event['done']}{total}"
    return str(event)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class StatusLine:
    """Shows the latest progress of a long step: on a terminal one line rewritten in place; elsewhere (a log, CI) a
    line at most every `every` seconds, so the output never goes quiet for long and never floods."""

    def __init__(self, stream=None, every: float = 15.0):
        self.stream = stream or sys.stdout
        self.every = every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last, self._open = 0.0, False

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._open = True
        else:
            now = time.monotonic()
            if now - self._last < self.every:
                return
            self.stream.write(text + "\n")
            self._last = now
        self.stream.flush()

    def clear(self) -> None:
        """Before a normal line is printed: end the in-place line."""
        if self._open:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._open = False
