"""Which model classes serving can rebuild from a bundle: RecBole's general and sequential recommenders (ours
included). Context-aware and knowledge-aware models read user/item feature columns when they are built and score
from them, which a bundle does not keep."""
from __future__ import annotations

from mmrecbole.errors import ServingError


def servable(model_class) -> bool:
    from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender

    return isinstance(model_class, type) and issubclass(model_class, (GeneralRecommender, SequentialRecommender))


def check_servable(model_class) -> None:
    if not servable(model_class):
        name = getattr(model_class, "__name__", str(model_class))
        raise ServingError(f"{name} cannot be served: serving supports general and sequential recommenders (built "
                           "from user and item ids, plus item features for content models); context- and "
                           "knowledge-aware models read feature columns a bundle does not keep")
