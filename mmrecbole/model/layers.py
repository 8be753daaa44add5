"""Building blocks shared by every multimodal model.

`ItemContentEncoder` turns frozen item feature tables (text, image) plus an optional item-ID embedding into one
vector per item; `MultiTaskLoss` combines the recommendation loss with auxiliary terms by the weights in YAML.

Dense encoder vectors never pass through RecBole's feature-embedding layers (RecBole issue #2043 collapses a
`float_seq` field to one scalar times one embedding); like UniSRec and MMRec we keep them as frozen tables aligned to
RecBole's item ids and learn small adapters on top.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrecbole.errors import ConfigError
from mmrecbole.features.aligned import checked_modalities, item_content

logger = logging.getLogger(__name__)

ADAPTERS = ("linear", "mlp", "whitening", "moe")
FEATURE_NORMS = ("none", "l2", "standardize")
FUSIONS = ("sum", "concat", "gate", "concat_raw")


def _choice(config, key, allowed):
    value = config[key]
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def _probability(config, key):
    value = config[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be a number in [0, 1), got {value!r}")
    return float(value)


def normalize_features(matrix, mask, how):
    """Put modalities on one scale before the adapters: CNN activations are large and shifted (MobileNetV2 pooled
    features: norms ~ 20), sentence embeddings are unit vectors; unscaled, one modality drowns the other and the ID
    embedding at initialisation. `standardize`: zero mean, unit variance per dimension over the items that have
    the modality; `l2`: unit-norm rows."""
    if how == "none" or not mask.any():
        return matrix
    present = matrix[mask]
    if how == "l2":
        normed = F.normalize(present, dim=1)
    else:
        normed = (present - present.mean(0)) / present.std(0).clamp(min=1e-6)
    out = torch.zeros_like(matrix)
    out[mask] = normed
    return out


class WhiteningAdapter(nn.Module):
    """UniSRec's parametric whitening: a learned centre, then a linear map without bias."""

    def __init__(self, in_dim, out_dim, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.center = nn.Parameter(torch.zeros(in_dim))
        self.linear = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x):
        return self.linear(self.dropout(x) - self.center)


class MixtureOfWhiteningAdapter(nn.Module):
    """UniSRec's mixture-of-experts adaptor (Hou et al., KDD 2022): `experts` parametric-whitening adapters whose
    outputs are mixed per item by a softmax gate over a linear function of the item's features. The gate starts
    uniform (zero weights); in training its logits get Gaussian noise whose scale is learned per item and expert
    (softplus of a second linear map, plus 0.01), as UniSRec's noisy gating does, so that the experts specialise
    instead of moving together. One expert is the plain whitening adapter."""

    NOISE_FLOOR = 1e-2

    def __init__(self, in_dim, out_dim, dropout, experts):
        super().__init__()
        if isinstance(experts, bool) or not isinstance(experts, int) or experts < 1:
            raise ConfigError(f"adapter_experts must be an integer >= 1, got {experts!r}")
        self.experts = nn.ModuleList(WhiteningAdapter(in_dim, out_dim, dropout) for _ in range(experts))
        self.gate = nn.Parameter(torch.zeros(in_dim, experts))
        self.noise = nn.Parameter(torch.zeros(in_dim, experts))

    def gates(self, x):
        """[n, experts] mixing weights of the rows of `x` (noisy in training)."""
        logits = x @ self.gate
        if self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.noise) + self.NOISE_FLOOR)
        return F.softmax(logits, dim=-1)

    def forward(self, x):
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # [n, experts, out_dim]
        return (self.gates(x).unsqueeze(-1) * outputs).sum(dim=-2)


def build_adapter(kind, in_dim, out_dim, dropout, experts=1):
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    if kind == "mlp":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, 2 * out_dim), nn.GELU(), nn.Dropout(dropout),
                             nn.Linear(2 * out_dim, out_dim))
    if kind == "moe":
        return MixtureOfWhiteningAdapter(in_dim, out_dim, dropout, experts)
    return WhiteningAdapter(in_dim, out_dim, dropout)


class ItemContentEncoder(nn.Module):
    """One vector per item from its feature tables and (optionally) its ID embedding.

    Per modality: frozen feature buffer -> adapter (`adapter`: linear | mlp | whitening | moe) -> a learned "missing"
    vector replaces items without that modality (and, in training, items dropped with probability `modality_dropout`).
    Fusion (`fusion`): `sum` of ID embedding and content vectors; `concat` of them followed by a linear projection;
    `gate`: a learned softmax weight per item over the sources; `concat_raw`: plain concatenation (VBPR's layout,
    `out_dim` = dim x sources). `use_id: false` drops the ID embedding (an inductive, ID-free model).

    Items never seen in training have an untrained ID embedding; it is zeroed for them so that they are represented
    by their content alone (cold-start items).
    """

    def __init__(self, config, dataset, dim, modalities=None, fusion=None, use_id=None):
        super().__init__()
        self.dim = dim
        self.modalities = checked_modalities(config["modalities"] if modalities is None else modalities)
        self.use_id = bool(config["use_id"] if use_id is None else use_id)
        if not self.use_id and not self.modalities:
            raise ConfigError("use_id: false needs at least one entry in modalities")
        self.fusion = fusion or _choice(config, "fusion", FUSIONS)
        if fusion is not None and fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {list(FUSIONS)}, got {fusion!r}")
        adapter = _choice(config, "adapter", ADAPTERS)
        experts = config["adapter_experts"] if adapter == "moe" else 1
        adapter_dropout = _probability(config, "adapter_dropout")
        self.modality_dropout = _probability(config, "modality_dropout")
        # DropoutNet's idea (Volkovs et al. 2017): hide some items' ID embeddings in training so that the model also
        # learns to score items from content alone, the only thing it has for items that arrive after training.
        self.id_dropout = _probability(config, "id_dropout") if self.use_id else 0.0
        feature_norm = _choice(config, "feature_norm", FEATURE_NORMS)
        n_items = dataset.item_num

        self.adapters = nn.ModuleDict()
        self.missing = nn.ParameterDict()
        for modality in self.modalities:
            matrix, mask = item_content(dataset, modality)
            matrix = normalize_features(matrix, mask, feature_norm)
            # Persistent: a checkpoint carries the exact features it was trained with.
            self.register_buffer(f"features_{modality}", matrix)
            self.register_buffer(f"mask_{modality}", mask)
            self.adapters[modality] = build_adapter(adapter, matrix.shape[1], dim, adapter_dropout, experts)
            self.missing[modality] = nn.Parameter(torch.randn(dim) * 0.02)

        n_sources = len(self.modalities) + int(self.use_id)
        if self.use_id:
            self.id_embedding = nn.Embedding(n_items, dim, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            self.register_buffer("seen_in_training", items_in_training(dataset), persistent=False)
        if self.fusion == "concat":
            self.project = nn.Linear(n_sources * dim, dim)
        elif self.fusion == "gate":
            self.gate = nn.Linear(n_sources * dim, n_sources)
        self.out_dim = n_sources * dim if self.fusion == "concat_raw" else dim
        self.register_buffer("not_padding", (torch.arange(n_items) > 0).float().unsqueeze(1), persistent=False)

    # -- pieces ---------------------------------------------------------------------------------------------------
    def id_vectors(self):
        """ID embeddings, zero for items unseen in training (and for padding) and, in training, for an `id_dropout`
        share of the items."""
        keep = self.seen_in_training
        if self.training and self.id_dropout > 0:
            keep = keep * (torch.rand(keep.shape, device=keep.device) >= self.id_dropout)
        return self.id_embedding.weight * keep.unsqueeze(1)

    def content_vectors(self, modality):
        features = getattr(self, f"features_{modality}")
        present = getattr(self, f"mask_{modality}")
        if self.training and self.modality_dropout > 0:
            present = present & (torch.rand(present.shape, device=present.device) >= self.modality_dropout)
        adapted = self.adapters[modality](features)
        return torch.where(present.unsqueeze(1), adapted, self.missing[modality].expand_as(adapted))

    def sources(self):
        parts = [self.id_vectors()] if self.use_id else []
        return parts + [self.content_vectors(m) for m in self.modalities]

    # -- the item table ---------------------------------------------------------------------------------------------
    def forward(self):
        """[item_num, out_dim] vectors of all items (row 0, padding, is zero).

        Evaluation and serving call this for every batch or request; without gradients and in eval mode the table is
        kept and reused while no parameter or buffer changed (storage and in-place version of each tensor: an
        optimizer step, load_state_dict or a move to another device all make a new key)."""
        if self.training or torch.is_grad_enabled():
            self._kept_table = None
            return self._fuse()
        key = tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))
        kept = getattr(self, "_kept_table", None)
        if kept is None or kept[0] != key:
            kept = (key, self._fuse())
            self._kept_table = kept
        return kept[1]

    def _fuse(self):
        parts = self.sources()
        if self.fusion == "sum":
            fused = torch.stack(parts).sum(0)
        elif self.fusion == "concat":
            fused = self.project(torch.cat(parts, dim=1))
        elif self.fusion == "concat_raw":
            fused = torch.cat(parts, dim=1)
        else:
            weights = torch.softmax(self.gate(torch.cat(parts, dim=1)), dim=1)
            fused = (torch.stack(parts, dim=1) * weights.unsqueeze(2)).sum(1)
        return fused * self.not_padding

    def source_names(self):
        return (["id"] if self.use_id else []) + list(self.modalities)

    def source_terms(self):
        """(source names, terms [sources, item_num, out_dim], bias [out_dim] or None) with sum(terms) + bias =
        `forward()` for every real item: each source's exact share of the fused vector (sum: its vector; gate: its
        vector times its gate weight; concat: its block of the projection; concat_raw: its block, zeros elsewhere).
        What serving's explanations split a score by."""
        parts = self.sources()
        bias = None
        if self.fusion == "sum":
            terms = torch.stack(parts)
        elif self.fusion == "gate":
            weights = torch.softmax(self.gate(torch.cat(parts, dim=1)), dim=1)
            terms = torch.stack([part * weights[:, s:s + 1] for s, part in enumerate(parts)])
        elif self.fusion == "concat":
            blocks = self.project.weight.split(self.dim, dim=1)  # [dim, dim] per source, in concatenation order
            terms = torch.stack([part @ block.T for part, block in zip(parts, blocks)])
            bias = self.project.bias
        else:
            terms = torch.zeros(len(parts), parts[0].shape[0], self.out_dim, device=parts[0].device)
            for s, part in enumerate(parts):
                terms[s, :, s * self.dim:(s + 1) * self.dim] = part
        return self.source_names(), terms * self.not_padding, bias

    def alignment_loss(self, temperature, sample_size=1024):
        """Symmetric InfoNCE between the ID embedding and the content vector of a random sample of distinct items
        (drawn on the device: no host sync, independent of the batch's duplicates)."""
        if not self.use_id or not self.modalities:
            raise ConfigError("loss_weights.align needs use_id: true and at least one modality")
        n_items = self.id_embedding.num_embeddings
        device = self.id_embedding.weight.device
        items = torch.randperm(n_items - 1, device=device)[: min(sample_size, n_items - 1)] + 1
        id_part = F.normalize(self.id_embedding(items), dim=1)
        content = torch.stack([self.content_vectors(m)[items] for m in self.modalities]).sum(0)
        content = F.normalize(content, dim=1)
        logits = id_part @ content.T / temperature
        labels = torch.arange(len(items), device=device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class WarmNegatives(nn.Module):
    """Cold-start mode (`cold_start_item_ratio` > 0): RecBole's sampler draws BPR negatives from the whole catalogue,
    held-out items included. Trained only as negatives, their content vectors and biases would be pushed below every
    item (a linear adapter separates a few hundred items easily) and a content model could not rank them at test time.
    Such negatives are redrawn uniformly among the training catalogue, on the device (no host sync); a redraw may hit
    one of the user's positives, as uniform sampling without the sampler's exclusion list does. Identity otherwise."""

    def __init__(self, dataset):
        super().__init__()
        is_cold = torch.zeros(dataset.item_num, dtype=torch.bool)
        cold = getattr(dataset, "cold_items", None)
        if cold is not None:
            is_cold[cold] = True
        self.active = bool(is_cold.any())
        self.register_buffer("is_cold", is_cold, persistent=False)
        self.register_buffer("warm", (~is_cold).nonzero().squeeze(1)[1:], persistent=False)  # [1:]: not padding

    def forward(self, negatives):
        if not self.active:
            return negatives
        redrawn = self.warm[torch.randint(len(self.warm), negatives.shape, device=negatives.device)]
        return torch.where(self.is_cold[negatives], redrawn, negatives)


def items_in_training(dataset):
    """1.0 for items that occur in this (training) dataset, as target or in an input sequence."""
    seen = torch.zeros(dataset.item_num)
    inter = dataset.inter_feat
    seen[inter[dataset.iid_field]] = 1.0
    seq_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
    if seq_field in inter:
        seen[inter[seq_field].flatten()] = 1.0
    seen[0] = 0.0
    return seen


class MultiTaskLoss(nn.Module):
    """L = sum_k w_k L_k over `loss_weights: {rec: 1.0, align: 0.1, rating: 0.0}`.

    `rec` is the model's recommendation loss; `align` the ID/content InfoNCE (ItemContentEncoder.alignment_loss);
    `rating` a regression head on the interaction's rating (MSE); `extra_terms` the model's own terms (sequential
    models: `ssl`, the sequence contrast of model/sequence_contrast.py). Terms with weight 0 are not computed. `combine`
    returns the weighted terms as a tuple in `names` order: RecBole's trainer sums a tuple for the backward pass and
    logs each element; MMTrainer labels them with `names`.
    """

    KNOWN = ("rec", "align", "rating")

    def __init__(self, config, dim, extra_terms=()):
        super().__init__()
        known = list(self.KNOWN) + list(extra_terms)
        weights = dict(config["loss_weights"] or {"rec": 1.0})
        unknown = set(weights) - set(known)
        if unknown:
            raise ConfigError(f"loss_weights has unknown terms {sorted(unknown)} for {config['model']}; "
                              f"known: {known}")
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"loss_weights.{name} must be a number >= 0, got {weight!r}")
        if weights.get("rec", 0) <= 0:
            raise ConfigError("loss_weights.rec must be > 0 (the recommendation loss)")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.names = [k for k in known if k in self.weights]
        self.temperature = float(config["align_temperature"])
        if self.temperature <= 0:
            raise ConfigError(f"align_temperature must be > 0, got {self.temperature}")
        if "rating" in self.weights:
            self.rating_field = config["RATING_FIELD"]
            self.rating_head = nn.Linear(dim, 1)

    def wants(self, name):
        return name in self.weights

    def rating_loss(self, interaction, user_side, item_side):
        if self.rating_field not in interaction:
            raise ConfigError(
                f"loss_weights.rating needs the '{self.rating_field}' column: add it to load_col.inter"
            )
        predicted = self.rating_head(user_side * item_side).squeeze(1)
        return F.mse_loss(predicted, interaction[self.rating_field].float())

    def combine(self, terms):
        values = tuple(self.weights[name] * terms[name] for name in self.names)
        return values if len(values) > 1 else values[0]
