"""mmrecbole's general (non-sequential) models; the registry finds the classes exported here."""
from mmrecbole.model.general_recommender.freedom import FREEDOM
from mmrecbole.model.general_recommender.pop import Pop
from mmrecbole.model.general_recommender.vbpr import VBPR

__all__ = ["VBPR", "FREEDOM", "Pop"]
