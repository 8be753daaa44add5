"""Leaderboards: many models x seeds under one protocol, cached per run, with statistics and reports."""
from mmrecbole.leaderboard.runner import run_leaderboard
from mmrecbole.leaderboard.spec import LeaderboardSpec, ModelEntry, load_spec, quick_spec

__all__ = ["LeaderboardSpec", "ModelEntry", "load_spec", "quick_spec", "run_leaderboard"]
