"""What VBPR and FREEDOM share as models: pairwise training through MMTrainer over item content.

Not exported from the package, so the registry does not list it as a model.
"""
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from mmrecbole.contract import ModelContract


class PairwiseContentRecommender(GeneralRecommender, ModelContract):
    """A general recommender trained on (user, positive, negative) triples whose item side reads feature tables."""

    input_type = InputType.PAIRWISE
    trainer_name = "MMTrainer"  # named loss terms of the multi-task loss; FREEDOM's pre_epoch graph sampling
    uses_item_content = True  # leaderboards tell content models from collaborative-filtering baselines by this
