"""Text encoder: any local BERT-family Hugging Face model folder -> one vector per text.

Defaults reproduce sentence-transformers for all-MiniLM-L6-v2 (attention-masked mean pooling, L2 norm, the model's
``max_seq_length`` from ``sentence_bert_config.json``) so vectors match ``SentenceTransformer.encode`` to ~1e-6.
Speed comes from tokenizing every text once, sorting by token count and padding each batch only to its longest
member; CUDA runs in fp16 (pooling and the norm in fp32).
"""
import json
import logging
import os
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

# Local files only: never let transformers/huggingface_hub reach for the network (read when they are imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mmrecbole.data.fileio import sha256_file, sha256_text  # noqa: E402
from mmrecbole.errors import FeatureError  # noqa: E402
from mmrecbole.features.packaged import packaged_encoder_path  # noqa: E402
from mmrecbole.progress import report as report_progress  # noqa: E402

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# tokenizer_config.json writes "no limit" as a huge sentinel (1e30); ignore such values.
_NO_LIMIT = 1_000_000


def resolve_device(device: Optional[str]) -> str:
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise FeatureError(f"feature_device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FeatureError("feature_device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def _combined_sha256(paths: Sequence[str]) -> Optional[str]:
    if not paths:
        return None
    if len(paths) == 1:
        return sha256_file(paths[0])
    return sha256_text(json.dumps({os.path.basename(p): sha256_file(p) for p in paths}, sort_keys=True))


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> List[np.ndarray]:
    """Row indices per batch, longest texts first, each batch padded only to its own longest text.

    A batch holds at most ``batch_size`` texts and at most ``batch_size x median length`` token positions: item
    texts have a long tail (a few cast lists of 200+ tokens among 50-token texts), and without the token cap the
    first batch pads ~60 short texts to the longest one. Longest first: an out-of-memory shows up in batch one.
    """
    order = np.argsort(-lengths, kind="stable")
    budget = batch_size * max(1, int(np.median(lengths))) if len(lengths) else 0
    batches, start = [], 0
    while start < len(order):
        size = max(1, min(batch_size, budget // max(1, int(lengths[order[start]]))))
        batches.append(order[start : start + size])
        start += size
    return batches


class TextEncoder:
    """Encodes texts with the model in ``model_dir`` (loaded on first ``encode``; construction is cheap); None = the
    packaged all-MiniLM-L6-v2 (mmrecbole.features.packaged).

    ``pooling``: 'mean' (attention-masked) or 'cls'. ``max_length``: None = the model's own limit.
    """

    def __init__(
        self,
        model_dir: Optional[str] = None,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: Optional[int] = None,
        batch_size: int = 64,
        device: Optional[str] = "auto",
        show_progress: Optional[bool] = None,
    ):
        self.model_dir = os.path.abspath(os.path.expanduser(model_dir or packaged_encoder_path()))
        config_path = os.path.join(self.model_dir, "config.json")
        if not os.path.isdir(self.model_dir):
            raise FeatureError(
                f"text encoder folder not found: {self.model_dir} (property text_encoder_path); "
                "point it at a local Hugging Face model folder (config.json + weights + tokenizer files)"
            )
        if not os.path.isfile(config_path):
            raise FeatureError(
                f"text encoder folder {self.model_dir} has no config.json (property text_encoder_path); "
                "it must be a Hugging Face model folder saved with save_pretrained"
            )
        if pooling not in POOLINGS:
            raise FeatureError(f"text_pooling must be one of {POOLINGS}, got {pooling!r}")
        if int(batch_size) < 1:
            raise FeatureError(f"feature_batch_size must be >= 1, got {batch_size!r}")
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.device_setting = device
        self.show_progress = show_progress
        self._config = _read_json(config_path)
        self.max_length = int(max_length) if max_length else self._model_max_length()
        self._model = None
        self._tokenizer = None

    # ----- cheap facts (no model load) --------------------------------------------------------------------------
    def _model_max_length(self) -> int:
        """sentence-transformers' rule: max_seq_length from sentence_bert_config.json, else the smaller of the
        tokenizer's and the position embeddings' limits."""
        st_config = _read_json(os.path.join(self.model_dir, "sentence_bert_config.json"))
        if st_config.get("max_seq_length"):
            return int(st_config["max_seq_length"])
        limits = [self._config.get("max_position_embeddings")]
        limits.append(_read_json(os.path.join(self.model_dir, "tokenizer_config.json")).get("model_max_length"))
        limits = [int(v) for v in limits if isinstance(v, (int, float)) and 0 < v < _NO_LIMIT]
        return min(limits) if limits else 512

    @property
    def dim(self) -> int:
        hidden = self._config.get("hidden_size") or self._config.get("dim") or self._config.get("d_model")
        if not hidden:
            raise FeatureError(f"{self.model_dir}/config.json has no hidden_size; is this a BERT-family encoder?")
        return int(hidden)

    def identity(self) -> Dict[str, Any]:
        """What identifies this encoder's output: content hashes (not paths, so a moved copy still matches)."""
        names = sorted(os.listdir(self.model_dir))
        weights = [os.path.join(self.model_dir, n) for n in names if n.endswith(_WEIGHT_SUFFIXES)]
        if not weights:
            raise FeatureError(
                f"text encoder folder {self.model_dir} has no weights file (*.safetensors or *.bin); "
                "property text_encoder_path"
            )
        tokenizer = [os.path.join(self.model_dir, n) for n in _TOKENIZER_FILES if n in names]
        return {
            "kind": "transformers",
            "weights_sha256": _combined_sha256(weights),
            "config_sha256": sha256_file(os.path.join(self.model_dir, "config.json")),
            "tokenizer_sha256": _combined_sha256(tokenizer),
        }

    def recipe(self) -> Dict[str, Any]:
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}

    def describe(self) -> Dict[str, Any]:
        """Descriptive, not identifying: where the model was and what it calls itself."""
        return {"encoder_path": self.model_dir, "encoder_name": self._config.get("_name_or_path", "")}

    # ----- encoding ---------------------------------------------------------------------------------------------
    def _load(self):
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = resolve_device(self.device_setting)
        try:
            with _quiet_transformers():
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, SafetensorError (truncated weights),
            # UnpicklingError (a pickled .bin refused by weights-only loading)...: all mean "this folder does not load"
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise FeatureError(f"cannot load text encoder from {self.model_dir} (text_encoder_path): "
                               f"{type(exc).__name__}: {detail}; re-copy the folder, or point text_encoder_path "
                               "at a complete Hugging Face model folder") from exc
        model.eval().to(self.device)
        if self.device.startswith("cuda"):
            model.half()
        self._model = model
        self._torch = torch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim]; rows in the order of ``texts``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self._load()
        torch = self._torch
        from tqdm.auto import tqdm

        # Whitespace-stripped, as sentence-transformers does, so the same string gives the same tokens.
        token_ids = self._tokenizer(
            [str(t).strip() for t in texts],
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        pad_id = self._tokenizer.pad_token_id or 0
        batches = length_sorted_batches(lengths, self.batch_size)
        with torch.inference_mode():
            for done, rows in enumerate(tqdm(batches, desc="text features", unit="batch",
                                             disable=self._progress_disabled())):
                report_progress("step", what="text features (batches)", done=done, total=len(batches))
                width = int(lengths[rows].max())
                input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
                attention = np.zeros((len(rows), width), dtype=np.int64)
                for r, row in enumerate(rows):
                    input_ids[r, : lengths[row]] = token_ids[row]
                    attention[r, : lengths[row]] = 1
                input_ids_t = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
                attention_t = torch.from_numpy(attention).to(self.device, non_blocking=True)
                hidden = self._model(input_ids=input_ids_t, attention_mask=attention_t).last_hidden_state.float()
                vectors = self._pool(hidden, attention_t)
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[rows] = vectors.cpu().numpy()
        return out

    def _pool(self, hidden, attention):
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def _progress_disabled(self) -> Optional[bool]:
        # None lets tqdm decide: a bar on a terminal, nothing in logs and pipes.
        return None if self.show_progress is None else not self.show_progress


@contextmanager
def _quiet_transformers():
    """transformers' own "Loading weights" bar and load report are noise on a user's terminal (our bar over the
    items shows the real work); restored afterwards, so a caller's own transformers settings are left as they were."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
