"""Sharded feature extraction: shards merge into exactly the table one build writes; missing or stale shards are
named; the merged table is reused by models like any other."""
import os

import numpy as np
import pytest

from mmrecbole.errors import FeatureError
from mmrecbole.features import load_or_build_features, plan_features
from mmrecbole.features.__main__ import main as features_cli
from mmrecbole.features.shards import merge_shards, parse_shard, shard_path, shard_rows
from mmrecbole.features.table import provenance_key
from tests.feature_fixtures import toy_settings, write_toy_dataset


@pytest.fixture
def toy(tmp_path, tiny_bert_dir, tiny_image_weights):
    paths = write_toy_dataset(str(tmp_path / "data"))
    # One item per batch: every vector is computed from the same tensor shapes with or without shards, so the
    # merged table must equal the single build bit for bit (with bigger batches, padding to a batch's longest
    # text changes shapes and the last float bits).
    paths["settings"] = toy_settings(paths["data_path"], tiny_bert_dir, tiny_image_weights, feature_batch_size=1)
    paths["flags"] = [f"--{key}={value}" for key, value in paths["settings"].items()]
    return paths


def test_shard_rows_cover_every_row_once_in_order():
    assert [shard_rows(5, i, 2) for i in range(2)] == [slice(0, 2), slice(2, 5)]
    assert [shard_rows(2, i, 3) for i in range(3)] == [slice(0, 0), slice(0, 1), slice(1, 2)]  # more shards than rows
    for n, count in [(1, 1), (7, 3), (1682, 4), (10, 10)]:
        rows = np.concatenate([np.arange(n)[shard_rows(n, i, count)] for i in range(count)])
        np.testing.assert_array_equal(rows, np.arange(n))


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "0/2/3"])
def test_bad_shard_is_refused_with_the_bound(text):
    with pytest.raises(FeatureError, match=r"--shard must be i/N with N >= 1 and 0 <= i < N"):
        parse_shard(text)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_two_shards_merge_into_the_single_build(toy, modality, capsys):
    single = plan_features("toy", modality, toy["settings"]).run()  # the table one process would write
    for shard in ("1/2", "0/2"):  # any order, any process
        assert features_cli(["extract", "--dataset=toy", f"--modality={modality}", f"--shard={shard}",
                             *toy["flags"]]) == 0
    out = capsys.readouterr().out
    assert f"{modality}: built shard 1/2 (missing)" in out and f"{modality}: built shard 0/2 (missing)" in out
    assert features_cli(["extract", "--dataset=toy", f"--modality={modality}", "--shard=0/2", *toy["flags"]]) == 0
    assert "reused (up to date)" in capsys.readouterr().out  # a shard is not encoded twice

    assert features_cli(["extract", "--dataset=toy", f"--modality={modality}", "--merge_shards=2",
                         *toy["flags"]]) == 0
    assert f"{modality}: merged 2 shards" in capsys.readouterr().out
    job = plan_features("toy", modality, toy["settings"])
    assert not any(os.path.exists(shard_path(job, i, 2)) for i in range(2))  # shards removed after the merge

    merged = load_or_build_features("toy", modality, toy["settings"])  # reused: no encoder runs here
    assert merged.ids.tolist() == single.ids.tolist()
    np.testing.assert_array_equal(merged.mask, single.mask)
    np.testing.assert_array_equal(merged.matrix, single.matrix)
    assert provenance_key(merged.provenance) == provenance_key(single.provenance)
    assert [s["shard"]["index"] for s in merged.provenance["info"]["shards"]] == [0, 1]
    assert merged.provenance["info"]["with_feature"] == int(single.mask.sum())
    assert merge_shards(job, 2)[1].startswith("reused (up to date")  # merging again: nothing to do


def test_missing_or_stale_shards_are_named_and_nothing_is_written(toy, capsys):
    flags = ["extract", "--dataset=toy", "--modality=text"]
    assert features_cli([*flags, "--shard=0/3", *toy["flags"]]) == 0
    assert features_cli([*flags, "--merge_shards=3", *toy["flags"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot merge the text features of toy" in err
    assert "shard 1/3 (text.shard-1-of-3.npz) missing; shard 2/3 (text.shard-2-of-3.npz) missing" in err
    assert "--shard=1/3 --shard=2/3" in err
    job = plan_features("toy", "text", toy["settings"])
    assert not os.path.exists(job.path)

    for shard in ("1/3", "2/3"):
        assert features_cli([*flags, f"--shard={shard}", *toy["flags"]]) == 0
    item_file = os.path.join(toy["folder"], "toy.item")  # the item text changes after the shards were cut
    with open(item_file, encoding="utf-8") as handle:
        text = handle.read()
    with open(item_file, "w", encoding="utf-8") as handle:
        handle.write(text.replace("Toys come alive.", "Toys come alive at night."))
    capsys.readouterr()
    assert features_cli([*flags, "--merge_shards=3", *toy["flags"]]) == 2
    err = capsys.readouterr().err
    assert "shard 0/3 (text.shard-0-of-3.npz) stale: inputs_sha256 changed" in err
    assert not os.path.exists(job.path)

    assert features_cli([*flags, "--shard=0/2", "--merge_shards=2", *toy["flags"]]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
