"""MMSASRec: SASRec (Kang & McAuley 2018) whose item vectors come from text/image features (+ ID embeddings)."""
import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

from mmrecbole.model.sequential_recommender.mm_base import MMSequentialRecommender, init_like_recbole


class MMSASRec(MMSequentialRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        self.encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=hidden,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.layer_norm = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.build_items(config, dataset, hidden)
        self.apply(lambda module: init_like_recbole(module, config["initializer_range"]))

    def encode_all(self, item_seq, table):
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        hidden = self.dropout(self.layer_norm(table[item_seq] + self.position_embedding(positions)))
        return self.encoder(hidden, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]
