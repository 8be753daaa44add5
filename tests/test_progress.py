"""Progress events: the bound on epochs left agrees with RecBole's own early stopping; the status line neither
floods a log nor goes quiet on a terminal."""
import io

import pytest
from recbole.utils import early_stopping

from mmrecbole import progress


@pytest.mark.parametrize("cur_step,stopping_step", [(0, 2), (1, 2), (2, 2), (0, 10), (3, 5)])
def test_patience_left_matches_recbole_early_stopping_when_nothing_improves(cur_step, stopping_step):
    best, step, epochs_run = 1.0, cur_step, 0
    while True:  # every later validation scores worse: the longest run RecBole's rule allows
        best, step, stop, _ = early_stopping(0.5, best, step, stopping_step, bigger=True)
        epochs_run += 1
        if stop:
            break
    assert progress.epochs_left(5, 1000, cur_step, stopping_step, eval_step=1)["patience"] == epochs_run
    assert progress.epochs_left(5, 1000, cur_step, stopping_step, eval_step=3)["patience"] == 3 * epochs_run


def test_budget_left():
    assert progress.epochs_left(7, 10, 0, 10, 1)["budget"] == 2
    assert progress.epochs_left(9, 10, 0, 10, 1)["budget"] == 0


def test_describe_an_epoch_says_which_bound_it_gives():
    event = {"kind": "epoch", "model": "BPR", "epoch": 4, "start_epoch": 0, "score": 0.12034, "metric": "ndcg@10",
             "best": 0.121, "best_epoch": 3, "seconds": 40.0, "epochs_left": {"budget": 95, "patience": 9}}
    # patience is no bound on the time left (a better epoch resets it): said as what it is
    assert progress.describe(event) == ("epoch 4: valid ndcg@10 0.1203 (best 0.1210 at 3), 8.0 s/epoch, stops "
                                        "within 72 s unless validation improves")
    event["epochs_left"] = {"budget": 90, "patience": 100}
    assert progress.describe(event).endswith(", 8.0 s/epoch, at most 12.0 min left")  # the budget is a bound


def test_listeners_get_events_only_while_listening():
    seen = []
    with progress.listening(seen.append):
        progress.report("step", what="text features", done=64, total=100)
    progress.report("step", what="ignored", done=1, total=1)
    assert seen == [{"kind": "step", "what": "text features", "done": 64, "total": 100}]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_status_line_rewrites_in_place_on_a_terminal_and_is_rate_limited_elsewhere(monkeypatch):
    terminal = _Terminal()
    line = progress.StatusLine(terminal)
    line.show("a")
    line.show("b")
    line.clear()
    assert terminal.getvalue() == "\r\x1b[Ka\r\x1b[Kb\r\x1b[K"

    clock = iter([100.0, 101.0, 115.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    line = progress.StatusLine(log, every=15.0)
    for text in ("1", "2", "3"):  # at t=100 (first: shown), 101 (too soon), 116 (15 s later: shown)
        line.show(text)
    assert log.getvalue() == "1\n3\n"
