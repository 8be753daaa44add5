"""Serving: a trained model as a self-contained bundle, and top-k recommendations (with explanations) from it.

`mmrecbole.quick_start.write_bundle(checkpoint)` writes `<checkpoint>.bundle` (training writes it too);
`Recommender.load(bundle)` answers requests (docs/serving.md).
"""
from mmrecbole.export import bundle_path_for
from mmrecbole.serving.recommender import RecommendedItem, Recommendations, Recommender
from mmrecbole.serving.stacker import StackerRecommender, is_stacker_folder


def load(path, device=None):
    """A saved model ready to answer requests: a bundle (Recommender) or a saved LGBMStacker folder
    (StackerRecommender)."""
    return StackerRecommender(path, device) if is_stacker_folder(path) else Recommender.load(path, device=device)


__all__ = ["RecommendedItem", "Recommendations", "Recommender", "StackerRecommender", "bundle_path_for", "load"]
