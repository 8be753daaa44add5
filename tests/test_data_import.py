"""`python -m mmrecbole.data import`: tiny exports with awkward cells -> atomic files RecBole loads with exact counts,
the text the feature extractor reads, the property file a Config layers in, and one-line errors (exit 2) that leave
no dataset folder behind."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import mmrecbole.config
from mmrecbole import PROJECT_ROOT
from mmrecbole.data import read_atomic_file
from mmrecbole.data import importer
from mmrecbole.data.__main__ import main

NAME = "shop"
INTERACTIONS = pd.DataFrame({
    "user": ["u1", "u1", "u1", "007", "007", "u3", "u3"],
    "item": ["i1", "i2", "i2", "i1", "ü3", "i9", "i1"],
    "rating": [5, 3, 3, 4, 2, 1, 4],
    "time": [100, 200, 200, 150, 300, 400, 500],
})
ITEMS = pd.DataFrame({
    "item": ["i1", "i2", "ü3", "i4"],
    "title": ['"Quoted" start', "Alien", "", "Unused"],
    "description": ['tab\there and\nnewline, "quotes", ünïcödé ✓ 日本', "", "only a description", "never seen"],
})
# After cleaning: tabs/newlines -> one space, '"' -> "'"; i4 has no interaction (left out), i9 no item row (added).
EXPECTED_ITEMS = [
    ["i1", "'Quoted' start", "tab here and newline, 'quotes', ünïcödé ✓ 日本"],
    ["i2", "Alien", ""],
    ["ü3", "", "only a description"],
    ["i9", "", ""],
]
EXPECTED_TEXTS = ["'Quoted' start. tab here and newline, 'quotes', ünïcödé ✓ 日本", "Alien", "only a description", ""]


def write(frame: pd.DataFrame, path) -> str:
    path = str(path)
    if path.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif path.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root whose dataset/ folder the Config reads (default data_path and the imported property file)."""
    folder = tmp_path / "root"
    (folder / "dataset").mkdir(parents=True)
    monkeypatch.setattr(mmrecbole.config, "PROJECT_ROOT", str(folder))
    return folder


def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("i1.jpg", "ü3.webp", "zz.png", "i2.txt"):
        (folder / name).write_bytes(b"not decoded by the importer")
    return str(folder)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_round_trip_loads_in_recbole_with_exact_counts(tmp_path, root, capsys, ext):
    from mmrecbole.config import Config
    from mmrecbole.data.build import create_dataset
    from mmrecbole.features.template import TextTemplate

    inter = write(INTERACTIONS, tmp_path / f"inter.{ext}")
    items = write(ITEMS, tmp_path / f"items.{ext}")
    code, out, err = run(["import", f"--name={NAME}", f"--interactions={inter}", f"--items={items}",
                          f"--images={images(tmp_path)}", f"--data_path={root / 'dataset'}"], capsys)
    assert (code, err) == (0, "")
    assert "users 3, items 4, interactions 6 (density 50.0000%)" in out
    assert "text: 3 of 4 items (75.0%) have text" in out
    assert "images: 2 of 4 items (50.0%) have an image file" in out
    assert "dropped 1 duplicate (user, item, time) interaction (row 3;" in out
    assert "1 item of the interactions not in" in out and "'i9'" in out
    assert f"python -m mmrecbole.features extract --dataset={NAME} --modality=all" in out

    folder = root / "dataset" / NAME
    assert sorted(os.listdir(root / "dataset")) == [NAME]  # no temporary folder left beside it
    inter_file = read_atomic_file(str(folder / f"{NAME}.inter"))
    assert inter_file.values.tolist() == [["u1", "i1", "5", "100"], ["u1", "i2", "3", "200"], ["007", "i1", "4", "150"],
                                          ["007", "ü3", "2", "300"], ["u3", "i9", "1", "400"], ["u3", "i1", "4", "500"]]
    item_file = read_atomic_file(str(folder / f"{NAME}.item"))
    assert item_file.values.tolist() == EXPECTED_ITEMS

    config = Config("BPR", NAME, config_dict={"state": "WARNING", "show_progress": False})
    assert config["data_path"] == str(folder)
    assert config["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"],
                                  "item": ["item_id", "title", "description"]}
    assert config["text_template"] == "{title}[. {description}]"
    assert config["image_dir"] == str(tmp_path / "images")
    dataset = create_dataset(config)
    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (3 + 1, 4 + 1, 6)  # + RecBole's padding id
    assert "'Quoted' start" in dataset.field2id_token["title"].tolist()
    assert set(dataset.field2id_token["user_id"].tolist()) == {"[PAD]", "u1", "007", "u3"}

    template = TextTemplate(config["text_template"])
    assert [template.render(r) for r in item_file.to_dict("records")] == EXPECTED_TEXTS
    # the feature CLI finds the same property file (the printed command names no --config_files)
    from mmrecbole.features.__main__ import load_settings

    assert load_settings(NAME, [], [])["text_template"] == "{title}[. {description}]"


def test_feature_extractor_reads_the_expected_texts_through_the_printed_command(tmp_path, root, capsys,
                                                                                 tiny_bert_dir):
    """The `features extract` command the importer prints plans exactly the expected item texts (its input hash)."""
    from mmrecbole.data.fileio import sha256_text
    from mmrecbole.features.__main__ import load_settings
    from mmrecbole.features.store import plan_features

    inter = write(INTERACTIONS, tmp_path / "inter.csv")
    items = write(ITEMS, tmp_path / "items.jsonl")
    data_path = str(tmp_path / "elsewhere")
    code, out, _ = run(["import", f"--name={NAME}", f"--interactions={inter}", f"--items={items}",
                        f"--data_path={data_path}"], capsys)
    assert code == 0
    yaml_file = os.path.join(data_path, NAME, f"{NAME}.yaml")
    assert (f"python -m mmrecbole.features extract --dataset={NAME} --modality=text --data_path={data_path} "
            f"--config_files={yaml_file}") in out
    assert (f"python run_recbole_mm.py --model=MMSASRec --dataset={NAME} '--modalities=[text]' "
            f"--data_path={data_path} --config_files={yaml_file}") in out
    settings = load_settings(NAME, [yaml_file], [f"--data_path={data_path}", f"--text_encoder_path={tiny_bert_dir}"])
    job = plan_features(NAME, "text", settings)
    ids = [row[0] for row in EXPECTED_ITEMS]
    assert job.provenance["inputs_sha256"] == sha256_text(json.dumps(list(zip(ids, EXPECTED_TEXTS)),
                                                                     ensure_ascii=False))
    assert job.provenance["recipe"]["template"] == "{title}[. {description}]"


def test_iso_dates_become_unix_seconds_and_the_property_file_has_no_rating(tmp_path, root, capsys):
    inter = tmp_path / "inter.csv"
    # A naive date after one with an offset is still UTC (pandas alone would give it the +02:00).
    inter.write_text("user_id,item_id,timestamp\na,x,2021-03-04T12:30:00+02:00\na,y,2021-03-04 12:30:00.5\n"
                     "b,x,2021-03-05\nb,y,2021-03-05T00:00:00Z\n", encoding="utf-8")
    code, out, err = run(["import", f"--name={NAME}", f"--interactions={inter}", f"--data_path={root / 'dataset'}"],
                         capsys)
    assert (code, err) == (0, "")
    folder = root / "dataset" / NAME
    frame = read_atomic_file(str(folder / f"{NAME}.inter"))
    assert list(frame.columns) == ["user_id", "item_id", "timestamp"]
    assert frame["timestamp"].tolist() == ["1614853800", "1614861000.5", "1614902400", "1614902400"]
    settings = yaml.safe_load((folder / f"{NAME}.yaml").read_text(encoding="utf-8"))
    assert settings == {"field_separator": "\t", "seq_separator": " ", "USER_ID_FIELD": "user_id",
                        "ITEM_ID_FIELD": "item_id", "RATING_FIELD": None, "TIME_FIELD": "timestamp",
                        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "image_dir": "images"}
    assert f"python run_recbole_mm.py --model=MMSASRec --dataset={NAME} '--modalities=[]'" in out
    assert "mmrecbole.features" not in out  # no text, no images: nothing to extract

    # A Parquet datetime column gives the same seconds.
    stamps = pd.to_datetime(["2021-03-04T10:30:00", "2021-03-04T12:30:00.5"], format="ISO8601")
    parquet = write(pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "time": stamps}), tmp_path / "t.parquet")
    assert run(["import", "--name=other", f"--interactions={parquet}", f"--data_path={root / 'dataset'}"],
               capsys)[0] == 0
    assert read_atomic_file(str(root / "dataset" / "other" / "other.inter"))["timestamp"].tolist() == [
        "1614853800", "1614861000.5"]


def test_duplicates_are_dropped_with_their_count(tmp_path, capsys):
    inter = tmp_path / "inter.tsv"
    inter.write_text("user\titem\ttime\n1\t1\t10\n1\t1\t10\n1\t1\t11\n2\t1\t10\n1\t1\t10\n2\t1\t10\n",
                     encoding="utf-8")
    code, out, _ = run(["import", f"--name={NAME}", f"--interactions={inter}", f"--data_path={tmp_path / 'd'}"],
                       capsys)
    assert code == 0
    assert "dropped 3 duplicate (user, item, time) interactions (rows 2, 5, 6;" in out
    assert "interactions 3 " in out
    assert read_atomic_file(str(tmp_path / "d" / NAME / f"{NAME}.inter")).values.tolist() == [
        ["1", "1", "10"], ["1", "1", "11"], ["2", "1", "10"]]


BAD = "user,item,rating,time\nu1,i1,5,100\nu2,i2,4,200\nu3,i3,five,300\n"


@pytest.mark.parametrize("case, expected", [
    ("missing file", ["nope.csv: file not found (--interactions)"]),
    ("unknown column", ["inter.csv: no column 'usr' (--user=usr); did you mean 'user'?"]),
    ("rating", ["inter.csv: column 'rating', row 3: rating 'five' is not a number"]),
    ("no time", ["inter.csv: no time column (looked for timestamp, time)", "leave-one-out by time",
                 "--time=COLUMN"]),
    ("bad date", ["inter.csv: column 'when', row 2: time '2021-13-45' is neither a number nor an ISO 8601 date"]),
    ("empty id", ["inter.csv: column 'item', row 2: empty item id"]),
    ("text column", ["items.csv: no column 'titel' (--text=titel); did you mean 'title'?"]),
    ("bad json", ["inter.jsonl: line 2 is not valid JSON"]),
    ("unknown option", ["unknown option --iten; did you mean --item?"]),
])
def test_bad_inputs_give_one_line_exit_2_and_no_folder(tmp_path, capsys, case, expected):
    (tmp_path / "inter.csv").write_text(BAD, encoding="utf-8")
    (tmp_path / "items.csv").write_text("item,title\ni1,A\n", encoding="utf-8")
    data_path = tmp_path / "out"
    argv = ["import", f"--name={NAME}", f"--interactions={tmp_path / 'inter.csv'}", f"--data_path={data_path}"]
    if case == "missing file":
        argv[2] = f"--interactions={tmp_path / 'nope.csv'}"
    elif case == "unknown column":
        argv.append("--user=usr")
    elif case == "no time":
        (tmp_path / "inter.csv").write_text("user,item\nu1,i1\n", encoding="utf-8")
    elif case == "bad date":
        (tmp_path / "inter.csv").write_text("user,item,when\nu1,i1,2021-03-04\nu1,i2,2021-13-45\n", encoding="utf-8")
        argv.append("--time=when")
    elif case == "empty id":
        (tmp_path / "inter.csv").write_text("user,item,time\nu1,i1,1\nu1,,2\n", encoding="utf-8")
    elif case == "text column":
        (tmp_path / "inter.csv").write_text("user,item,time\nu1,i1,1\n", encoding="utf-8")
        argv += [f"--items={tmp_path / 'items.csv'}", "--text=titel"]
    elif case == "bad json":
        (tmp_path / "inter.jsonl").write_text('{"user": 1, "item": 2, "time": 3}\n{"user": 1,\n', encoding="utf-8")
        argv[2] = f"--interactions={tmp_path / 'inter.jsonl'}"
    elif case == "unknown option":
        argv.append("--iten=x")
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    for part in expected:
        assert part in err
    assert not data_path.exists() or os.listdir(data_path) == []


def test_existing_dataset_is_kept_without_force_and_replaced_with_it(tmp_path, capsys):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,time\nu1,i1,1\nu1,i2,2\n", encoding="utf-8")
    argv = ["import", f"--name={NAME}", f"--interactions={inter}", f"--data_path={tmp_path / 'out'}"]
    assert run(argv, capsys)[0] == 0
    inter_file = tmp_path / "out" / NAME / f"{NAME}.inter"
    before = inter_file.read_text(encoding="utf-8")
    inter.write_text("user,item,time\nu1,i1,1\nu2,i2,2\nu3,i3,3\n", encoding="utf-8")
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'out' / NAME} already exists: pass --force to replace it" in err
    assert inter_file.read_text(encoding="utf-8") == before
    code, out, _ = run(argv + ["--force"], capsys)
    assert code == 0 and "users 3, items 3, interactions 3" in out
    assert sorted(os.listdir(tmp_path / "out")) == [NAME]
    assert len(read_atomic_file(str(inter_file))) == 3


def test_a_failure_while_writing_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,time\nu1,i1,1\n", encoding="utf-8")
    (tmp_path / "items.csv").write_text("item,title\ni1,A\n", encoding="utf-8")
    real = importer.write_atomic_file

    def fail_on_item(path, header, rows):
        if path.endswith(".item"):
            raise OSError("disk full")
        return real(path, header, rows)

    monkeypatch.setattr(importer, "write_atomic_file", fail_on_item)
    with pytest.raises(OSError, match="disk full"):
        main(["import", f"--name={NAME}", f"--interactions={inter}", f"--items={tmp_path / 'items.csv'}",
              f"--data_path={tmp_path / 'out'}"])
    assert os.listdir(tmp_path / "out") == []


def test_long_text_stays_out_of_load_col_and_odd_column_names_are_renamed(tmp_path, root, capsys):
    from mmrecbole.config import Config
    from mmrecbole.data.build import create_dataset

    inter = write(pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [1, 2]}),
                  tmp_path / "inter.csv")
    items = write(pd.DataFrame({"item_id": ["x", "y"], "Product Name": ["Mug", "Cup"],
                                "about": ["word " * 20, "short"]}), tmp_path / "items.csv")
    code, out, _ = run(["import", f"--name={NAME}", f"--interactions={inter}", f"--items={items}",
                        "--text=Product Name,about", f"--data_path={root / 'dataset'}"], capsys)
    assert code == 0
    assert "'Product Name' -> Product_Name" in out and "kept out of load_col" in out
    config = Config("BPR", NAME, config_dict={"state": "WARNING", "show_progress": False})
    assert config["load_col"]["item"] == ["item_id", "Product_Name"]
    assert config["text_template"] == "{Product_Name}[. {about}]"
    dataset = create_dataset(config)
    assert "about" not in dataset.item_feat.columns and "Product_Name" in dataset.item_feat.columns
    assert mmrecbole.config.our_property_files("BPR", NAME)[-1] == str(root / "dataset" / NAME / f"{NAME}.yaml")


def test_item_key_defaults_to_the_interactions_item_column_and_can_be_named(tmp_path, capsys):
    inter = write(pd.DataFrame({"buyer": ["a", "a", "b"], "product_id": ["p1", "p2", "p1"], "when": [1, 2, 3],
                                "stars": ["4.5", "3", "5"]}), tmp_path / "inter.csv")
    same = write(pd.DataFrame({"product_id": ["p1", "p2"], "name": ["One", "Two"]}), tmp_path / "same.csv")
    other = write(pd.DataFrame({"asin": ["p2", "p1"], "name": ["Two", "One"]}), tmp_path / "other.csv")
    base = ["import", f"--interactions={inter}", "--user=buyer", "--item=product_id", "--time=when",
            "--rating=stars", f"--data_path={tmp_path / 'out'}"]
    assert run(base + ["--name=same", f"--items={same}"], capsys)[0] == 0
    assert run(base + ["--name=other", f"--items={other}", "--item_key=asin"], capsys)[0] == 0
    assert read_atomic_file(str(tmp_path / "out" / "same" / "same.item")).values.tolist() == [["p1", "One"],
                                                                                              ["p2", "Two"]]
    assert read_atomic_file(str(tmp_path / "out" / "other" / "other.item")).values.tolist() == [["p2", "Two"],
                                                                                                ["p1", "One"]]
    assert read_atomic_file(str(tmp_path / "out" / "same" / "same.inter")).values.tolist() == [
        ["a", "p1", "4.5", "1"], ["a", "p2", "3", "2"], ["b", "p1", "5", "3"]]
    code, _, err = run(base + ["--name=third", f"--items={other}"], capsys)
    assert code == 2 and "other.csv: no item_key column (looked for product_id, item_id, item)" in err


def test_image_lookup_prefers_jpg_and_ignores_other_files(tmp_path):
    """The one lookup the importer's coverage count and the image feature extractor share."""
    from mmrecbole.data.fileio import images_by_stem
    from mmrecbole.features.image import index_images

    folder = images(tmp_path)
    (tmp_path / "images" / "i1.PNG").write_bytes(b"x")  # .jpg ranks before .png
    expected = {"i1": str(tmp_path / "images" / "i1.jpg"), "ü3": str(tmp_path / "images" / "ü3.webp"),
                "zz": str(tmp_path / "images" / "zz.png")}
    assert images_by_stem(folder) == expected and index_images(folder) == expected


def test_the_module_entry_point_refuses_an_unknown_option(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmrecbole.data", "import", f"--name={NAME}",
                           "--interactions=x.csv", "--forse"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "error: unknown option --forse; did you mean --force? (see --help)\n"
