"""amazon-office builder: the file order is the time order (day-resolution ties), our leave-one-out split equals the
file's own split column, bad raw files are refused with the line, and the real data's published counts."""
import os

import pytest

from mmrecbole.config import Config
from mmrecbole.data import read_atomic_file, read_header
from mmrecbole.data.amazon_office import build_amazon_office, default_raw_dir
from mmrecbole.errors import DatasetError
from tests.planted import FAST
from tests.test_time_order import split_targets

DAY = 86400
BASE = 1_300_000_000 - 1_300_000_000 % DAY


def planted_rows(n_users=24):
    """Each user: 4 interactions on distinct days, then 3 on one day (train, dev, test in that file order). The
    same-day items are chosen so that neither item-id order nor reversed file order gives the file's split."""
    rows = []
    for user in range(1, n_users + 1):
        history = [f"B{(user + k) % 12:03d}" for k in range(4)]
        same_day = ["Z900", "M500", "A100"] if user % 2 else ["A100", "Z900", "M500"]
        for k, item in enumerate(history):
            rows.append((str(user), item, BASE + DAY * (user + k), "train"))
        for item, split in zip(same_day, ("train", "dev", "test")):
            rows.append((str(user), item, BASE + DAY * (user + 10), split))
    return rows


def write_raw(folder, rows, items=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "interactions.tsv"), "w", encoding="utf-8") as f:
        f.write("user\titem_asin\ttime\tsplit\n")
        f.writelines(f"{u}\t{i}\t{t}\t{s}\n" for u, i, t, s in rows)
    if items is None:
        items = {i: f'Item {i} "Deluxe"   Office Products Acme' for i in sorted({r[1] for r in rows})}
    with open(os.path.join(folder, "items.tsv"), "w", encoding="utf-8") as f:
        f.write("item_asin\ttext\n")
        f.writelines(f"{i}\t{t}\n" for i, t in items.items())
    return str(folder)


@pytest.fixture
def raw_dir(tmp_path):
    return write_raw(tmp_path / "raw", planted_rows())


def test_builds_atomic_files_in_file_order(tmp_path, raw_dir):
    out = str(tmp_path / "dataset" / "amazon-office")
    result = build_amazon_office(out_dir=out, raw_dir=raw_dir)
    assert result.rebuilt and result.stats["users"] == 24 and result.stats["interactions"] == 24 * 7
    assert result.stats["users_with_tie_in_last_three"] == 24 and result.stats["items_with_empty_text"] == 0
    assert read_header(result.inter_path) == [("user_id", "token"), ("item_id", "token"), ("timestamp", "float")]
    inter = read_atomic_file(result.inter_path)
    assert list(inter["item_id"][4:7]) == ["Z900", "M500", "A100"]  # user 1's same-day rows, file order kept
    items = read_atomic_file(result.item_path).set_index("item_id")
    assert items.loc["A100", "text"] == "Item A100 'Deluxe' Office Products Acme"  # quotes and space runs made safe
    assert build_amazon_office(out_dir=out, raw_dir=raw_dir).rebuilt is False


@pytest.mark.parametrize("model", ["BPR", "MMSASRec"])
def test_split_equals_the_files_own_split_despite_same_day_ties(tmp_path, raw_dir, model):
    settings = {**FAST, "data_path": str(tmp_path / "data"), "mm_raw_dir": raw_dir}
    config = Config(model, "amazon-office",
                    config_dict={**settings, "modalities": []} if model == "MMSASRec" else settings)
    targets, _ = split_targets(config)
    expected = {str(u): (("M500", "A100") if u % 2 else ("Z900", "M500")) for u in range(1, 25)}
    assert targets == expected


@pytest.mark.parametrize("rows, message", [
    (lambda r: [x if k != 6 else (x[0], x[1], x[2], "dev") for k, x in enumerate(r)], "split column is"),
    (lambda r: [x if k != 3 else (x[0], x[1], BASE, x[3]) for k, x in enumerate(r)], "line 5: user 1's time"),
    (lambda r: r[:14] + [r[6]] + r[14:], "line 16: user 1's rows are not contiguous"),
])
def test_raw_files_that_contradict_their_order_are_refused(tmp_path, rows, message):
    raw = write_raw(tmp_path / "raw", rows(planted_rows()))
    with pytest.raises(DatasetError, match=message):
        build_amazon_office(out_dir=str(tmp_path / "out"), raw_dir=raw)
    assert not os.path.exists(tmp_path / "out" / "amazon-office.inter")


def test_items_without_text_rows_and_missing_folder_are_refused(tmp_path):
    rows = planted_rows()
    raw = write_raw(tmp_path / "raw", rows, items={"A100": "a", "M500": "b"})
    with pytest.raises(DatasetError, match=r"items\.tsv: 13 items of the interactions have no row"):
        build_amazon_office(out_dir=str(tmp_path / "out"), raw_dir=raw)
    with pytest.raises(DatasetError, match="interactions.tsv .*--mm_raw_dir=DIR"):
        build_amazon_office(out_dir=str(tmp_path / "out"), raw_dir=str(tmp_path / "nowhere"))


REAL = os.path.isfile(os.path.join(default_raw_dir(), "interactions.tsv"))


@pytest.mark.skipif(not REAL, reason="shared amazon-office raw data not present")
def test_real_data_counts_and_split(tmp_path):
    result = build_amazon_office(out_dir=str(tmp_path / "amazon-office"))
    assert {k: result.stats[k] for k in ("users", "items", "interactions", "users_with_tie_in_last_three")} == {
        "users": 4905, "items": 2420, "interactions": 53258, "users_with_tie_in_last_three": 1895}
    expected = {}
    with open(os.path.join(default_raw_dir(), "interactions.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            user, item, _, split = line.rstrip("\n").split("\t")
            if split != "train":
                expected.setdefault(user, [None, None])[split == "test"] = item
    config = Config("MMSASRec", "amazon-office", config_dict={**FAST, "data_path": str(tmp_path), "modalities": []})
    targets, _ = split_targets(config)
    assert len(targets) == 4905
    assert {u: t for u, t in targets.items() if t != tuple(expected[u])} == {}


def test_property_file_has_text_only_and_documents_every_key():
    import yaml

    from mmrecbole import PROPERTIES_DIR
    from mmrecbole.features.store import FEATURE_DEFAULTS, dataset_modalities

    path = os.path.join(PROPERTIES_DIR, "dataset", "amazon-office.yaml")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    properties = yaml.safe_load("\n".join(lines))
    assert dataset_modalities(properties) == ("text",)  # no image_dir: `extract` (all) builds text only
    assert dataset_modalities({**properties, "image_dir": None}) == ("text", "image")
    for key in [k for k in FEATURE_DEFAULTS if k.startswith("text_") and k != "text_template"]:
        assert properties[key] == FEATURE_DEFAULTS[key], key
    top_level = [line for line in lines if line and not line.startswith((" ", "#"))]
    assert all("# (" in line for line in top_level), [line for line in top_level if "# (" not in line]
