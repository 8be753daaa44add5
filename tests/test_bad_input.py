"""Bad input through the real command line (issue 23's catalogue): exit code 2, the last stderr line is one `error:`
line naming the file / line / key and the fix, no traceback, and nothing half-written (no checkpoint for a run that
was refused). The README's "When the input is wrong" table lists these cases.

Each case runs `mmrecbole.cli.main` (the entry point of run_recbole_mm.py) or the feature CLI in this process; the
subprocess path (the script itself, --debug) is covered in test_cli.py.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from mmrecbole import checkpoint, cli
from mmrecbole.features import FeatureTable
from mmrecbole.features.__main__ import main as features_cli
from tests.planted import write_ring_dataset
from tests.planted_mm import write_planted_mm

FLAGS = ["--epochs=1", "--show_progress=false", "--topk=[5]", "--metrics=[NDCG]", "--valid_metric=NDCG@5",
         "--train_batch_size=256", "--eval_batch_size=256"]
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@pytest.fixture(scope="module")
def ring_lines(tmp_path_factory):
    root = write_ring_dataset(tmp_path_factory.mktemp("ring"))
    with open(os.path.join(root, "planted", "planted.inter"), encoding="utf-8") as handle:
        return handle.read().splitlines()


def refused(capsys, argv, expected, main=cli.main):
    """Run a command that must be refused; return its error line."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    assert expected in lines[-1], lines[-1]
    assert not os.path.isdir("saved") or not os.listdir("saved"), "a refused run wrote a checkpoint"
    assert not any(files for _, _, files in os.walk("log_tensorboard")), "a refused run wrote a TensorBoard file"
    return lines[-1]


def write_inter(root, name, text=None, raw=None):
    folder = os.path.join(str(root), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "wb") as handle:
        handle.write(raw if raw is not None else text.encode("utf-8"))
    return str(root)


def _replace_row(lines, number, row):
    """The file with line `number` (1-based, the header is line 1) replaced by `row`."""
    return "\n".join(lines[: number - 1] + [row] + lines[number:]) + "\n"


def _drop_cell(row, index):
    cells = row.split("\t")
    return "\t".join(cells[:index] + cells[index + 1:])


ONE_EACH = "\n".join([HEADER] + [f"{u}\t{u}\t1\t{u}" for u in range(1, 40)]) + "\n"
TWELVE_ITEMS = "\n".join([HEADER] + [f"{u}\t{(u + s) % 12 + 1}\t1\t{u * 100 + s}"
                                     for u in range(1, 30) for s in range(5)]) + "\n"

# (case, file text from the good ring file's lines, model, extra flags, expected part of the error line)
INTER_CASES = [
    ("header without types", lambda l: _replace_row(l, 1, "user_id\titem_id\trating\ttimestamp"), "BPR", [],
     "line 1, column 1: header cell 'user_id' has no ':type'"),
    ("unknown type", lambda l: _replace_row(l, 1, HEADER.replace("user_id:token", "user_id:strng")), "BPR", [],
     "line 1, column 1: type 'strng' of field 'user_id' is not one of token, token_seq, float, float_seq"),
    ("comma-separated", lambda l: "\n".join(x.replace("\t", ",") for x in l) + "\n", "BPR", [],
     "line 1: the header has no '\\t' separator but has commas"),
    ("text in a float column", lambda l: _replace_row(l, 6, l[5].rsplit("\t", 1)[0] + "\tabc"), "BPR", [],
     "line 6, column 4 (timestamp:float): 'abc' is not a number"),
    ("duplicate header field", lambda l: _replace_row(l, 1, HEADER.replace("rating:float", "item_id:token")), "BPR",
     [], "field 'item_id' appears twice in the header (columns 2 and 3)"),
    ("empty file", lambda l: "", "BPR", [], "is empty: an atomic file starts with a header line"),
    ("header only", lambda l: l[0] + "\n", "BPR", [], "has a header but no data rows"),
    ("row with a missing cell", lambda l: _replace_row(l, 6, _drop_cell(l[5], 3)), "BPR", [],
     "line 6: 3 cells, the header has 4 (user_id, item_id, rating, timestamp)"),
    ("row with an extra cell", lambda l: _replace_row(l, 6, l[5] + "\t9"), "BPR", [],
     "line 6: 5 cells, the header has 4"),
    ("empty user id", lambda l: _replace_row(l, 7, "\t" + l[6].split("\t", 1)[1]), "BPR", [],
     "line 7, column 1 (user_id): empty, and every row needs a user_id"),
    ("no timestamp under time order", lambda l: "\n".join("\t".join(x.split("\t")[:3]) for x in l) + "\n", "BPR",
     [], "field 'timestamp' is not in its header, but the time-ordered protocol (eval_args order: TO) sorts by it"),
    ("filtering empties the data", lambda l: "\n".join(l) + "\n", "BPR", ["--user_inter_num_interval=[100,inf)"],
     "no interaction is left after filtering (user_inter_num_interval=[100,inf)"),
    ("sequential, one interaction per user", lambda l: ONE_EACH, "MMSASRec",
     ["--modalities=[]", "--window_context=5"], "the training split is empty (39 users with at most 1 interaction"),
    ("general, one interaction per user", lambda l: ONE_EACH, "BPR", [],
     "the validation split is empty (39 users with at most 1 interaction each"),
    ("topk beyond the catalogue", lambda l: TWELVE_ITEMS, "BPR", ["--topk=[10,20]", "--valid_metric=NDCG@10"],
     "topk [10, 20]: [20] exceed the 12 items of dataset"),
]


def _flags_with(extra):
    keys = {flag.split("=")[0] for flag in extra}
    return [flag for flag in FLAGS if flag.split("=")[0] not in keys] + list(extra)


@pytest.mark.parametrize("case, make, model, extra, expected", INTER_CASES, ids=[c[0] for c in INTER_CASES])
def test_malformed_interaction_files_are_refused_with_the_place(case, make, model, extra, expected, ring_lines,
                                                               tmp_path, capsys):
    data_path = write_inter(tmp_path / "data", "bad", make(ring_lines))
    line = refused(capsys, [f"--model={model}", "--dataset=bad", f"--data_path={data_path}", *_flags_with(extra)],
                   expected)
    if "split is empty" in expected or "topk" in expected:
        assert "(log: log/" in line  # a refusal after logging started says where the log is


def test_non_utf8_bytes_name_the_line_and_latin1_is_readable_when_declared(ring_lines, tmp_path, capsys):
    raw = ("\n".join(ring_lines) + "\n").encode("utf-8")
    sixth = raw.index(ring_lines[5].encode())
    raw = raw[:sixth] + b"caf\xe9" + raw[sixth + len(ring_lines[5].split("\t")[0]):]  # user id 'café' in latin-1
    data_path = write_inter(tmp_path / "data", "latin", raw=raw)
    argv = ["--model=Pop", "--dataset=latin", f"--data_path={data_path}", *FLAGS]
    refused(capsys, argv, "line 6: byte b'\\xe9' is not valid utf-8; save the file as UTF-8 (or set --encoding")
    assert cli.main(argv + ["--encoding=latin-1"]) == 0


def test_a_byte_order_mark_is_accepted_and_changes_nothing(ring_lines, tmp_path, capsys):
    text = "\n".join(ring_lines) + "\n"
    plain = write_inter(tmp_path / "plain", "ring", text)
    bom = write_inter(tmp_path / "bom", "ring", raw=b"\xef\xbb\xbf" + text.encode("utf-8"))
    outputs = []
    for data_path in (plain, bom):
        assert cli.main(["--model=BPR", "--dataset=ring", f"--data_path={data_path}", *FLAGS, "--no_save"]) == 0
        outputs.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("ndcg@5")])
    assert outputs[0] == outputs[1] and outputs[0]


RANGE_CASES = [
    ("--learning_rate=-1", "config key 'learning_rate' in command-line flag --learning_rate must be > 0, got -1"),
    ("--epochs=0", "'epochs' in command-line flag --epochs must be >= 1, got 0"),
    ("--train_batch_size=0", "'train_batch_size' in command-line flag --train_batch_size must be >= 1, got 0"),
    ("--train_batch_size=-5", "must be >= 1, got -5"),
    ("--eval_batch_size=0", "'eval_batch_size' in command-line flag --eval_batch_size must be >= 1, got 0"),
    ("--embedding_size=0", "'embedding_size' in command-line flag --embedding_size must be >= 1, got 0"),
    ("--weight_decay=-0.1", "'weight_decay' in command-line flag --weight_decay must be >= 0, got -0.1"),
    ("--topk=[0,5]", "'topk' in command-line flag --topk must be >= 1, got 0"),
    ("--stopping_step=0", "'stopping_step' in command-line flag --stopping_step must be >= 1, got 0"),
]


@pytest.mark.parametrize("flag, expected", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_out_of_range_numbers_are_refused_before_anything_runs(flag, expected, ring_data_path, capsys):
    argv = ["--model=BPR", "--dataset=planted", f"--data_path={ring_data_path}", *_flags_with([flag])]
    line = refused(capsys, argv, expected)
    assert "(log:" not in line  # refused while reading the configuration: no log was started


def test_a_dropout_is_a_probability(ring_data_path, capsys):
    refused(capsys, ["--model=MMSASRec", "--dataset=planted", f"--data_path={ring_data_path}", "--modalities=[]",
                     "--window_context=5", *_flags_with(["--hidden_dropout_prob=1.5"])],
            "'hidden_dropout_prob' in command-line flag --hidden_dropout_prob must be < 1, got 1.5")


def test_other_models_keys_and_zero_seeds_are_refused(ring_data_path, tmp_path, capsys):
    base = ["--dataset=planted", f"--data_path={ring_data_path}"]
    refused(capsys, ["--model=BPR", *base, "--window_context=25"],
            "config key 'window_context' in command-line flag --window_context is a setting of")
    refused(capsys, ["--model=Pop,BPR", *base, "--seeds=0"], "--seeds must be >= 1")
    board = tmp_path / "board.yaml"
    board.write_text(f"dataset: planted\nsettings: {{data_path: {ring_data_path}}}\nmodels:\n"
                     "  - name: BPR\n    settings: {window_context: 25}\n")
    refused(capsys, [f"--leaderboard={board}"], "'window_context' in config_dict is a setting of")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_a_gpu_asked_for_without_cuda_runs_on_the_cpu_and_says_so(ring_data_path, capsys):
    argv = ["--model=Pop", "--dataset=planted", f"--data_path={ring_data_path}", *FLAGS, "--no_save"]
    assert cli.main(argv + ["--use_gpu=true", "--gpu_id=0"]) == 0
    err = capsys.readouterr().err
    assert "use_gpu (command-line flag --use_gpu), gpu_id (command-line flag --gpu_id) asks for a GPU, but torch " \
           "sees no CUDA device: running on the CPU" in err
    assert cli.main(argv) == 0
    assert "asks for a GPU" not in capsys.readouterr().err  # RecBole's default use_gpu: true is not a request


# ---- checkpoints ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, ring_data_path):
    folder = tmp_path_factory.mktemp("ckpt")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert cli.main(["--model=BPR", "--dataset=planted", f"--data_path={ring_data_path}", *FLAGS,
                         f"--checkpoint_dir={folder}/saved", "--state=ERROR"]) == 0
    finally:
        os.chdir(cwd)
    (path,) = [p for p in (folder / "saved").iterdir() if p.suffix == ".pth"]
    return str(path)


def _damaged(tmp_path, source, change):
    payload = torch.load(source, weights_only=True)
    change(payload)
    path = str(tmp_path / "damaged.pth")
    torch.save(payload, path)
    return path


def _resize_first_tensor(payload):
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = torch.zeros(3, 3)


CHECKPOINT_CASES = [
    ("bad metadata JSON", lambda p: p.update(meta_json="{not json"), "is damaged: meta_json is not valid JSON"),
    ("no config", lambda p: p.pop("config_json"), "is damaged: it has no 'config_json' entry"),
    ("metadata without model", lambda p: p.update(meta_json=json.dumps({"dataset": "planted"})),
     "is damaged: its metadata names no model"),
    ("no state_dict", lambda p: p.pop("state_dict"), "is damaged: it has no 'state_dict' mapping"),
    ("a tensor of another shape", _resize_first_tensor, "does not fit this BPR: size mismatch for"),
    ("a missing tensor", lambda p: p["state_dict"].pop(next(iter(p["state_dict"]))),
     "does not fit this BPR: missing ["),
]


@pytest.mark.parametrize("case, change, expected", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_damaged_checkpoints_are_refused(case, change, expected, trained_checkpoint, tmp_path, capsys):
    refused(capsys, [f"--checkpoint={_damaged(tmp_path, trained_checkpoint, change)}"], expected)


@pytest.mark.parametrize("case, content, expected", [
    ("0 bytes", lambda good: b"", "is empty (0 bytes)"),
    ("random bytes", lambda good: bytes(range(256)) * 16, "is truncated or corrupt (not a torch zip archive)"),
    ("first half of a checkpoint", lambda good: good[: len(good) // 2], "not a torch zip archive"),
], ids=["0 bytes", "random bytes", "truncated"])
def test_unreadable_checkpoint_files_are_refused(case, content, expected, trained_checkpoint, tmp_path, capsys):
    path = tmp_path / "broken.pth"
    with open(trained_checkpoint, "rb") as handle:
        path.write_bytes(content(handle.read()))
    refused(capsys, [f"--checkpoint={path}"], expected)


def test_evaluating_a_checkpoint_writes_no_tensorboard_files(trained_checkpoint, capsys):
    assert cli.main([f"--checkpoint={trained_checkpoint}"]) == 0
    assert not os.path.exists("log_tensorboard") or not any(files for _, _, files in os.walk("log_tensorboard"))


def test_checkpoint_names_are_unique_within_one_second(tmp_path):
    stamp = str(tmp_path / "BPR-Dec-02-2026_04-39-31.pth")
    first, second = checkpoint.unique_path(stamp), checkpoint.unique_path(stamp)
    assert first != second and first.endswith(f"-p{os.getpid()}.pth") and second.endswith(f"-p{os.getpid()}-2.pth")


# ---- feature tables and encoders --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted_mm(tmp_path_factory):
    return write_planted_mm(tmp_path_factory.mktemp("pmm"), n_users=60, n_rings=2, ring_size=12)


def _vbpr(data_path, text_table):
    return ["--model=VBPR", "--dataset=plantedmm", f"--data_path={data_path}", "--modalities=[text]",
            f"--mm_feature_files={{text: {text_table}}}", *FLAGS]


@pytest.mark.parametrize("case, content", [
    ("0 bytes", lambda good: b""), ("truncated", lambda good: good[: len(good) // 2]),
], ids=["0 bytes", "truncated"])
def test_a_named_feature_table_that_is_unreadable_is_refused(case, content, planted_mm, tmp_path, capsys):
    data_path, files, _ = planted_mm
    broken = tmp_path / "text.npz"
    with open(files["text"], "rb") as handle:
        broken.write_bytes(content(handle.read()))
    refused(capsys, _vbpr(data_path, broken), f"feature table {broken} is unreadable")


def test_a_named_feature_table_of_another_dataset_is_refused(planted_mm, tmp_path, capsys):
    data_path, files, _ = planted_mm
    table = FeatureTable.load(files["text"])
    other = tmp_path / "other.npz"
    FeatureTable(table.ids, table.matrix, table.mask, dict(table.provenance, dataset="other-data"),
                 source=str(other)).save(str(other))
    refused(capsys, _vbpr(data_path, other), "was built for dataset 'other-data', not 'plantedmm'")
    partial = tmp_path / "partial.npz"
    FeatureTable(table.ids[:10], table.matrix[:10], table.mask[:10], dict(table.provenance),
                 source=str(partial)).save(str(partial))
    refused(capsys, _vbpr(data_path, partial), "has no row for 14 of the dataset's")


def test_a_stored_table_cut_short_is_rebuilt(tmp_path, tiny_bert_dir, tiny_image_weights, capsys):
    from tests.feature_fixtures import toy_settings, write_toy_dataset

    paths = write_toy_dataset(str(tmp_path / "data"))
    flags = [f"--{k}={v}" for k, v in toy_settings(paths["data_path"], tiny_bert_dir, tiny_image_weights).items()]
    argv = ["extract", "--dataset=toy", "--modality=text", *flags, "--text_template={movie_title}"]
    assert features_cli(argv) == 0
    stored = os.path.join(paths["folder"], "features", "text.npz")
    good = open(stored, "rb").read()
    for damaged in (b"", good[: len(good) // 2]):
        with open(stored, "wb") as handle:
            handle.write(damaged)
        assert features_cli(["inspect", "--dataset=toy", "--items=1", *flags, "--text_template={movie_title}"]) == 0
        assert "text: unreadable" in capsys.readouterr().out
        assert features_cli(argv) == 0
        assert "text: built (unreadable" in capsys.readouterr().out
        assert FeatureTable.load(stored).dim == 32


@pytest.mark.parametrize("case", ["truncated safetensors", "pickled .bin"])
def test_a_broken_text_encoder_folder_is_refused(case, tmp_path, tiny_bert_dir, tiny_image_weights, capsys):
    from tests.feature_fixtures import toy_settings, write_toy_dataset

    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_bert_dir, encoder)
    weights = encoder / "model.safetensors"
    if case == "truncated safetensors":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
        import pickle

        (encoder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    paths = write_toy_dataset(str(tmp_path / "data"))
    settings = toy_settings(paths["data_path"], str(encoder), tiny_image_weights)
    flags = [f"--{k}={v}" for k, v in settings.items()]
    refused(capsys, ["extract", "--dataset=toy", "--modality=text", *flags],
            f"cannot load text encoder from {encoder} (text_encoder_path)", main=features_cli)


# ---- leaderboard run cache --------------------------------------------------------------------------------------
def test_a_truncated_run_cache_file_is_rerun_not_a_traceback(tmp_path, caplog):
    from mmrecbole import provenance, runs

    cache = runs.RunCache(str(tmp_path / "runs"))
    record = {"model": "Pop", "dataset": "d", "seed": 1, "config_hash": "abc", "code_version":
              provenance.code_version(), "test": {"ndcg@10": 0.5}}
    path = cache.put(record)
    assert cache.get("Pop", "d", 1, "abc")["test"] == {"ndcg@10": 0.5}
    with open(path, "r+", encoding="utf-8") as handle:
        text = handle.read()
        handle.seek(0)
        handle.write(text[: len(text) // 2])
        handle.truncate()
    assert cache.get("Pop", "d", 1, "abc") is None
    assert f"run cache {path} is unreadable" in caplog.text and "re-run" in caplog.text


def test_zero_lightgcn_layers_is_a_valid_setting_not_a_refusal(ring_data_path, capsys):
    # n_layers 0 is LightGCN's matrix-factorisation ablation: the range check must allow it (num_layers of a GRU not)
    refused(capsys, ["--model=MMGRU4Rec", "--dataset=planted", f"--data_path={ring_data_path}", "--modalities=[]",
                     "--window_context=5", *_flags_with(["--num_layers=0"])], "'num_layers' in command-line flag")
    assert cli.main(["--model=LightGCN", "--dataset=planted", f"--data_path={ring_data_path}", *FLAGS, "--n_layers=0",
                     "--no_save"]) == 0
