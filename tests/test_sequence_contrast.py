"""The sequence contrast term (loss_weights.ssl, CL4SRec): augmentations, NT-Xent, the wiring into the models."""
import logging

import numpy as np
import pytest
import torch

from mmrecbole.config import Config
from mmrecbole.errors import ConfigError
from mmrecbole.model import sequence_contrast as sc
from mmrecbole.quick_start import build, run
from tests.planted_mm import write_planted_mm
from tests.test_mm_models import EVAL, GRU, MM_SEQ

# Three left-aligned rows, lengths 5, 1 and 8 of 8 (0 = padding).
SEQ = torch.tensor([[11, 12, 13, 14, 15, 0, 0, 0],
                    [21, 0, 0, 0, 0, 0, 0, 0],
                    [31, 32, 33, 34, 35, 36, 37, 38]])
LENGTHS = torch.tensor([5, 1, 8])


@pytest.fixture(scope="module")
def planted_mm(tmp_path_factory):
    return write_planted_mm(tmp_path_factory.mktemp("mm"))


def _rows(seq, lengths):
    return [seq[b, : lengths[b]].tolist() for b in range(len(lengths))]


@pytest.mark.parametrize("seed", range(20))
def test_crop_keeps_a_contiguous_part_at_the_front(seed):
    generator = torch.Generator().manual_seed(seed)
    cropped, kept = sc.crop(SEQ, LENGTHS, 0.6, generator)
    assert kept.tolist() == [3, 1, 4]  # floor(0.6 * length), at least 1
    for row, (part, original) in enumerate(zip(_rows(cropped, kept), _rows(SEQ, LENGTHS))):
        starts = [i for i in range(len(original) - len(part) + 1) if original[i: i + len(part)] == part]
        assert starts, (row, part, original)
        assert cropped[row, kept[row]:].eq(0).all()


def test_crop_start_is_uniform_over_every_possible_offset():
    generator = torch.Generator().manual_seed(0)
    seq, lengths = SEQ[[2]].repeat(4000, 1), LENGTHS[[2]].repeat(4000)
    cropped, _ = sc.crop(seq, lengths, 0.5, generator)  # 4 of 8 items: start 0..4, 1/5 each
    counts = np.bincount((cropped[:, 0] - 31).numpy(), minlength=5)
    assert counts.shape == (5,) and np.all(np.abs(counts / 4000 - 0.2) < 0.03), counts


def test_crop_with_ratio_one_is_the_identity_and_mask_with_ratio_one_masks_every_real_item():
    assert torch.equal(sc.crop(SEQ, LENGTHS, 1.0)[0], SEQ)
    masked, lengths = sc.mask(SEQ, LENGTHS, 1.0, mask_id=99)
    assert torch.equal(lengths, LENGTHS)
    assert torch.equal(masked, torch.where(SEQ > 0, torch.full_like(SEQ, 99), SEQ))  # padding stays padding


def test_mask_replaces_about_its_ratio_of_the_real_items_and_nothing_else():
    generator = torch.Generator().manual_seed(1)
    seq, lengths = SEQ.repeat(500, 1), LENGTHS.repeat(500)
    masked, _ = sc.mask(seq, lengths, 0.3, mask_id=99, generator=generator)
    changed = masked != seq
    assert torch.equal(masked[changed], torch.full((int(changed.sum()),), 99))
    assert not changed[seq == 0].any()
    assert abs(changed.sum().item() / (seq > 0).sum().item() - 0.3) < 0.02


@pytest.mark.parametrize("seed", range(20))
def test_reorder_shuffles_one_contiguous_span_only(seed):
    generator = torch.Generator().manual_seed(seed)
    shuffled, lengths = sc.reorder(SEQ, LENGTHS, 0.6, generator)
    assert torch.equal(lengths, LENGTHS)
    assert torch.equal(shuffled[SEQ == 0], SEQ[SEQ == 0])
    for row, span in zip(range(3), [3, 1, 4]):
        assert sorted(shuffled[row].tolist()) == sorted(SEQ[row].tolist())
        moved = (shuffled[row] != SEQ[row]).nonzero().flatten()
        if len(moved):
            assert moved.max() - moved.min() < span


def test_reorder_with_ratio_one_reaches_every_permutation_of_a_short_row():
    generator = torch.Generator().manual_seed(0)
    seq = torch.tensor([[1, 2, 3, 0]]).repeat(3000, 1)
    shuffled, _ = sc.reorder(seq, torch.full((3000,), 3), 1.0, generator)
    seen = {tuple(r) for r in shuffled[:, :3].tolist()}
    assert len(seen) == 6 and shuffled[:, 3].eq(0).all()


def test_nt_xent_equals_a_numpy_reimplementation():
    generator = torch.Generator().manual_seed(3)
    first, second = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    views = np.concatenate([first.numpy(), second.numpy()]).astype(np.float64)
    temperature, total = 0.7, 0.0
    for i in range(10):
        logits = views @ views[i] / temperature
        positive = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        total += -logits[positive] + np.log(np.exp(logits[others]).sum())
    assert sc.nt_xent(first, second, temperature).item() == pytest.approx(total / 10, rel=1e-5)


def _config(planted_mm, model="MMSASRec", **extra):
    data_path, files, _ = planted_mm
    settings = {**EVAL, **(GRU if model == "MMGRU4Rec" else MM_SEQ), "data_path": data_path,
                "mm_feature_files": files, "loss_weights": {"rec": 1.0, "ssl": 0.1}, **extra}
    return Config(model, "plantedmm", config_dict=settings)


@pytest.mark.parametrize("model", ["MMSASRec", "MMGRU4Rec"])
def test_identical_views_give_the_nt_xent_of_the_models_own_last_states(planted_mm, model):
    # crop with ratio 1 is the identity: both views are the sequence itself, so in eval mode (no dropout) the term
    # is NT-Xent(state, state) with `state` what the model ranks with.
    _, train, _, _, recommender = build(_config(planted_mm, model, ssl_augmentations=["crop"], ssl_crop_ratio=1.0))
    recommender.eval()
    batch = next(iter(train))
    seq, lengths = batch[recommender.ITEM_SEQ], batch[recommender.ITEM_SEQ_LEN]
    with torch.no_grad():
        term = recommender.sequence_contrast.loss(recommender.encode_all, seq, lengths, recommender.items())
        state = recommender._state(batch, recommender.items())
        expected = sc.nt_xent(state, state, 1.0)
    assert term.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_term_trains_the_encoder_and_the_mask_vector(planted_mm):
    _, train, _, _, recommender = build(_config(planted_mm, ssl_augmentations=["mask"], ssl_mask_ratio=0.5,
                                                loss_weights={"rec": 1.0, "ssl": 1.0}))
    losses = recommender.calculate_loss(next(iter(train)))
    assert recommender.loss_names == ["rec", "ssl"] and len(losses) == 2
    losses[1].backward()
    assert recommender.sequence_contrast.mask_vector.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in recommender.encoder.parameters()
               if p.requires_grad and p.dim() > 1)


@pytest.mark.parametrize("train_mode", ["all_positions", "prefix"])
def test_training_with_the_term_logs_its_curve(planted_mm, caplog, train_mode):
    caplog.set_level(logging.INFO)
    data_path, files, _ = planted_mm
    result = run("MMSASRec", "plantedmm", config_dict={**EVAL, **MM_SEQ, "data_path": data_path,
                                                       "mm_feature_files": files, "epochs": 2, "state": "INFO",
                                                       "train_mode": train_mode,
                                                       "loss_weights": {"rec": 1.0, "ssl": 0.1}},
                 console_log=False)
    assert np.isfinite(result["test"]["ndcg@10"])
    assert sum("rec: " in r.message and "ssl: " in r.message for r in caplog.records) == 2  # one line per epoch


@pytest.mark.parametrize("bad, message", [
    ({"ssl_augmentations": ["crop", "shift"]}, r"ssl_augmentations must be a non-empty list of \['crop', 'mask'"),
    ({"ssl_augmentations": []}, "ssl_augmentations must be a non-empty list"),
    ({"ssl_crop_ratio": 0.0}, r"ssl_crop_ratio must be in \(0, 1\], got 0.0"),
    ({"ssl_mask_ratio": 1.5}, r"ssl_mask_ratio must be in \(0, 1\], got 1.5"),
    ({"ssl_temperature": 0}, "ssl_temperature must be > 0, got 0"),
])
def test_bad_contrast_settings_name_the_key_and_the_bound(planted_mm, bad, message):
    with pytest.raises(ConfigError, match=message):
        build(_config(planted_mm, **bad))


def test_general_models_refuse_the_sequence_term(planted_mm):
    data_path, files, _ = planted_mm
    with pytest.raises(ConfigError, match=r"unknown terms \['ssl'\] for VBPR; known: \['rec', 'align', 'rating'\]"):
        build(Config("VBPR", "plantedmm", config_dict={**EVAL, "data_path": data_path, "mm_feature_files": files,
                                                        "loss_weights": {"rec": 1.0, "ssl": 0.1}}))
