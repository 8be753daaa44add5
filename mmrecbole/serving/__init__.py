"""Serving: a trained model as a self-contained bundle, and top-k recommendations (with explanations) from it.

`mmrecbole.quick_start.write_bundle(checkpoint)` writes `<checkpoint>.bundle` (training writes it too);
`Recommender.load(bundle)` answers requests (docs/serving.md).
"""
from mmrecbole.serving.bundle import bundle_path_for
from mmrecbole.serving.recommender import RecommendedItem, Recommendations, Recommender

__all__ = ["RecommendedItem", "Recommendations", "Recommender", "bundle_path_for"]
