"""ml-100k-mm builder: atomic files RecBole can parse, cleaning, up-to-date checks, missing-input errors."""
import json
import os

import pandas as pd
import pytest

from mmrecbole.data import prepare_dataset, read_atomic_file, read_header
from mmrecbole.data.ml100k_mm import RAW_DIR_ENV, build_ml100k_mm, default_raw_dir
from mmrecbole.errors import DatasetError

PLOTS = [
    {"movie_id": 1, "description": 'A cowboy doll\tis "jealous"\nof a spaceman.', "director": ["John Lasseter"],
     "cast": ["Tom Hanks", "Tim Allen"]},
    {"movie_id": 50, "description": "It looks like we don't have any Plot Summaries for this title yet.\nBe the "
     "first to contribute!", "director": ["nan"], "cast": ["nan"]},
    {"movie_id": 99999, "description": "Not a MovieLens item.", "director": [], "cast": []},
]


@pytest.fixture
def raw_dir(tmp_path):
    raw = tmp_path / "raw"
    (raw / "posters").mkdir(parents=True)
    (raw / "plots.json").write_text(json.dumps(PLOTS), encoding="utf-8")
    (raw / "posters" / "1.jpg").write_bytes(b"\xff\xd8 poster bytes")
    return str(raw)


def test_builds_atomic_files_recbole_can_parse(tmp_path, raw_dir):
    out = str(tmp_path / "dataset" / "ml-100k-mm")
    result = build_ml100k_mm(out_dir=out, raw_dir=raw_dir)
    assert result.rebuilt and result.stats["items"] == 1682 and result.stats["interactions"] == 100000
    assert result.stats["with_plot_record"] == 2 and result.stats["with_description"] == 1
    assert result.stats["plot_records_unknown_item"] == 1
    assert read_header(result.inter_path) == [
        ("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]
    assert read_header(result.item_path) == [
        ("item_id", "token"), ("movie_title", "token_seq"), ("release_year", "token"), ("genre", "token_seq"),
        ("description", "token"), ("director", "token"), ("cast", "token")]
    assert sorted(os.listdir(out)) == ["build_manifest.json", "ml-100k-mm.inter", "ml-100k-mm.item"]  # no posters

    items = read_atomic_file(result.item_path).set_index("item_id")
    assert items.loc["1", "description"] == "A cowboy doll is 'jealous' of a spaceman."  # tabs/newlines/quotes
    assert items.loc["1", "cast"] == "Tom Hanks, Tim Allen" and items.loc["1", "genre"] == "Animation Children's Comedy"
    assert items.loc["50", "movie_title"] == "Star Wars" and items.loc["50", "description"] == ""  # IMDB placeholder
    assert items.loc["50", "director"] == ""  # ['nan']
    assert items.loc["267", "movie_title"] == "" and items.loc["267", "release_year"] == ""  # 'unkonwn'
    assert items.loc["543", "movie_title"] == "Misérables, Les"

    # Exactly RecBole 1.2.1's reader (Dataset._load_feat): python engine, default quoting, every column.
    for path in (result.inter_path, result.item_path):
        frame = pd.read_csv(path, delimiter="\t", dtype=str, encoding="utf-8", engine="python")
        assert len(frame) == (100000 if path.endswith("inter") else 1682)


def test_up_to_date_outputs_are_not_rewritten(tmp_path, raw_dir):
    out = str(tmp_path / "ml-100k-mm")
    first = build_ml100k_mm(out_dir=out, raw_dir=raw_dir)
    mtime = os.stat(first.item_path).st_mtime_ns
    assert not build_ml100k_mm(out_dir=out, raw_dir=raw_dir).rebuilt
    assert os.stat(first.item_path).st_mtime_ns == mtime
    assert build_ml100k_mm(out_dir=out, raw_dir=raw_dir, force=True).rebuilt

    with open(os.path.join(raw_dir, "plots.json"), "w", encoding="utf-8") as handle:
        json.dump(PLOTS[:1], handle)
    assert build_ml100k_mm(out_dir=out, raw_dir=raw_dir).rebuilt  # input changed

    with open(first.item_path, "a", encoding="utf-8") as handle:
        handle.write("9999\tHand edit\t\t\t\t\t\n")
    assert build_ml100k_mm(out_dir=out, raw_dir=raw_dir).rebuilt  # output damaged


def test_missing_raw_inputs_name_the_path(tmp_path, raw_dir, monkeypatch):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=f"raw directory not found: {missing}.*mm_raw_dir.*{RAW_DIR_ENV}"):
        build_ml100k_mm(out_dir=str(tmp_path / "out"), raw_dir=missing)
    os.remove(os.path.join(raw_dir, "plots.json"))
    with pytest.raises(DatasetError, match=f"plots file not found: {os.path.join(raw_dir, 'plots.json')}"):
        build_ml100k_mm(out_dir=str(tmp_path / "out"), raw_dir=raw_dir)
    monkeypatch.setenv(RAW_DIR_ENV, missing)
    with pytest.raises(DatasetError, match=f"{missing}.*because of environment variable {RAW_DIR_ENV}"):
        build_ml100k_mm(out_dir=str(tmp_path / "out"))


def test_malformed_plots_file(tmp_path, raw_dir):
    with open(os.path.join(raw_dir, "plots.json"), "w", encoding="utf-8") as handle:
        handle.write('{"movie_id": 1}')
    with pytest.raises(DatasetError, match="expected a JSON list"):
        build_ml100k_mm(out_dir=str(tmp_path / "out"), raw_dir=raw_dir)


def test_ensure_dataset_uses_existing_files_when_raw_inputs_are_gone(tmp_path, raw_dir, monkeypatch):
    data_path = str(tmp_path / "dataset")
    assert prepare_dataset("ml-100k-mm", data_path, raw_dir=raw_dir).endswith(os.path.join("dataset", "ml-100k-mm"))
    monkeypatch.setenv(RAW_DIR_ENV, str(tmp_path / "gone"))
    assert os.path.isdir(prepare_dataset("ml-100k-mm", data_path))  # copied-over files still usable
    with pytest.raises(DatasetError, match="gone"):
        prepare_dataset("ml-100k-mm", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="no-such.inter not found"):
        prepare_dataset("no-such", data_path)


@pytest.mark.skipif(not os.path.isfile(os.path.join(default_raw_dir(), "plots.json")),
                    reason="shared ml-100k-mm raw data not present")
def test_real_raw_data(tmp_path):
    result = build_ml100k_mm(out_dir=str(tmp_path / "ml-100k-mm"), raw_dir=default_raw_dir())
    assert result.stats["with_plot_record"] == 1591 and result.stats["items"] == 1682
    items = read_atomic_file(result.item_path).set_index("item_id")
    assert items.loc["181", "movie_title"] == "Return of the Jedi" and items.loc["181", "description"]


def test_one_variable_moves_every_shipped_raw_folder(tmp_path, monkeypatch):
    """$MMRECBOLE_SHARED_DATA names the folder of all shipped raw data sets (a clone outside the workspace); the
    ml-100k-mm-only $MMRECBOLE_RAW_DIR and an explicit mm_raw_dir still come first."""
    from mmrecbole import SHARED_DATA_ENV
    from mmrecbole.data import amazon_office
    from mmrecbole.data.ml100k_mm import resolve_raw_dir

    monkeypatch.delenv(RAW_DIR_ENV, raising=False)
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "data"))
    assert default_raw_dir() == str(tmp_path / "data" / "ml-100k-mm")
    assert amazon_office.default_raw_dir() == str(tmp_path / "data" / "amazon-office")
    assert resolve_raw_dir()[0] == str(tmp_path / "data" / "ml-100k-mm")
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'data' / 'amazon-office'}.*MMRECBOLE_SHARED_DATA"):
        amazon_office.build_amazon_office(out_dir=str(tmp_path / "out"))
    monkeypatch.setenv(RAW_DIR_ENV, str(tmp_path / "mine"))
    assert resolve_raw_dir() == (str(tmp_path / "mine"), f"environment variable {RAW_DIR_ENV}")
    assert resolve_raw_dir(str(tmp_path / "given"))[0] == str(tmp_path / "given")
    monkeypatch.delenv(SHARED_DATA_ENV)
    assert amazon_office.default_raw_dir().endswith(os.path.join("shared", "data", "amazon-office"))
