"""MMSASRec: SASRec (Kang & McAuley 2018) whose item vectors come from text/image features (+ ID embeddings)."""
import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

from mmrecbole.errors import ConfigError
from mmrecbole.model.sequential_recommender.mm_base import MMSequentialRecommender, init_like_recbole


class MMSASRec(MMSequentialRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        self.position_encoding = config["position_encoding"]
        if self.position_encoding == "absolute":  # SASRec's: a learned vector per position, added to the items
            self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        elif self.position_encoding == "relative":
            # A learned bias per head and distance (query position minus key position) on the attention logits, no
            # position vectors: a prediction depends on the order of its history, not on where the sequence starts.
            # That makes a target inside an all_positions window look exactly like the same target read at the end
            # of a prefix row or of an evaluation query, whatever the window's alignment.
            self.distance_bias = nn.Embedding(self.max_seq_length, config["n_heads"])
        else:
            raise ConfigError(f"position_encoding must be 'absolute' or 'relative', got {self.position_encoding!r}")
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
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        mask = self.get_attention_mask(item_seq)  # [B, 1, L, L], additive: 0 where attended, -10000 elsewhere
        hidden = table[item_seq]
        if self.position_encoding == "absolute":
            hidden = hidden + self.position_embedding(positions).unsqueeze(0)
        else:
            distance = (positions.unsqueeze(1) - positions.unsqueeze(0)).clamp(min=0)  # [L, L]; j > p is masked
            mask = mask + self.distance_bias(distance).permute(2, 0, 1).unsqueeze(0)  # [B, heads, L, L]
        hidden = self.dropout(self.layer_norm(hidden))
        return self.encoder(hidden, mask, output_all_encoded_layers=False)[-1]

    def history_attention(self, interaction):
        """The last layer's attention from the last real position over the sequence, averaged over heads (read with
        a hook on the attention dropout, which receives the probabilities; identity in eval mode)."""
        captured = []
        dropout = self.encoder.layer[-1].multi_head_attention.attn_dropout
        handle = dropout.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
        try:
            self._state(interaction, self.items())
        finally:
            handle.remove()
        probs = captured[-1].mean(1)  # [batch, L, L]
        last = (interaction[self.ITEM_SEQ_LEN] - 1).view(-1, 1, 1).expand(-1, 1, probs.shape[-1])
        return probs.gather(1, last).squeeze(1)
