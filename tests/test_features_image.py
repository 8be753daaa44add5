"""Image side: corrupt files are masked and reported once, bad folders/weights/models are FeatureErrors."""
import os

import numpy as np
import pytest

from mmrecbole.errors import FeatureError
from mmrecbole.features.image import FeatureWarning, ImageEncoder, index_images
from tests.feature_fixtures import write_toy_dataset


def _encoder(weights, **kwargs):
    kwargs = dict(dict(resize=72, crop=64, batch_size=2, num_workers=0, device="cpu"), **kwargs)
    return ImageEncoder("mobilenet_v2", weights, **kwargs)


def test_index_images_by_item_id(tmp_path):
    for name in ("1.jpg", "1.png", "2.PNG", "3.txt", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    assert index_images(str(tmp_path)) == {"1": str(tmp_path / "1.jpg"), "2": str(tmp_path / "2.PNG")}


def test_corrupt_jpeg_is_masked_and_reported_once(tmp_path, tiny_image_weights):
    toy = write_toy_dataset(str(tmp_path))
    images = index_images(toy["image_dir"])
    ids = sorted(images)  # 1, 2, 3 (corrupt), 5
    encoder = _encoder(tiny_image_weights)
    assert encoder.dim == 1280
    with pytest.warns(FeatureWarning, match=r"1 unreadable image.*\['3'\]") as caught:
        vectors, ok = encoder.encode([images[i] for i in ids], labels=ids)
    assert len(caught) == 1
    assert ok.tolist() == [True, True, False, True]
    assert not vectors[2].any() and vectors[[0, 1, 3]].any(axis=1).all()
    assert np.isfinite(vectors).all()


def test_worker_processes_give_the_same_vectors(tmp_path, tiny_image_weights):
    toy = write_toy_dataset(str(tmp_path), corrupt=())
    paths = [os.path.join(toy["image_dir"], f"{i}.jpg") for i in ("1", "2", "5")]
    in_process, _ = _encoder(tiny_image_weights).encode(paths)
    with_workers, ok = _encoder(tiny_image_weights, num_workers=1).encode(paths)
    assert ok.all()
    np.testing.assert_allclose(in_process, with_workers, atol=1e-5)


def test_missing_image_folder(tmp_path):
    with pytest.raises(FeatureError, match=f"image folder not found: {tmp_path / 'posters'}.*image_dir"):
        index_images(str(tmp_path / "posters"))


def test_missing_or_unfitting_weights(tmp_path):
    with pytest.raises(FeatureError, match=f"not found: {tmp_path / 'w.pth'}.*image_weights"):
        _encoder(str(tmp_path / "w.pth"))
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    toy = write_toy_dataset(str(tmp_path), corrupt=())
    with pytest.raises(FeatureError, match="do not fit image_model='mobilenet_v2'"):
        _encoder(str(tmp_path / "other.pth")).encode([os.path.join(toy["image_dir"], "1.jpg")])
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(FeatureError, match="cannot read image weights"):
        _encoder(str(tmp_path / "junk.pth")).encode([os.path.join(toy["image_dir"], "1.jpg")])


def test_unknown_model_and_no_packaged_weights(tiny_image_weights):
    with pytest.raises(FeatureError, match="not a torchvision model"):
        ImageEncoder("mobilenet_v9", tiny_image_weights).dim
    with pytest.raises(FeatureError, match="image_weights is not set"):
        ImageEncoder("resnet18", None)


def test_uint8_workers_plus_batch_normalisation_equal_torchvision_preprocessing(tmp_path):
    import torch
    from PIL import Image
    from torchvision import transforms

    from mmrecbole.features.image import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, normalize_batch

    rng = np.random.default_rng(0)
    path = str(tmp_path / "1.jpg")
    Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(path)
    reference = transforms.Compose([transforms.Resize(72), transforms.CenterCrop(64), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    with Image.open(path) as image:
        expected = reference(image.convert("RGB"))
    _, raw, ok = ImageFolderDataset([path], 72, 64)[0]
    assert ok and raw.dtype == torch.uint8
    batch = normalize_batch(raw.unsqueeze(0))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch[0], expected, rtol=0, atol=1e-6)


def test_working_out_the_width_leaves_torchs_random_state_alone(tiny_image_weights):
    # The width comes from a randomly initialised backbone; on the global RNG it would shift the initial weights of
    # a model built after a feature table was planned (ml-100k-mm: MMSASRec's seed-2020 run moved by 0.001 NDCG@10).
    import torch

    import mmrecbole.features.image as image

    image._DIM_CACHE.clear()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert ImageEncoder("mobilenet_v2", tiny_image_weights).dim == 1280
    assert torch.equal(torch.get_rng_state(), state)
