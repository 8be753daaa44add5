"""Leave-one-out by time follows the true timestamps (RecBole keeps them as float32: 64 s apart near 9e8) and
MovieLens-100K keeps its true ratings (RecBole's ml-100k.yaml rescales every float column to 0..1)."""
import os

import numpy as np
import pandas as pd
import pytest

from mmrecbole.config import Config
from mmrecbole.data.ml100k_mm import recbole_ml100k_dir
from mmrecbole.quick_start import build
from tests.planted import FAST


def split_targets(config):
    """{user token: (valid item token, test item token)} of the split our pipeline builds."""
    dataset, _, valid, test, _ = build(config)
    users = dataset.field2id_token[dataset.uid_field]
    items = dataset.field2id_token[dataset.iid_field]
    targets = {}
    for position, loader in enumerate((valid, test)):
        inter = loader._dataset.inter_feat
        for user, item in zip(inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy()):
            targets.setdefault(str(users[user]), [None, None])[position] = str(items[item])
    return {user: tuple(pair) for user, pair in targets.items()}, dataset


def raw_leave_one_out(inter_path):
    """The same split computed from the raw file with pandas: per user, order by the exact timestamp (ties keep
    the file order); the last item is test, the one before validation."""
    frame = pd.read_csv(inter_path, sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame["time"] = frame["timestamp"].astype(np.float64)
    frame = frame.sort_values(["user_id", "time"], kind="stable")
    return {user: (group["item_id"].iloc[-2], group["item_id"].iloc[-1]) for user, group in frame.groupby("user_id")}


@pytest.mark.parametrize("model", ["BPR", "SASRec"])
def test_targets_follow_timestamps_closer_than_float32_resolution(tmp_path, model):
    """Each user's last three interactions are 1 s apart and written to the file newest first: float32 rounds
    them to one value, so only the exact times can order them."""
    folder = tmp_path / "close"
    folder.mkdir()
    with open(folder / "close.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user in range(1, 21):
            base = 881250000 + 100000 * user
            rows = [(item, base + 600 * item) for item in range(1, 6)] + [(8, base + 6002), (7, base + 6001),
                                                                          (6, base + 6000)]
            for item, time in rows:
                f.write(f"{user}\t{item}\t3\t{time}\n")
        for item in range(9, 13):  # items nobody else saw, so that negatives can be sampled for everyone
            f.write(f"99\t{item}\t3\t{881250000 + item}\n")
    config = Config(model, "close", config_dict={**FAST, "data_path": str(tmp_path)})
    targets, _ = split_targets(config)
    assert targets.pop("99") == ("11", "12")
    assert set(targets.values()) == {("7", "8")}


@pytest.mark.parametrize("model", ["BPR", "SASRec"])
def test_ml100k_split_equals_leave_one_out_on_the_raw_timestamps(model):
    config = Config(model, "ml-100k", config_dict={"state": "WARNING", "show_progress": False})
    targets, dataset = split_targets(config)
    expected = raw_leave_one_out(os.path.join(recbole_ml100k_dir(), "ml-100k.inter"))
    assert len(targets) == len(expected) == 943
    assert {u: t for u, t in targets.items() if t != expected[u]} == {}
    # True ratings (1..5), not RecBole's rescaled 0..1.
    ratings = dataset.inter_feat["rating"].numpy()
    assert sorted(np.unique(ratings).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
