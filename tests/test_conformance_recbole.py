"""RecBole's baselines we expose, through our registry/trainer/checkpoints, pass the shared conformance tests."""
from tests.conformance import RecommenderConformance

SMALL_SEQ = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.01}


class TestBPR(RecommenderConformance):
    MODEL = "BPR"
    SETTINGS = {"embedding_size": 16, "learning_rate": 0.01}


class TestLightGCN(RecommenderConformance):
    MODEL = "LightGCN"
    SETTINGS = {"embedding_size": 16, "learning_rate": 0.01}


class TestNeuMF(RecommenderConformance):
    MODEL = "NeuMF"
    SETTINGS = {"mf_embedding_size": 8, "mlp_embedding_size": 8, "mlp_hidden_size": [16], "learning_rate": 0.01}


class TestPop(RecommenderConformance):
    MODEL = "Pop"
    GRADIENT_TRAINED = False


class TestItemKNN(RecommenderConformance):
    MODEL = "ItemKNN"
    SETTINGS = {"k": 10}
    GRADIENT_TRAINED = False


class TestSASRec(RecommenderConformance):
    MODEL = "SASRec"
    SETTINGS = SMALL_SEQ


class TestGRU4Rec(RecommenderConformance):
    MODEL = "GRU4Rec"
    SETTINGS = {"embedding_size": 16, "hidden_size": 16, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.01}


class TestBERT4Rec(RecommenderConformance):
    MODEL = "BERT4Rec"
    SETTINGS = SMALL_SEQ
