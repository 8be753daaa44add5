"""mmrecbole's sequential models; the registry finds the classes exported here."""
from mmrecbole.model.sequential_recommender.mmgru4rec import MMGRU4Rec
from mmrecbole.model.sequential_recommender.mmsasrec import MMSASRec

__all__ = ["MMSASRec", "MMGRU4Rec"]
