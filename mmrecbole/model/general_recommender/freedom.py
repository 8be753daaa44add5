"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item kNN graph built from the modality features, plus a
LightGCN user-item graph whose edges are pruned each epoch by degree-sensitive sampling.

    item-item view:  h = S^L e_item,  S = sum_m w_m D^-1/2 A_m D^-1/2,  A_m = top-k cosine neighbours in modality m
    user-item view:  LightGCN over the (pruned, in training) normalised bipartite graph, layer mean
    item vector = LightGCN item vector + h;   user vector = LightGCN user vector
    loss = BPR(user, pos, neg) + reg_weight * sum_m BPR(user, E_m f_pos, E_m f_neg)

The graph is built once from the raw features ("frozen"); the projections E_m are ItemContentEncoder adapters.
Items missing a modality get no edges in that modality's graph. ID embeddings of items unseen in training are zeroed,
and (our extension, `fill_unseen_items`) such an item's missing LightGCN vector is replaced by the graph-weighted
mean of its feature neighbours' LightGCN vectors: without it FREEDOM ranks cold items below every warm item, since
their vectors lack the LightGCN part.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrecbole.errors import ConfigError
from mmrecbole.model.general_recommender.content_base import PairwiseContentRecommender
from mmrecbole.model.layers import ItemContentEncoder, MultiTaskLoss, WarmNegatives, items_in_training


def knn_graph(features, present, k, chunk=1024):
    """Symmetrically normalised kNN graph (cosine, self included) as (indices [2, nnz], values [nnz])."""
    normed = F.normalize(features, dim=1)
    rows, cols = [], []
    candidates = present.nonzero().squeeze(1)
    k = min(k, len(candidates))
    for start in range(0, len(candidates), chunk):
        block = candidates[start:start + chunk]
        similarity = normed[block] @ normed[candidates].T  # bounded memory: chunk x items
        neighbours = candidates[similarity.topk(k, dim=1).indices]
        rows.append(block.unsqueeze(1).expand(-1, k).reshape(-1))
        cols.append(neighbours.reshape(-1))
    rows, cols = torch.cat(rows), torch.cat(cols)
    degree = torch.zeros(len(features)).index_add_(0, rows, torch.ones(len(rows)))
    inv_sqrt = degree.clamp(min=1e-7).pow(-0.5)
    return torch.stack([rows, cols]), inv_sqrt[rows] * inv_sqrt[cols]


class FREEDOM(PairwiseContentRecommender):

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_mm_layers = int(config["n_mm_layers"])
        self.prune_ratio = float(config["edge_prune_ratio"])
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ConfigError(f"edge_prune_ratio must be in [0, 1), got {self.prune_ratio}")
        self.reg_weight = float(config["reg_weight"])
        self.fill_unseen = bool(config["fill_unseen_items"])
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_embedding = nn.Embedding(self.n_items, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.register_buffer("seen_in_training", items_in_training(dataset), persistent=False)
        # Projections of the raw features for the auxiliary BPR terms (FREEDOM's text_trs / image_trs).
        self.items = ItemContentEncoder(config, dataset, dim, fusion="sum", use_id=False)
        self.warm_negatives = WarmNegatives(dataset)
        self.multitask = MultiTaskLoss(config, dim)
        self.loss_names = self.multitask.names

        self._build_item_graph(config)
        self._build_user_item_graph(dataset)
        self.train_graph = None  # set by pre_epoch, before every training epoch

    # -- graphs ---------------------------------------------------------------------------------------------------
    def _build_item_graph(self, config):
        weights = config["mm_graph_weights"] or {}
        unknown = set(weights) - {"text", "image"}
        if unknown:
            raise ConfigError(f"mm_graph_weights names {sorted(unknown)}; modalities are text and image")
        default = 1.0 / len(self.items.modalities)
        indices, values = [], []
        for modality in self.items.modalities:
            index, value = knn_graph(getattr(self.items, f"features_{modality}"),
                                     getattr(self.items, f"mask_{modality}"), int(config["knn_k"]))
            indices.append(index)
            values.append(value * float(weights.get(modality, default)))
        graph = torch.sparse_coo_tensor(torch.cat(indices, 1), torch.cat(values), (self.n_items, self.n_items))
        self.register_buffer("item_graph", graph.coalesce(), persistent=False)

    def _build_user_item_graph(self, dataset):
        matrix = dataset.inter_matrix(form="coo").astype("float32")
        users = torch.from_numpy(matrix.row).long()
        items = torch.from_numpy(matrix.col).long()
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_weights", self._sym_norm(users, items), persistent=False)
        self.register_buffer("full_graph", self._adjacency(users, items), persistent=False)

    def _sym_norm(self, users, items):
        user_degree = torch.bincount(users, minlength=self.n_users).float().clamp(min=1)
        item_degree = torch.bincount(items, minlength=self.n_items).float().clamp(min=1)
        return user_degree[users].pow(-0.5) * item_degree[items].pow(-0.5)

    def _adjacency(self, users, items):
        """Normalised (n_users + n_items)^2 bipartite adjacency from the given edges."""
        values = self._sym_norm(users, items)
        rows = torch.cat([users, items + self.n_users])
        cols = torch.cat([items + self.n_users, users])
        size = self.n_users + self.n_items
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([values, values]), (size, size)).coalesce()

    def pre_epoch(self, epoch):
        """Degree-sensitive edge pruning: keep (1 - edge_prune_ratio) of the edges, sampled with probability
        proportional to 1/sqrt(d_u d_i), and renormalise (FREEDOM re-samples once per epoch)."""
        if self.prune_ratio == 0.0:
            self.train_graph = self.full_graph
            return
        keep = int(len(self.edge_weights) * (1.0 - self.prune_ratio))
        chosen = torch.multinomial(self.edge_weights, keep, replacement=False)
        self.train_graph = self._adjacency(self.edge_users[chosen], self.edge_items[chosen])

    # -- forward --------------------------------------------------------------------------------------------------
    def propagate(self, graph):
        item_ids = self.item_embedding.weight * self.seen_in_training.unsqueeze(1)
        content_view = item_ids
        for _ in range(self.n_mm_layers):
            content_view = torch.sparse.mm(self.item_graph, content_view)
        layer = torch.cat([self.user_embedding.weight, item_ids])
        layers = [layer]
        for _ in range(self.n_ui_layers):
            layer = torch.sparse.mm(graph, layer)
            layers.append(layer)
        mean = torch.stack(layers).mean(0)
        users, items = torch.split(mean, [self.n_users, self.n_items])
        if self.fill_unseen:
            # Items without training interactions have no LightGCN vector; borrow their feature neighbours'.
            unseen = (1.0 - self.seen_in_training).unsqueeze(1)
            unseen[0] = 0.0
            items = items + unseen * torch.sparse.mm(self.item_graph, items)
        return users, items + content_view

    def _bpr(self, user, pos, neg):
        return -F.logsigmoid((user * pos).sum(1) - (user * neg).sum(1)).mean()

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives, negatives = interaction[self.ITEM_ID], self.warm_negatives(interaction[self.NEG_ITEM_ID])
        if self.train_graph is None:
            self.pre_epoch(0)
        user_table, item_table = self.propagate(self.train_graph)
        user = user_table[users]
        rec = self._bpr(user, item_table[positives], item_table[negatives])
        for modality in self.items.modalities:
            projected = self.items.content_vectors(modality)
            rec = rec + self.reg_weight * self._bpr(user, projected[positives], projected[negatives])
        terms = {"rec": rec}
        if self.multitask.wants("rating"):
            terms["rating"] = self.multitask.rating_loss(interaction, user, item_table[positives])
        if self.multitask.wants("align"):
            raise ConfigError("FREEDOM has no per-item ID/content fusion to align; set loss_weights.align to 0")
        return self.multitask.combine(terms)

    def predict(self, interaction):
        user_table, item_table = self.propagate(self.full_graph)
        return (user_table[interaction[self.USER_ID]] * item_table[interaction[self.ITEM_ID]]).sum(1)

    def full_sort_predict(self, interaction):
        user_table, item_table = self.propagate(self.full_graph)
        return (user_table[interaction[self.USER_ID]] @ item_table.T).reshape(-1)
