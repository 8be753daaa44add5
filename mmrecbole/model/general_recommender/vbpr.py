"""VBPR (He & McAuley, AAAI 2016): BPR-MF whose item factors are extended with projected content features.

score(u, i) = <theta_u, [gamma_i ; E_text f_i ; E_image g_i]> + beta_i + beta'.f_i + beta''.g_i
(the user's global bias cancels in the pairwise loss). The original uses one visual feature; with several
modalities each gets its own projection E and content bias beta'. The item side is ItemContentEncoder with
`fusion: concat_raw` (other fusions give a single `embedding_size` item vector).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrecbole.model.general_recommender.content_base import PairwiseContentRecommender
from mmrecbole.model.layers import ItemContentEncoder, MultiTaskLoss, WarmNegatives


class VBPR(PairwiseContentRecommender):

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.items = ItemContentEncoder(config, dataset, config["embedding_size"])
        self.warm_negatives = WarmNegatives(dataset)
        dim = self.items.out_dim
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.content_bias = nn.ModuleDict(
            {m: nn.Linear(getattr(self.items, f"features_{m}").shape[1], 1, bias=False) for m in self.items.modalities}
        )
        self.reg_weight = float(config["reg_weight"])
        self.multitask = MultiTaskLoss(config, dim)
        self.loss_names = self.multitask.names
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.zeros_(self.item_bias.weight)
        for layer in self.content_bias.values():
            nn.init.zeros_(layer.weight)

    def item_table(self):
        """(vectors [item_num, dim], biases [item_num])."""
        bias = self.item_bias.weight.squeeze(1)
        for modality, layer in self.content_bias.items():
            features = getattr(self.items, f"features_{modality}")  # zero rows where the modality is missing
            bias = bias + layer(features).squeeze(1)
        return self.items(), bias

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives, negatives = interaction[self.ITEM_ID], self.warm_negatives(interaction[self.NEG_ITEM_ID])
        vectors, bias = self.item_table()
        user = self.user_embedding(users)
        pos, neg = vectors[positives], vectors[negatives]
        margin = (user * pos).sum(1) + bias[positives] - (user * neg).sum(1) - bias[negatives]
        l2 = (user.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum()) / (2 * len(users))
        terms = {"rec": -F.logsigmoid(margin).mean() + self.reg_weight * l2}
        if self.multitask.wants("align"):
            terms["align"] = self.items.alignment_loss(self.multitask.temperature)
        if self.multitask.wants("rating"):
            terms["rating"] = self.multitask.rating_loss(interaction, user, pos)
        return self.multitask.combine(terms)

    def predict(self, interaction):
        vectors, bias = self.item_table()
        items = interaction[self.ITEM_ID]
        return (self.user_embedding(interaction[self.USER_ID]) * vectors[items]).sum(1) + bias[items]

    def full_sort_predict(self, interaction):
        vectors, bias = self.item_table()
        scores = self.user_embedding(interaction[self.USER_ID]) @ vectors.T + bias
        return scores.reshape(-1)


    def score_parts(self, interaction, items):
        """score(u, i) = u . v_i + item bias + sum_m content bias_m(f_im), v_i = the fused sources: each source's
        part is u . its fusion term (ItemContentEncoder.source_terms), the item bias going to "id" and each content
        bias to its modality (to "bias" when the model has no ID source)."""
        user = self.user_embedding(interaction[self.USER_ID])
        names, terms, fusion_bias = self.items.source_terms()
        parts = torch.einsum("bd,sbkd->bks", user, terms[:, items])
        extra = {}
        id_bias = self.item_bias.weight.squeeze(1)[items]
        if "id" in names:
            parts[:, :, names.index("id")] += id_bias
        else:
            extra["bias"] = id_bias
        for modality, layer in self.content_bias.items():
            parts[:, :, names.index(modality)] += layer(getattr(self.items, f"features_{modality}")).squeeze(1)[items]
        if fusion_bias is not None:
            extra["bias"] = extra.get("bias", 0) + user @ fusion_bias.view(-1, 1)
        if extra:
            names = names + ["bias"]
            parts = torch.cat([parts, torch.as_tensor(extra["bias"]).expand(items.shape).unsqueeze(2)], dim=2)
        return names, parts
