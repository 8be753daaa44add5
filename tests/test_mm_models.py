"""Multimodal models: the shared contract, the planted known answer, cold-start items, missing modalities."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from mmrecbole import compat
from mmrecbole.data.build import build_dataloaders, create_dataset
from mmrecbole.features import attach_item_content
from mmrecbole.config import Config, settings_for
from mmrecbole.errors import ConfigError
from mmrecbole.model.layers import ItemContentEncoder
from mmrecbole.quick_start import build, run
from tests.conformance import RecommenderConformance
from tests.planted import FAST
from tests.planted_mm import write_planted_mm

SEQ = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005}
# Our sequential models train windows overlapping by window_context items (default 25, for 50-item windows).
MM_SEQ = {**SEQ, "window_context": 4}
GRU = {"embedding_size": 32, "hidden_size": 32, "MAX_ITEM_LIST_LENGTH": 10, "learning_rate": 0.005,
       "window_context": 4}
GENERAL = {"embedding_size": 32, "learning_rate": 0.01}
EVAL = {**FAST, "topk": [10], "metrics": ["Hit", "NDCG"], "valid_metric": "NDCG@10"}


@pytest.fixture(scope="module")
def planted_mm(tmp_path_factory):
    """(data_path, feature files, cold item tokens) of the planted multimodal dataset (tests/planted_mm.py)."""
    return write_planted_mm(tmp_path_factory.mktemp("mm"))


class _OnPlantedMM(RecommenderConformance):
    DATASET = "plantedmm"

    @pytest.fixture
    def data_path(self, planted_mm):
        return planted_mm[0]

    def make_config(self, data_path, **extra):
        files = {m: f"{data_path}/plantedmm/{m}-planted.npz" for m in ("text", "image")}
        return super().make_config(data_path, mm_feature_files=files, **extra)


class TestMMSASRec(_OnPlantedMM):
    # Its defaults: all_positions, relative positions (RecBole's prefix-mode quality at a fraction of its time).
    MODEL = "MMSASRec"
    SETTINGS = {**MM_SEQ, "window_batch_size": 8}


class TestMMSASRecPrefixAbsolute(_OnPlantedMM):
    # RecBole's way of training SASRec (prefix rows, absolute positions), with the multi-task loss.
    MODEL = "MMSASRec"
    SETTINGS = {**SEQ, "train_mode": "prefix", "position_encoding": "absolute",
                "loss_weights": {"rec": 1.0, "align": 0.1, "rating": 0.01}}


class TestMMGRU4Rec(_OnPlantedMM):
    MODEL = "MMGRU4Rec"
    SETTINGS = {**GRU, "fusion": "gate", "adapter": "whitening"}


class TestVBPR(_OnPlantedMM):
    MODEL = "VBPR"
    SETTINGS = GENERAL


class TestFREEDOM(_OnPlantedMM):
    MODEL = "FREEDOM"
    SETTINGS = GENERAL


def _run(model, planted_mm, **extra):
    data_path, files, _ = planted_mm
    settings = {**EVAL, "data_path": data_path, "mm_feature_files": files, "epochs": 40, "stopping_step": 10, **extra}
    return run(model, "plantedmm", config_dict=settings, console_log=False)


def test_mmsasrec_reads_the_planted_rule_that_sasrec_cannot(planted_mm):
    # 15% of the items occur only as test targets: SASRec cannot rank them, MMSASRec reads the rule from features.
    sasrec = _run("SASRec", planted_mm, **SEQ)["test"]["hit@10"]
    # Trained as SASRec is (prefix rows, absolute positions): the difference is the item content alone.
    mmsasrec = _run("MMSASRec", planted_mm, **SEQ, train_mode="prefix", position_encoding="absolute")["test"]["hit@10"]
    assert mmsasrec >= 0.95 and mmsasrec >= sasrec + 0.1, (sasrec, mmsasrec)


@pytest.mark.parametrize("model", ["VBPR", "FREEDOM"])
def test_content_aware_general_models_beat_bpr(planted_mm, model):
    bpr = _run("BPR", planted_mm, **GENERAL, epochs=60)["test"]["hit@10"]
    content = _run(model, planted_mm, **GENERAL, epochs=60)["test"]["hit@10"]
    assert content >= bpr + 0.04, (bpr, content)


def test_cold_start_mode_only_content_models_rank_held_out_items(tmp_path):
    data_path, files, _ = write_planted_mm(tmp_path, cold_share=0.0)
    settings = {**EVAL, "topk": [10], "metrics": ["Recall"], "valid_metric": "Recall@10", "data_path": data_path,
                "mm_feature_files": files, "cold_start_item_ratio": 0.2, "epochs": 30, **MM_SEQ}
    mm = run("MMSASRec", "plantedmm", config_dict=settings, console_log=False)["test"]["recall@10"]
    ids_only = run("SASRec", "plantedmm", config_dict=settings_for("SASRec", settings),
                   console_log=False)["test"]["recall@10"]
    popularity = run("Pop", "plantedmm", config_dict=settings_for("Pop", settings),
                     console_log=False)["test"]["recall@10"]
    # Chance is 10/160: an ID-only model has never seen these items and ranks them below every trained one.
    assert mm >= 0.5 and ids_only <= 0.1 and popularity == 0.0, (mm, ids_only, popularity)


def test_cold_start_items_never_reach_training(tmp_path):
    data_path, files, _ = write_planted_mm(tmp_path, cold_share=0.0)
    config = Config("SASRec", "plantedmm", config_dict={**FAST, "data_path": data_path, "cold_start_item_ratio": 0.2})
    dataset, train, valid, test, _ = build(config)
    cold = set(dataset.cold_items.tolist())
    train_items = set(train._dataset.inter_feat["item_id"].tolist()) | set(
        train._dataset.inter_feat["item_id_list"].flatten().tolist())
    assert not cold & train_items
    assert not cold & set(valid._dataset.inter_feat["item_id"].tolist())
    assert set(test._dataset.inter_feat["item_id"].tolist()) <= cold and len(test._dataset.inter_feat) > 0


def _cold_start_model(tmp_path, model, settings):
    data_path, files, _ = write_planted_mm(tmp_path, cold_share=0.0)
    config = Config(model, "plantedmm", config_dict={**FAST, **settings, "data_path": data_path,
                                                     "mm_feature_files": files, "cold_start_item_ratio": 0.2})
    dataset, train, _, _, built = build(config)
    return dataset.cold_items, next(iter(train)), built


@pytest.mark.parametrize("model, settings, train_mode", [("MMSASRec", MM_SEQ, "all_positions"),
                                                         ("MMSASRec", MM_SEQ, "prefix"), ("VBPR", GENERAL, None)])
def test_cold_start_training_loss_is_blind_to_held_out_items(tmp_path, model, settings, train_mode):
    # Held-out items must not even be negatives: otherwise training pushes their content vectors down and a content
    # model cannot rank them at test time (MMSASRec scored Recall@20 = 0.0 on ml-100k-mm cold items that way).
    extra = {"train_mode": train_mode} if train_mode else {}
    cold, batch, built = _cold_start_model(tmp_path, model, {**settings, **extra})
    built.eval()  # no dropout: two loss evaluations differ only by the features of held-out items

    def loss():
        torch.manual_seed(0)
        return built.calculate_loss(batch)

    before = loss()
    with torch.no_grad():
        for modality in built.items.modalities:
            getattr(built.items, f"features_{modality}")[cold] += 3.0
    assert torch.isfinite(before) and torch.allclose(loss(), before, atol=1e-6)


def test_warm_negatives_replace_held_out_items_only(tmp_path):
    cold, _, built = _cold_start_model(tmp_path, "FREEDOM", GENERAL)
    items = torch.arange(1, built.n_items).repeat(20)
    drawn = built.warm_negatives(items)
    is_cold = torch.isin(items, cold)
    assert is_cold.any() and not torch.isin(drawn, cold).any()
    assert torch.equal(drawn[~is_cold], items[~is_cold]) and (drawn > 0).all()


def _encoder(planted_mm, **extra):
    data_path, files, _ = planted_mm
    config = Config("MMSASRec", "plantedmm", config_dict={**FAST, **MM_SEQ, "data_path": data_path,
                                                          "mm_feature_files": files, **extra})
    dataset = create_dataset(config)
    train, _, _ = build_dataloaders(config, dataset)
    attach_item_content(config, compat.dataset_of(train))
    return ItemContentEncoder(config, compat.dataset_of(train), 32), dataset


def test_feature_tables_are_loaded_before_the_model_is_built_never_inside_it(planted_mm, monkeypatch):
    data_path, files, _ = planted_mm
    config = Config("MMSASRec", "plantedmm", config_dict={**FAST, **MM_SEQ, "data_path": data_path,
                                                          "mm_feature_files": files})
    train, _, _ = build_dataloaders(config, create_dataset(config))
    with pytest.raises(ConfigError, match="text feature table was not loaded"):
        config.model_class(config, compat.dataset_of(train))
    import mmrecbole.features.aligned as aligned

    loaded = []
    real = aligned.aligned_features
    monkeypatch.setattr(aligned, "aligned_features", lambda *a: loaded.append(a[2]) or real(*a))
    _, train, _, _, model = build(config)  # the pipeline loads both tables first, then builds the model
    assert loaded == ["text", "image"] and model.items.modalities == ["text", "image"]
    monkeypatch.setattr(aligned, "aligned_features", lambda *a: pytest.fail("the model loaded a table itself"))
    config.model_class(config, compat.dataset_of(train))  # tables already attached: construction reads them only


def test_items_missing_a_modality_get_finite_distinct_vectors(planted_mm):
    encoder, _ = _encoder(planted_mm, use_id=False)
    encoder.eval()
    vectors = encoder()
    no_image = (~encoder.mask_image).nonzero().squeeze(1)
    no_image = no_image[no_image > 0]
    assert len(no_image) > 5 and torch.isfinite(vectors).all()
    assert torch.cdist(vectors[no_image], vectors[no_image]).add(torch.eye(len(no_image))).min() > 1e-4
    assert torch.equal(vectors[0], torch.zeros(32))  # padding


def test_modality_dropout_only_in_training(planted_mm):
    encoder, _ = _encoder(planted_mm, modality_dropout=0.5)
    encoder.eval()
    assert torch.equal(encoder(), encoder())
    encoder.train()
    torch.manual_seed(0)
    assert not torch.equal(encoder(), encoder())


def test_id_dropout_hides_id_embeddings_only_in_training(planted_mm):
    encoder, _ = _encoder(planted_mm, id_dropout=0.5)
    seen = encoder.seen_in_training.bool()
    encoder.eval()
    assert (encoder.id_vectors()[seen].abs().sum(1) > 0).all()
    encoder.train()
    torch.manual_seed(0)
    hidden = (encoder.id_vectors()[seen].abs().sum(1) == 0).float().mean().item()
    assert 0.35 < hidden < 0.65, hidden
    with pytest.raises(ConfigError, match="id_dropout"):
        _encoder(planted_mm, id_dropout=1.0)


@pytest.mark.parametrize("fusion", ["sum", "concat", "gate", "concat_raw"])
@pytest.mark.parametrize("adapter", ["linear", "mlp", "whitening", "moe"])
def test_every_fusion_and_adapter_builds_item_vectors(planted_mm, fusion, adapter):
    encoder, dataset = _encoder(planted_mm, fusion=fusion, adapter=adapter)
    vectors = encoder()
    width = 32 * 3 if fusion == "concat_raw" else 32
    assert vectors.shape == (dataset.item_num, width) and torch.isfinite(vectors).all()


def test_the_mixture_of_experts_adapter_mixes_whitening_experts_by_a_per_item_gate():
    from mmrecbole.model.layers import MixtureOfWhiteningAdapter, WhiteningAdapter

    torch.manual_seed(0)
    x = torch.randn(6, 5)
    moe = MixtureOfWhiteningAdapter(5, 3, dropout=0.0, experts=3).eval()
    for expert in moe.experts:
        nn.init.normal_(expert.center)
    # zero gate weights: every item averages its experts
    expected = sum(expert(x) for expert in moe.experts) / 3
    torch.testing.assert_close(moe(x), expected)
    # a gate that sends item rows to one expert each, by the sign of the first feature: a numpy reference
    with torch.no_grad():
        moe.gate.zero_()
        moe.gate[0, 0], moe.gate[0, 2] = 50.0, -50.0
    w = [e.linear.weight.detach().numpy() for e in moe.experts]
    c = [e.center.detach().numpy() for e in moe.experts]
    xn = x.numpy()
    logits = xn @ moe.gate.detach().numpy()
    g = np.exp(logits - logits.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    reference = sum(g[:, [k]] * ((xn - c[k]) @ w[k].T) for k in range(3))
    np.testing.assert_allclose(moe(x).detach().numpy(), reference, rtol=1e-5, atol=1e-5)
    assert (g.max(1) > 0.99).all()  # each row is (almost) all one expert: the mixture really is per item
    # one expert is the whitening adapter itself
    one = MixtureOfWhiteningAdapter(5, 3, 0.0, experts=1).eval()
    plain = WhiteningAdapter(5, 3, 0.0)
    plain.load_state_dict(one.experts[0].state_dict())
    torch.testing.assert_close(one(x), plain(x))
    # training-time gates are noisy (UniSRec's noisy gating), evaluation ones are not
    moe.train()
    assert not torch.allclose(moe.gates(x), moe.gates(x))
    moe.eval()
    torch.testing.assert_close(moe.gates(x), moe.gates(x))
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match=r"adapter_experts must be an integer >= 1, got "):
            MixtureOfWhiteningAdapter(5, 3, 0.0, experts=bad)


def test_the_moe_adapter_reads_its_expert_count(planted_mm):
    encoder, _ = _encoder(planted_mm, adapter="moe", adapter_experts=3)
    assert {len(adapter.experts) for adapter in encoder.adapters.values()} == {3}
    with pytest.raises(ConfigError, match="adapter_experts"):
        _encoder(planted_mm, adapter="moe", adapter_experts=0)


def test_items_unseen_in_training_are_represented_by_content_alone(planted_mm):
    encoder, _ = _encoder(planted_mm)
    cold = (encoder.seen_in_training == 0).nonzero().squeeze(1)
    cold = cold[cold > 0]
    assert len(cold) > 0 and torch.equal(encoder.id_vectors()[cold], torch.zeros(len(cold), 32))


def test_multitask_terms_are_named_in_the_epoch_log(planted_mm, caplog):
    import logging

    caplog.set_level(logging.INFO)
    data_path, files, _ = planted_mm
    run("MMSASRec", "plantedmm", config_dict={**EVAL, **MM_SEQ, "data_path": data_path, "mm_feature_files": files,
                                              "epochs": 1, "state": "INFO", "train_mode": "prefix",
                                              "loss_weights": {"rec": 1.0, "align": 0.1, "rating": 0.1}},
        console_log=False)
    assert any("rec: " in r.message and "align: " in r.message and "rating: " in r.message for r in caplog.records)


@pytest.mark.parametrize("bad, message", [
    ({"fusion": "mean"}, "fusion must be one of"),
    ({"adapter": "conv"}, "adapter must be one of"),
    ({"modalities": ["audio"]}, "modalities must be a list"),
    ({"loss_weights": {"rec": 1.0, "contrast": 0.1}}, "unknown terms"),
    ({"loss_weights": {"rec": 0.0}}, "loss_weights.rec must be > 0"),
    ({"modality_dropout": 1.5}, "'modality_dropout' in config_dict must be < 1, got 1.5"),  # config.NUMERIC_RANGES
])
def test_bad_model_settings_name_the_key(planted_mm, bad, message):
    data_path, files, _ = planted_mm
    with pytest.raises(ConfigError, match=message):
        run("MMSASRec", "plantedmm", config_dict={**EVAL, **MM_SEQ, "data_path": data_path, "mm_feature_files": files,
                                                  "epochs": 1, **bad}, console_log=False)


def test_mmsasrec_without_modalities_is_recbole_sasrec(ring_data_path):
    # The fair ID-only comparison of the sequential benchmarks rests on this: given RecBole SASRec's weights,
    # MMSASRec with modalities: [] scores every item as SASRec does (eval mode, full ranking).
    from recbole.model.sequential_recommender import SASRec

    settings = {**FAST, "data_path": ring_data_path, "MAX_ITEM_LIST_LENGTH": 6, "hidden_size": 16, "inner_size": 32,
                "n_layers": 2, "n_heads": 2, "initializer_range": 0.5}  # large weights: scores far from 0
    _, _, _, test, ours = build(Config("MMSASRec", "planted", config_dict={**settings, "modalities": [],
                                                                            "position_encoding": "absolute",
                                                                            "train_mode": "prefix"}))
    _, _, _, _, theirs = build(Config("SASRec", "planted", config_dict=settings))
    assert isinstance(theirs, SASRec)
    with torch.no_grad():
        theirs.item_embedding.weight[0].zero_()  # RecBole's padding row is random and never trained; ours is zero
        ours.items.id_embedding.weight.copy_(theirs.item_embedding.weight)
        ours.position_embedding.weight.copy_(theirs.position_embedding.weight)
        ours.layer_norm.load_state_dict(theirs.LayerNorm.state_dict())
        ours.encoder.load_state_dict(theirs.trm_encoder.state_dict())
    assert bool(ours.items.seen_in_training[1:].all())  # unseen items would be zeroed in ours only
    ours.eval(), theirs.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        expected, got = theirs.full_sort_predict(interaction), ours.full_sort_predict(interaction)
    assert got.shape == expected.shape
    torch.testing.assert_close(got[:, 1:], expected.view(got.shape)[:, 1:], rtol=1e-5, atol=1e-5)


def test_the_item_table_is_reused_in_evaluation_only_while_no_weight_changes(planted_mm):
    encoder = _encoder(planted_mm, fusion="gate")[0].eval()
    with torch.no_grad():
        first = encoder()
        assert encoder() is first  # kept: evaluation batches and serving requests reuse it
        encoder.adapters["text"][1].weight.add_(0.5)  # what an optimizer step or load_state_dict does
        changed = encoder()
    assert changed is not first and not torch.equal(changed, first)
    encoder.train()
    with torch.no_grad():
        assert encoder() is not encoder()  # training mode: dropout, never kept
    encoder.eval()
    assert encoder().requires_grad  # with gradients: computed, not kept
