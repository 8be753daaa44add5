"""MMGRU4Rec: GRU4Rec (Hidasi et al. 2016, RecBole's variant) whose item vectors come from text/image features."""
import torch.nn as nn

from mmrecbole.model.sequential_recommender.mm_base import MMSequentialRecommender, init_like_recbole


class MMGRU4Rec(MMSequentialRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.input_dropout = nn.Dropout(config["dropout_prob"])
        self.gru = nn.GRU(dim, config["hidden_size"], num_layers=config["num_layers"], bias=False, batch_first=True)
        self.dense = nn.Linear(config["hidden_size"], dim)
        self.build_items(config, dataset, dim)
        self.apply(lambda module: init_like_recbole(module, 0.02))
        for name, weight in self.gru.named_parameters():
            if "weight_ih" in name or "weight_hh" in name:
                nn.init.xavier_uniform_(weight)  # RecBole's GRU4Rec initialisation

    def encode_all(self, item_seq, table):
        output, _ = self.gru(self.input_dropout(table[item_seq]))
        return self.dense(output)
