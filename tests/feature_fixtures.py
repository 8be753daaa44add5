"""Tiny inputs for the item-feature tests: a random BERT, random MobileNetV2 weights, a toy dataset with posters
(one corrupt), and a RecBole-like dataset stub for ``FeatureTable.align``."""
from __future__ import annotations

import os
import string

import numpy as np

TOY_NAME = "toy"
# item id -> (title, year, genre, description); item 4 has no text at all, item 5 only a title.
TOY_ITEMS = {
    "1": ("Star Wars", "1977", "Action Sci-Fi", "Rebels fight the empire."),
    "2": ("Empire Strikes Back, The", "1980", "Action Sci-Fi", "The empire strikes back."),
    "3": ("Toy Story", "1995", "Animation Comedy", "Toys come alive."),
    "4": ("", "", "", ""),
    "5": ("Heat", "", "", ""),
}
# item id -> poster: a solid colour; item 3 has a corrupt file, item 4 none.
TOY_POSTERS = {"1": (200, 30, 30), "2": (190, 40, 40), "5": (20, 20, 220)}


def make_tiny_bert(directory: str, seed: int = 0) -> str:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["star", "wars", "the", "empire", "strikes", "back", "toy", "story", "heat", "action", "comedy"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits)
    vocab += list(string.punctuation) + ["##" + c for c in string.ascii_lowercase + string.digits] + words
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(directory)
    return directory


def make_mobilenet_weights(path: str, seed: int = 0) -> str:
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    return path


def write_toy_dataset(root: str, name: str = TOY_NAME, items=None, posters=None, corrupt=("3",)) -> dict:
    """``<root>/<name>/<name>.inter|.item`` + ``<root>/<name>/images/<id>.jpg``; returns paths and ids."""
    from PIL import Image

    from mmrecbole.data import write_atomic_file

    items = TOY_ITEMS if items is None else items
    posters = TOY_POSTERS if posters is None else posters
    folder = os.path.join(root, name)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    header = [("item_id", "token"), ("movie_title", "token_seq"), ("release_year", "token"),
              ("genre", "token_seq"), ("description", "token")]
    write_atomic_file(os.path.join(folder, f"{name}.item"), header, [[i, *v] for i, v in items.items()])
    inter = [[str(u), i, "4", str(1000 * u + k)] for u in range(1, 4) for k, i in enumerate(items)]
    write_atomic_file(os.path.join(folder, f"{name}.inter"),
                      [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")], inter)
    for item_id, colour in posters.items():
        Image.new("RGB", (40, 60), colour).save(os.path.join(images, f"{item_id}.jpg"))
    for item_id in corrupt:
        with open(os.path.join(images, f"{item_id}.jpg"), "wb") as handle:
            handle.write(b"\xff\xd8 this is not a jpeg " * 10)
    return {"data_path": root, "name": name, "folder": folder, "image_dir": images}


def toy_settings(data_path: str, bert_dir: str, weights: str, **overrides) -> dict:
    settings = {
        "data_path": data_path,
        "text_encoder_path": bert_dir,
        "text_template": "{movie_title}[ ({release_year})][. {genre}][. {description}]",
        "image_weights": weights,
        "image_dir": "images",
        "image_resize": 72,
        "image_crop": 64,
        "image_num_workers": 0,
        "feature_batch_size": 2,
        "feature_device": "cpu",
    }
    settings.update(overrides)
    return settings


class StubDataset:
    """The three attributes of a RecBole Dataset that ``FeatureTable.align`` reads."""

    def __init__(self, tokens):
        self.iid_field = "item_id"
        self.field2id_token = {"item_id": np.array(["[PAD]", *tokens])}
        self.item_num = len(tokens) + 1


